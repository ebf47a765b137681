//! Charts drawn on the server as SVG: a time-series line chart with nice ticks in the
//! numbers' unit, threshold lines, annotation markers whose labels never overlap and a
//! legend; a sparkline; a bar chart; a scatter of durations over time. Inputs may hold NaN
//! or ±∞: such points are gaps, never broken markup.

use std::fmt::Write;

/// One series of (time in ms, value) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(i64, f64)],
    /// A CSS class for the colour: [`palette`]`(i)` for the i-th series.
    pub class: &'a str,
}

/// Colour classes `s0`..`s9`: ten hues far enough apart to tell ten series apart (Tableau 10),
/// then they repeat.
pub fn palette(index: usize) -> &'static str {
    const CLASSES: [&str; 10] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"];
    CLASSES[index % CLASSES.len()]
}

/// A vertical marker at a time (a deploy, a config reload, an alert).
#[derive(Clone, Debug)]
pub struct Marker {
    pub at_ms: i64,
    pub label: String,
}

/// A shaded time range (a correction, a maintenance window), named in its tooltip.
pub struct Band {
    pub from_ms: i64,
    pub to_ms: i64,
    pub label: String,
}

/// A horizontal reference line (a threshold, an objective); `class` colours it.
pub struct Rule<'a> {
    pub label: &'a str,
    pub value: f64,
    pub class: &'a str,
}

/// What a chart's numbers are, for its ticks (and the page's read-outs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Plain,
    /// A fraction shown as a percentage (0.999 → 99.9%).
    Percent,
    /// A multiple (a burn rate: 14.4×).
    Times,
    /// Milliseconds, shown as ms or s.
    Millis,
}

impl Unit {
    /// The factor and suffix values are shown with, given the largest magnitude shown.
    fn display(self, magnitude: f64) -> (f64, &'static str) {
        match self {
            Unit::Plain => (1.0, ""),
            Unit::Percent => (100.0, "%"),
            Unit::Times => (1.0, "×"),
            Unit::Millis if magnitude >= 2_000.0 => (0.001, " s"),
            Unit::Millis => (1.0, " ms"),
        }
    }

    /// The unit's name for the page's script.
    fn name(self) -> &'static str {
        match self {
            Unit::Plain => "plain",
            Unit::Percent => "percent",
            Unit::Times => "times",
            Unit::Millis => "ms",
        }
    }

    /// One value in this unit, with a precision that suits it.
    pub fn format(self, value: f64) -> String {
        if !value.is_finite() {
            return "–".into();
        }
        let (factor, suffix) = self.display(value.abs());
        let shown = value * factor;
        let text = match self {
            Unit::Percent => {
                let magnitude = shown.abs();
                let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
                    if (shown - shown.round()).abs() < 1e-9 { 0 } else { 3 }
                } else if magnitude >= 10.0 {
                    2
                } else {
                    3
                };
                trim_zeros(format!("{shown:.decimals$}"))
            }
            _ => short_number(shown),
        };
        format!("{text}{suffix}")
    }

    /// Tick labels: as many decimals as the step between ticks needs, all alike.
    pub fn format_ticks(self, ticks: &[f64]) -> Vec<String> {
        let magnitude = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let (factor, suffix) = self.display(magnitude);
        let step = match ticks {
            [a, b, ..] => (b - a).abs() * factor,
            _ => return ticks.iter().map(|v| self.format(*v)).collect(),
        };
        if magnitude * factor >= 1e6 || step <= 0.0 || !step.is_finite() {
            return ticks.iter().map(|v| self.format(*v)).collect();
        }
        let mut decimals = (-step.log10().floor()).max(0.0) as usize;
        if ((step / 10f64.powi(-(decimals as i32))) - (step / 10f64.powi(-(decimals as i32))).round()).abs() > 1e-6 {
            decimals += 1; // a step of 2.5 × 10ⁿ
        }
        ticks.iter().map(|v| format!("{:.*}{suffix}", decimals.min(9), v * factor)).collect()
    }
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Lines of marker labels at the top of a chart; a label that fits in none is left to the
/// list beside the chart (its marker line and hover title stay).
const MARKER_LANES: usize = 3;
const MARKER_LANE_HEIGHT: f64 = 15.0;
/// Width of one character of an 11px label, generously (labels are short ASCII).
const LABEL_CHAR_WIDTH: f64 = 6.6;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn trim_zeros(text: String) -> String {
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// A short number for an axis label or a table cell.
pub fn short_number(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let magnitude = value.abs();
    if magnitude >= 1e6 || (magnitude > 0.0 && magnitude < 1e-3) {
        format!("{value:.2e}")
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else {
        trim_zeros(format!("{value:.3}"))
    }
}

/// Value ticks between `lo` and `hi`: about `target` steps of 1, 2, 2.5 or 5 × 10ⁿ in the
/// shown unit (so 99.9 %, 99.95 %, 100 %, never 99.962 %), and the range widened to them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize, unit: Unit) -> Vec<f64> {
    let (factor, _) = unit.display(lo.abs().max(hi.abs()));
    let (shown_lo, shown_hi) = (lo * factor, hi * factor);
    let raw = (shown_hi - shown_lo) / target.max(1) as f64;
    if !raw.is_finite() || raw <= 0.0 {
        return vec![lo];
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    let first = (shown_lo / step + 1e-9).floor();
    let last = (shown_hi / step - 1e-9).ceil();
    let count = ((last - first) as usize).min(20);
    (0..=count).map(|k| (first + k as f64) * step / factor).collect()
}

/// The interval between time ticks over a span: the first of the usual clock steps that
/// gives at most six ticks.
fn time_step(span_ms: i64) -> i64 {
    const STEPS: [i64; 17] = [
        1_000,
        5_000,
        15_000,
        30_000,
        60_000,
        300_000,
        900_000,
        1_800_000,
        3_600_000,
        10_800_000,
        21_600_000,
        43_200_000,
        86_400_000,
        172_800_000,
        604_800_000,
        1_209_600_000,
        2_592_000_000,
    ];
    STEPS.into_iter().find(|s| span_ms / s <= 6).unwrap_or(2_592_000_000)
}

fn time_label(ms: i64, step_ms: i64, span_ms: i64) -> String {
    let Some(time) = chrono::DateTime::from_timestamp_millis(ms) else { return String::new() };
    let format = if step_ms >= 86_400_000 {
        "%m-%d"
    } else if span_ms > 86_400_000 {
        "%m-%d %H:%M"
    } else if step_ms < 60_000 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    time.format(format).to_string()
}

/// The path of a series, and dots for points standing alone (so one point still shows).
fn trace(points: &[(i64, f64)], x: impl Fn(i64) -> f64, y: impl Fn(f64) -> f64) -> (String, String) {
    let (mut path, mut dots) = (String::new(), String::new());
    let mut run: Vec<(f64, f64)> = Vec::new();
    let flush = |run: &mut Vec<(f64, f64)>, path: &mut String, dots: &mut String| {
        match run.len() {
            0 => {}
            1 => {
                let _ = write!(dots, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5"/>"#, run[0].0, run[0].1);
            }
            _ => {
                for (i, (px, py)) in run.iter().enumerate() {
                    let _ = write!(path, "{}{px:.1} {py:.1}", if i == 0 { "M" } else { "L" });
                }
            }
        }
        run.clear();
    };
    for (t, v) in points {
        if v.is_finite() {
            run.push((x(*t), y(*v)));
        } else {
            flush(&mut run, &mut path, &mut dots);
        }
    }
    flush(&mut run, &mut path, &mut dots);
    (path, dots)
}

/// The axes of a chart `height` high: value ticks with grid lines (in `unit`, placed by `y`)
/// and time ticks over `[t0, t1]` (placed by `x`).
fn axes(
    out: &mut String,
    height: f64,
    (ticks, unit, y): (&[f64], Unit, &dyn Fn(f64) -> f64),
    (t0, t1, x): (i64, i64, &dyn Fn(i64) -> f64),
) {
    let _ = write!(out, r#"<path class="axis" d="M{LEFT} {TOP}V{}H{}"/>"#, height - BOTTOM, WIDTH - RIGHT);
    for (value, text) in ticks.iter().zip(unit.format_ticks(ticks)) {
        let _ = write!(
            out,
            r#"<path class="grid" d="M{LEFT} {:.1}H{}"/><text class="tick y" x="{}" y="{:.1}" text-anchor="end">{text}</text>"#,
            y(*value),
            WIDTH - RIGHT,
            LEFT - 4.0,
            y(*value) + 4.0,
        );
    }
    let step = time_step(t1 - t0);
    let mut t = (t0 + step - 1).div_euclid(step) * step;
    while t <= t1 {
        let _ = write!(
            out,
            r#"<path class="axis" d="M{:.1} {}v4"/><text class="tick x" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            height - BOTTOM,
            x(t),
            height - 8.0,
            time_label(t, step, t1 - t0)
        );
        t += step;
    }
}

/// A time-series chart. `span` is the time range shown (the data's own when None).
pub struct LineChart<'a> {
    pub title: &'a str,
    pub span: Option<(i64, i64)>,
    pub unit: Unit,
    pub series: &'a [Series<'a>],
    pub rules: &'a [Rule<'a>],
    pub markers: &'a [Marker],
    pub bands: &'a [Band],
}

/// Where a marker's label went: its lane, or none (too crowded; the list names it).
fn marker_lanes(markers: &[(f64, usize)]) -> Vec<Option<(usize, f64, &'static str)>> {
    // Each lane holds label extents left to right; markers are placed in time order.
    let mut lanes: Vec<f64> = vec![f64::NEG_INFINITY; MARKER_LANES];
    let mut order: Vec<usize> = (0..markers.len()).collect();
    order.sort_by(|a, b| markers[*a].0.total_cmp(&markers[*b].0));
    let mut placed = vec![None; markers.len()];
    for index in order {
        let (mx, chars) = markers[index];
        let width = chars as f64 * LABEL_CHAR_WIDTH + 4.0;
        // Right of the line when it fits inside the chart, else left of it.
        let (start, anchor, tx) = if mx + 3.0 + width <= WIDTH - RIGHT {
            (mx + 3.0, "start", mx + 3.0)
        } else {
            (mx - 3.0 - width, "end", mx - 3.0)
        };
        let end = start + width;
        if let Some(lane) = lanes.iter().position(|&right| right <= start) {
            lanes[lane] = end;
            placed[index] = Some((lane, tx, anchor));
        }
    }
    placed
}

impl LineChart<'_> {
    /// The chart's SVG followed by its legend; an empty-state box when nothing is finite.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let finite = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|(t, v)| v.is_finite() && self.span.is_none_or(|(from, to)| (from..=to).contains(t)))
        };
        let (t0, t1) = match self.span {
            Some((from, to)) if to > from => (from, to),
            _ => {
                let (lo, hi) = finite().fold((i64::MAX, i64::MIN), |(lo, hi), (t, _)| (lo.min(*t), hi.max(*t)));
                (lo, if hi > lo { hi } else { lo.saturating_add(1) })
            }
        };
        let (mut lo, mut hi) =
            finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| (lo.min(*v), hi.max(*v)));
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" data-t0="{t0}" data-t1="{t1}" data-left="{LEFT}" data-right="{}" data-unit="{}">"#,
            escape(self.title),
            WIDTH - RIGHT,
            self.unit.name()
        );
        if lo > hi {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" class="empty" text-anchor="middle">no data in this range</text></svg>"#,
                WIDTH / 2.0,
                HEIGHT / 2.0
            );
            return out;
        }
        for rule in self.rules.iter().filter(|r| r.value.is_finite()) {
            lo = lo.min(rule.value);
            hi = hi.max(rule.value);
        }
        if hi - lo < 1e-12 * hi.abs().max(1.0) {
            let pad = if hi != 0.0 { hi.abs() * 0.01 } else { 1.0 };
            lo -= pad;
            hi += pad;
        }
        let ticks = nice_ticks(lo, hi, 4, self.unit);
        let (lo, hi) = (ticks.first().copied().unwrap_or(lo), ticks.last().copied().unwrap_or(hi));
        let top = TOP + MARKER_LANE_HEIGHT * if self.markers.is_empty() { 0.0 } else { 1.0 };
        let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
        let y = |v: f64| top + (hi - v) / (hi - lo) * (HEIGHT - top - BOTTOM);
        axes(&mut out, HEIGHT, (&ticks, self.unit, &y), (t0, t1, &x));
        for band in self.bands.iter().filter(|b| b.to_ms > t0 && b.from_ms < t1) {
            let (from, to) = (x(band.from_ms.max(t0)), x(band.to_ms.min(t1)));
            let _ = write!(
                out,
                r#"<rect class="band" x="{from:.1}" y="{top:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
                (to - from).max(1.0),
                HEIGHT - top - BOTTOM,
                escape(&band.label)
            );
        }
        for rule in self.rules.iter().filter(|r| r.value.is_finite()) {
            let _ = write!(
                out,
                // Labelled at the left: annotations of recent events crowd the right edge.
                r#"<path class="rule {}" d="M{LEFT} {:.1}H{}"/><text class="rule-label" x="{}" y="{:.1}">{} {}</text>"#,
                escape(rule.class),
                y(rule.value),
                WIDTH - RIGHT,
                LEFT + 4.0,
                y(rule.value) - 3.0,
                escape(rule.label),
                self.unit.format(rule.value)
            );
        }
        let shown: Vec<(usize, &Marker)> =
            self.markers.iter().enumerate().filter(|(_, m)| m.at_ms >= t0 && m.at_ms <= t1).collect();
        let geometry: Vec<(f64, usize)> =
            shown.iter().map(|(i, m)| (x(m.at_ms), format!("{} {}", i + 1, m.label).chars().count())).collect();
        let lanes = marker_lanes(&geometry);
        for (((index, marker), (mx, _)), lane) in shown.iter().zip(&geometry).zip(lanes) {
            let label = format!("{} {}", index + 1, marker.label);
            let _ = write!(
                out,
                r#"<g class="marker" data-marker="{}"><title>{} at {}</title><path d="M{mx:.1} {TOP}V{}"/>"#,
                index + 1,
                escape(&label),
                time_label(marker.at_ms, 1_000, 0),
                HEIGHT - BOTTOM
            );
            if let Some((lane, tx, anchor)) = lane {
                let _ = write!(
                    out,
                    r#"<text class="marker-label" x="{tx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                    TOP + 9.0 + MARKER_LANE_HEIGHT * lane as f64,
                    escape(&label)
                );
            }
            out.push_str("</g>");
        }
        for s in self.series {
            let points: Vec<(i64, f64)> = s.points.iter().copied().filter(|(t, _)| (t0..=t1).contains(t)).collect();
            let (path, dots) = trace(&points, x, y);
            // The exact values, for the script's hover read-out.
            let mut data = String::new();
            for (t, v) in points.iter().filter(|(_, v)| v.is_finite()) {
                let _ = write!(data, "{}{t}:{v}", if data.is_empty() { "" } else { " " });
            }
            let _ = write!(
                out,
                r#"<g class="line {}" data-points="{data}"><title>{}</title><path d="{path}"/>{dots}</g>"#,
                escape(s.class),
                escape(s.name)
            );
        }
        out.push_str("</svg>");
        out.push_str(&legend(self.series, self.rules));
        out
    }
}

/// The legend of a chart: one swatch per series (and per rule), in the series' colours.
pub fn legend(series: &[Series<'_>], rules: &[Rule<'_>]) -> String {
    let mut out = String::from(r#"<ul class="legend">"#);
    for s in series {
        let _ = write!(out, r#"<li><i class="swatch {}"></i>{}</li>"#, escape(s.class), escape(s.name));
    }
    for rule in rules.iter().filter(|r| r.value.is_finite()) {
        let _ = write!(out, r#"<li><i class="swatch rule {}"></i>{}</li>"#, escape(rule.class), escape(rule.label));
    }
    out.push_str("</ul>");
    out
}

/// A small line without axes, for a table cell. A single point is drawn as a level line
/// across the cell (the one value known), never as a lone dot.
pub fn sparkline(points: &[(i64, f64)]) -> String {
    let (w, h) = (120.0, 24.0);
    let finite: Vec<(i64, f64)> = points.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    let (Some(first), Some(last)) = (finite.first(), finite.last()) else {
        return format!(r#"<svg class="spark" viewBox="0 0 {w} {h}" aria-label="no data"></svg>"#);
    };
    let (t0, t1) = (first.0, last.0.max(first.0 + 1));
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| (lo.min(*v), hi.max(*v)));
    let (lo, hi) = if hi - lo < 1e-12 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let y = |v: f64| (hi - v) / (hi - lo) * (h - 4.0) + 2.0;
    let path = if finite.len() == 1 {
        format!("M2 {:.1}H{}", y(first.1), w - 2.0)
    } else {
        trace(points, |t| (t - t0) as f64 / (t1 - t0) as f64 * (w - 4.0) + 2.0, y).0
    };
    format!(r#"<svg class="spark" viewBox="0 0 {w} {h}" aria-label="trend"><path d="{path}"/></svg>"#)
}

/// Side-by-side bars per bin for two distributions (reference and current proportions),
/// with a legend saying which is which.
pub fn paired_bars(labels: &[String], reference: &[f64], current: &[f64]) -> String {
    let (w, h) = (WIDTH, 180.0);
    let n = labels.len().max(1) as f64;
    let top = reference.iter().chain(current).copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-9);
    let slot = (w - LEFT - RIGHT) / n;
    let mut out = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="reference and current distribution">"#
    );
    let _ = write!(out, r#"<path class="axis" d="M{LEFT} {TOP}V{}H{}"/>"#, h - BOTTOM, w - RIGHT);
    for (i, label) in labels.iter().enumerate() {
        let x0 = LEFT + slot * i as f64;
        for (j, (values, class)) in [(reference, "ref"), (current, "cur")].into_iter().enumerate() {
            let v = values.get(i).copied().filter(|v| v.is_finite()).unwrap_or(0.0);
            let bar = v / top * (h - TOP - BOTTOM);
            let _ = write!(
                out,
                r#"<rect class="col {class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
                x0 + slot * (0.1 + 0.4 * j as f64),
                h - BOTTOM - bar,
                slot * 0.4,
                bar,
                escape(label),
                Unit::Percent.format(v)
            );
        }
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + slot / 2.0,
            h - 8.0,
            escape(label)
        );
    }
    out.push_str("</svg>");
    out.push_str(r#"<ul class="legend"><li><i class="swatch fill ref"></i>reference</li><li><i class="swatch fill cur"></i>current window</li></ul>"#);
    out
}

/// One point of a scatter: a time, a value and where it links.
pub struct Dot<'a> {
    pub at_ms: i64,
    pub value: f64,
    pub error: bool,
    pub href: &'a str,
    pub title: &'a str,
}

/// Durations over time, one linked dot each (errors in red): Jaeger's first view of a search.
pub fn scatter(title: &str, span: (i64, i64), unit: Unit, dots: &[Dot<'_>]) -> String {
    let (t0, t1) = (span.0, span.1.max(span.0 + 1));
    let hi = dots.iter().map(|d| d.value).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let ticks = nice_ticks(0.0, if hi > 0.0 { hi } else { 1.0 }, 3, unit);
    let hi = ticks.last().copied().unwrap_or(1.0).max(1e-12);
    let h = 160.0;
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / hi * (h - TOP - BOTTOM);
    let mut out =
        format!(r#"<svg class="chart scatter" viewBox="0 0 {WIDTH} {h}" role="img" aria-label="{}">"#, escape(title));
    axes(&mut out, h, (&ticks, unit, &y), (t0, t1, &x));
    for dot in dots.iter().filter(|d| d.value.is_finite() && (t0..=t1).contains(&d.at_ms)) {
        let _ = write!(
            out,
            r#"<a href="{}"><circle class="dot{}" cx="{:.1}" cy="{:.1}" r="3.5"><title>{}</title></circle></a>"#,
            escape(dot.href),
            if dot.error { " error" } else { "" },
            x(dot.at_ms),
            y(dot.value),
            escape(dot.title)
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(span: Option<(i64, i64)>, series: &[Series<'_>], rules: &[Rule<'_>], markers: &[Marker]) -> String {
        LineChart { title: "t", span, unit: Unit::Plain, series, rules, markers, bands: &[] }.render()
    }

    #[test]
    fn nan_points_are_gaps_and_empty_series_say_so() {
        let points = [(0, 1.0), (1, f64::NAN), (2, 2.0), (3, f64::INFINITY)];
        let svg = chart(
            None,
            &[Series { name: "a<b", points: &points, class: "s0" }],
            &[Rule { label: "objective", value: 1.5, class: "" }],
            &[],
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "points standing alone are dots: {svg}");
        assert!(svg.contains("a&lt;b"), "names are escaped");
        let empty = chart(None, &[Series { name: "a", points: &[(0, f64::NAN)], class: "s0" }], &[], &[]);
        assert!(empty.contains("no data"), "{empty}");
        assert!(sparkline(&[]).contains("no data"));
    }

    #[test]
    fn flat_series_get_a_visible_range() {
        let svg = chart(Some((0, 100)), &[Series { name: "a", points: &[(0, 0.0), (10, 0.0)], class: "s0" }], &[], &[]);
        assert!(!svg.contains("NaN") && svg.contains("<path d=\"M"), "{svg}");
    }

    #[test]
    fn ticks_are_round_numbers_in_the_unit() {
        assert_eq!(nice_ticks(0.0, 1.962, 4, Unit::Plain), vec![0.0, 0.5, 1.0, 1.5, 2.0]);
        let percent = Unit::Percent.format_ticks(&nice_ticks(0.9991, 0.99995, 4, Unit::Percent));
        assert_eq!(percent, ["99.900%", "99.925%", "99.950%", "99.975%", "100.000%"]);
        assert_eq!(
            Unit::Plain.format_ticks(&nice_ticks(0.0, 1.962, 4, Unit::Plain)),
            ["0.0", "0.5", "1.0", "1.5", "2.0"]
        );
        assert_eq!(Unit::Times.format_ticks(&nice_ticks(0.0, 30.0, 4, Unit::Times)), ["0×", "10×", "20×", "30×"]);
        assert_eq!(Unit::Percent.format(-17.648), "-1764.8%");
        assert_eq!(Unit::Times.format(14.4), "14.4×");
        assert_eq!(Unit::Millis.format(1500.0), "1500 ms");
        assert_eq!(Unit::Millis.format(2500.0), "2.5 s");
    }

    #[test]
    fn marker_labels_never_share_a_lane_where_they_overlap() {
        // Five markers a minute apart on a day-long axis: their labels would sit on each other.
        let markers: Vec<Marker> =
            (0..5).map(|i| Marker { at_ms: 3_600_000 + i * 60_000, label: format!("deploy v{i}") }).collect();
        let points = [(0, 1.0), (86_400_000, 2.0)];
        let svg = chart(Some((0, 86_400_000)), &[Series { name: "a", points: &points, class: "s0" }], &[], &markers);
        let labels: Vec<(f64, f64)> = svg
            .split("<text class=\"marker-label\" x=\"")
            .skip(1)
            .filter_map(|rest| {
                let x: f64 = rest[..rest.find('"')?].parse().ok()?;
                let y_at = rest.find("y=\"")? + 3;
                let y: f64 = rest[y_at..y_at + rest[y_at..].find('"')?].parse().ok()?;
                Some((x, y))
            })
            .collect();
        assert_eq!(labels.len(), MARKER_LANES, "three lanes hold three labels; the rest are listed: {svg}");
        let ys: std::collections::BTreeSet<i64> = labels.iter().map(|(_, y)| *y as i64).collect();
        assert_eq!(ys.len(), MARKER_LANES, "each in its own lane: {labels:?}");
        assert_eq!(svg.matches("class=\"marker\"").count(), 5, "every marker keeps its line");
    }

    #[test]
    fn a_lone_point_is_a_level_line_in_a_sparkline() {
        let spark = sparkline(&[(5, 0.999)]);
        assert!(spark.contains("H118") && !spark.contains("<circle"), "{spark}");
    }
}
