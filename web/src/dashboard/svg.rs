//! Charts drawn on the server as SVG: a time-series line chart with axes and optional
//! threshold lines, a sparkline, and a bar chart. Inputs may hold NaN or ±∞: such points are
//! gaps, never broken markup.

use std::fmt::Write;

/// One series of (time in ms, value) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(i64, f64)],
    /// A CSS class for the stroke (`s0`..`s5`).
    pub class: &'a str,
}

/// A vertical marker at a time (a deploy, a config change).
pub struct Marker {
    pub at_ms: i64,
    pub label: String,
}

/// A horizontal reference line (a threshold, an objective).
pub struct Rule<'a> {
    pub label: &'a str,
    pub value: f64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Value bounds over every finite point and rule, padded; None when there is nothing finite.
fn bounds(series: &[Series<'_>], rules: &[Rule<'_>]) -> Option<(i64, i64, f64, f64)> {
    let finite = series.iter().flat_map(|s| s.points.iter()).filter(|(_, v)| v.is_finite());
    let (mut t0, mut t1, mut lo, mut hi) = (i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY);
    for (t, v) in finite {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    if t0 > t1 {
        return None;
    }
    for rule in rules.iter().filter(|r| r.value.is_finite()) {
        lo = lo.min(rule.value);
        hi = hi.max(rule.value);
    }
    if hi - lo < 1e-12 {
        let pad = if hi.abs() > 0.0 { hi.abs() * 0.1 } else { 1.0 };
        lo -= pad;
        hi += pad;
    }
    if t1 == t0 {
        t1 = t0 + 1;
    }
    Some((t0, t1, lo, hi))
}

/// A short number for an axis label.
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
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn time_label(ms: i64, span_ms: i64) -> String {
    let Some(time) = chrono::DateTime::from_timestamp_millis(ms) else { return String::new() };
    if span_ms > 2 * 86_400_000 { time.format("%m-%d %H:%M").to_string() } else { time.format("%H:%M").to_string() }
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

/// A line chart with time and value axes over `span` (ms; the data's own when None); an
/// empty-state box when nothing is finite.
pub fn line_chart(
    title: &str,
    span: Option<(i64, i64)>,
    series: &[Series<'_>],
    rules: &[Rule<'_>],
    markers: &[Marker],
) -> String {
    let mut out = String::new();
    let _ =
        write!(out, r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"#, escape(title));
    let Some((t0, t1, lo, hi)) = bounds(series, rules).map(|(t0, t1, lo, hi)| match span {
        Some((from, to)) if to > from => (from, to, lo, hi),
        _ => (t0, t1, lo, hi),
    }) else {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" class="empty" text-anchor="middle">no data in this range</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    };
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * (HEIGHT - TOP - BOTTOM);
    // Axes, four value ticks and four time ticks.
    let _ = write!(out, r#"<path class="axis" d="M{LEFT} {TOP}V{}H{}"/>"#, HEIGHT - BOTTOM, WIDTH - RIGHT);
    for i in 0..=3 {
        let value = lo + (hi - lo) * i as f64 / 3.0;
        let _ = write!(
            out,
            r#"<text class="tick" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            y(value) + 4.0,
            short_number(value)
        );
        let t = t0 + (t1 - t0) * i / 3;
        let anchor = match i {
            0 => "start",
            3 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            r#"<text class="tick" x="{:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
            x(t),
            HEIGHT - 8.0,
            time_label(t, t1 - t0)
        );
    }
    for rule in rules.iter().filter(|r| r.value.is_finite()) {
        let _ = write!(
            out,
            r#"<path class="rule" d="M{LEFT} {:.1}H{}"/><text class="rule-label" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            y(rule.value),
            WIDTH - RIGHT,
            WIDTH - RIGHT - 2.0,
            y(rule.value) - 3.0,
            escape(rule.label)
        );
    }
    for marker in markers.iter().filter(|m| m.at_ms >= t0 && m.at_ms <= t1) {
        let mx = x(marker.at_ms);
        // Labels in the right half read leftwards, so they stay inside the chart.
        let (tx, anchor) = if mx > WIDTH / 2.0 { (mx - 3.0, "end") } else { (mx + 3.0, "start") };
        let _ = write!(
            out,
            r#"<g class="marker"><path d="M{mx:.1} {TOP}V{}"/><text x="{tx:.1}" y="{}" class="tick" text-anchor="{anchor}">{}</text></g>"#,
            HEIGHT - BOTTOM,
            TOP + 22.0,
            escape(&marker.label)
        );
    }
    for s in series {
        let (path, dots) = trace(s.points, x, y);
        let _ = write!(
            out,
            r#"<g class="line {}"><title>{}</title><path d="{path}"/>{dots}</g>"#,
            escape(s.class),
            escape(s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// A small line without axes, for a table cell.
pub fn sparkline(points: &[(i64, f64)]) -> String {
    let (w, h) = (120.0, 24.0);
    let series = [Series { name: "", points, class: "" }];
    let Some((t0, t1, lo, hi)) = bounds(&series, &[]) else {
        return format!(r#"<svg class="spark" viewBox="0 0 {w} {h}" aria-label="no data"></svg>"#);
    };
    let (path, dots) = trace(
        points,
        |t| (t - t0) as f64 / (t1 - t0) as f64 * (w - 4.0) + 2.0,
        |v| (hi - v) / (hi - lo) * (h - 4.0) + 2.0,
    );
    format!(r#"<svg class="spark" viewBox="0 0 {w} {h}" aria-label="trend"><path d="{path}"/>{dots}</svg>"#)
}

/// Side-by-side bars per bin for two distributions (reference and current proportions).
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
                r#"<rect class="col {class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}: {:.4}</title></rect>"#,
                x0 + slot * (0.1 + 0.4 * j as f64),
                h - BOTTOM - bar,
                slot * 0.4,
                bar,
                escape(label),
                v
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_points_are_gaps_and_empty_series_say_so() {
        let points = [(0, 1.0), (1, f64::NAN), (2, 2.0), (3, f64::INFINITY)];
        let svg = line_chart(
            "t",
            None,
            &[Series { name: "a<b", points: &points, class: "s0" }],
            &[Rule { label: "objective", value: 1.5 }],
            &[],
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "points standing alone are dots: {svg}");
        assert!(svg.contains("a&lt;b"), "names are escaped");
        let empty = line_chart("t", None, &[Series { name: "a", points: &[(0, f64::NAN)], class: "s0" }], &[], &[]);
        assert!(empty.contains("no data"), "{empty}");
        assert!(sparkline(&[]).contains("no data"));
    }

    #[test]
    fn flat_series_get_a_visible_range() {
        let svg = line_chart(
            "t",
            Some((0, 100)),
            &[Series { name: "a", points: &[(0, 0.0), (10, 0.0)], class: "s0" }],
            &[],
            &[],
        );
        assert!(!svg.contains("NaN") && svg.contains("<path d=\"M"), "{svg}");
    }
}
