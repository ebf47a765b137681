// Vigil's one script, progressive enhancement only: hovering a chart reads out each series'
// value at the nearest point in time. Every page works without it.
(function () {
  "use strict";
  var units = {
    percent: function (v) { return (v * 100).toFixed(Math.abs(v * 100) >= 100 ? 2 : 3) + "%"; },
    times: function (v) { return +v.toPrecision(4) + "×"; },
    ms: function (v) { return Math.abs(v) >= 2000 ? +(v / 1000).toPrecision(4) + " s" : +v.toPrecision(4) + " ms"; },
    plain: function (v) { return String(+v.toPrecision(6)); }
  };
  function points(g) {
    return (g.getAttribute("data-points") || "").split(" ").filter(Boolean).map(function (p) {
      var pair = p.split(":");
      return [+pair[0], +pair[1]];
    });
  }
  document.querySelectorAll("svg.chart[data-t0]").forEach(function (svg) {
    var t0 = +svg.getAttribute("data-t0"), t1 = +svg.getAttribute("data-t1");
    var left = +svg.getAttribute("data-left"), right = +svg.getAttribute("data-right");
    var format = units[svg.getAttribute("data-unit")] || units.plain;
    var lines = Array.prototype.map.call(svg.querySelectorAll("g.line[data-points]"), function (g) {
      var title = g.querySelector("title");
      return { name: title ? title.textContent : "", points: points(g), colour: getComputedStyle(g).stroke };
    });
    if (!lines.length) return;
    var tip = document.createElement("div");
    tip.className = "readout";
    tip.hidden = true;
    svg.parentNode.insertBefore(tip, svg.nextSibling);
    var cursor = document.createElementNS("http://www.w3.org/2000/svg", "path");
    cursor.setAttribute("class", "cursor");
    svg.appendChild(cursor);
    svg.addEventListener("mousemove", function (event) {
      var box = svg.getBoundingClientRect(), view = svg.viewBox.baseVal;
      var x = (event.clientX - box.left) / box.width * view.width;
      if (x < left || x > right) { tip.hidden = true; cursor.removeAttribute("d"); return; }
      var t = t0 + (x - left) / (right - left) * (t1 - t0);
      var rows = [], at = null;
      lines.forEach(function (line) {
        var best = null;
        line.points.forEach(function (p) { if (best === null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p; });
        if (best === null) return;
        at = at === null ? best[0] : at;
        rows.push('<span style="color:' + line.colour + '">■</span> ' + line.name.replace(/[&<>]/g, function (c) {
          return { "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c];
        }) + ": <b>" + format(best[1]) + "</b>");
      });
      if (at === null) return;
      var cx = left + (at - t0) / (t1 - t0) * (right - left);
      cursor.setAttribute("d", "M" + cx.toFixed(1) + " 0V" + view.height);
      tip.innerHTML = new Date(at).toISOString().replace("T", " ").slice(0, 19) + " UTC<br>" + rows.join("<br>");
      tip.hidden = false;
    });
    svg.addEventListener("mouseleave", function () { tip.hidden = true; cursor.removeAttribute("d"); });
  });
})();
