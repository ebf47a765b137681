//! The time range of a page: a preset (`?range=1h`), the SLO's window (`?range=window`) or
//! absolute times (`?from=…&to=…`), and the picker that links to the others while keeping
//! the page's other parameters.

use serde::Deserialize;

/// The presets every page offers, shortest first.
pub const PRESETS: [(&str, i64); 6] = [
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("6h", 21_600_000),
    ("24h", 86_400_000),
    ("7d", 604_800_000),
    ("30d", 2_592_000_000),
];

/// The range parameters of a page's URL.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RangeParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A resolved time range, in Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
    /// The preset chosen (`1h`, `window`), or `custom` for absolute times.
    pub key: String,
}

impl TimeRange {
    pub fn span_ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }

    /// A step giving about `points` points over the range, at least a second.
    pub fn step_ms(&self, points: i64) -> i64 {
        (self.span_ms() / points.max(1)).max(1_000)
    }
}

/// A time given in a URL: RFC 3339, a `datetime-local` value (`2026-12-03T08:30`, read as
/// UTC), or Unix seconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(time) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(time.and_utc().timestamp_millis());
        }
    }
    let seconds: f64 = text.parse().ok()?;
    (seconds.is_finite() && seconds.abs() < 1e13).then_some((seconds * 1000.0) as i64)
}

fn preset_ms(key: &str) -> Option<i64> {
    PRESETS.iter().find(|(k, _)| *k == key).map(|(_, ms)| *ms)
}

/// The smallest preset (or the window) that shows data starting at `first_ms`: a new SLO's
/// chart covers its ten minutes, not one dot at the edge of thirty days.
pub fn fitting(first_ms: Option<i64>, now_ms: i64, window_ms: i64) -> String {
    let Some(first) = first_ms else { return "window".into() };
    let age = now_ms - first;
    PRESETS
        .iter()
        .filter(|(_, ms)| *ms < window_ms)
        .find(|(_, ms)| *ms >= age)
        .map_or_else(|| "window".into(), |(key, _)| key.to_string())
}

/// The page's range: absolute `from`/`to` when given, else `range`, else `default`.
/// `window` is the SLO's window where the page has one. Errors say what was wrong.
pub fn resolve(params: &RangeParams, now_ms: i64, default: &str, window_ms: Option<i64>) -> Result<TimeRange, String> {
    fn given(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    if given(&params.from).is_some() || given(&params.to).is_some() {
        let from = match given(&params.from) {
            Some(text) => parse_time(text).ok_or_else(|| format!("from {text:?} is not a time"))?,
            None => now_ms - 3_600_000,
        };
        let to = match given(&params.to) {
            Some(text) => parse_time(text).ok_or_else(|| format!("to {text:?} is not a time"))?,
            None => now_ms,
        };
        if to <= from {
            return Err("the range ends before it starts".into());
        }
        if to - from > 400 * 86_400_000 {
            return Err("a range is at most 400 days".into());
        }
        return Ok(TimeRange { from_ms: from, to_ms: to, key: "custom".into() });
    }
    // `1d` was the pages' name for a day before the presets were shared.
    let key = match given(&params.range).unwrap_or(default) {
        "1d" => "24h",
        key => key,
    };
    let span = match (key, window_ms) {
        ("window", Some(window)) => window,
        _ => preset_ms(key).ok_or_else(|| format!("range {key:?} is not one of 15m, 1h, 6h, 24h, 7d, 30d"))?,
    };
    Ok(TimeRange { from_ms: now_ms - span, to_ms: now_ms, key: key.to_string() })
}

/// One choice of the picker.
pub struct RangeLink {
    pub label: String,
    pub href: String,
    pub active: bool,
}

/// The range picker of a page: preset links and an absolute from/to form, each keeping the
/// page's other parameters (`keep`).
pub struct RangePicker {
    pub path: String,
    pub links: Vec<RangeLink>,
    pub keep: Vec<(String, String)>,
    pub from: String,
    pub to: String,
    pub custom: bool,
}

fn local_input(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M").to_string())
}

impl RangePicker {
    /// `window` names the SLO's window (`30d`) where the page has one.
    pub fn new(path: &str, keep: &[(&str, &str)], range: &TimeRange, window: Option<&str>) -> RangePicker {
        let keep: Vec<(String, String)> =
            keep.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let href = |key: &str| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &keep {
                query.append_pair(k, v);
            }
            query.append_pair("range", key);
            format!("{path}?{}", query.finish())
        };
        let mut links: Vec<RangeLink> = PRESETS
            .iter()
            .map(|(key, _)| RangeLink { label: key.to_string(), href: href(key), active: range.key == *key })
            .collect();
        if let Some(window) = window {
            links.push(RangeLink {
                label: format!("window ({window})"),
                href: href("window"),
                active: range.key == "window",
            });
        }
        RangePicker {
            path: path.to_string(),
            links,
            keep,
            from: local_input(range.from_ms),
            to: local_input(range.to_ms),
            custom: range.key == "custom",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000;

    fn params(range: Option<&str>, from: Option<&str>, to: Option<&str>) -> RangeParams {
        RangeParams { range: range.map(Into::into), from: from.map(Into::into), to: to.map(Into::into) }
    }

    #[test]
    fn presets_windows_and_absolute_times_resolve() {
        let hour = resolve(&params(Some("1h"), None, None), NOW, "24h", None).unwrap();
        assert_eq!((hour.from_ms, hour.to_ms, hour.key.as_str()), (NOW - 3_600_000, NOW, "1h"));
        assert_eq!(resolve(&params(None, None, None), NOW, "24h", None).unwrap().span_ms(), 86_400_000);
        let window = resolve(&params(Some("window"), None, None), NOW, "1h", Some(28 * 86_400_000)).unwrap();
        assert_eq!(window.span_ms(), 28 * 86_400_000);
        let custom =
            resolve(&params(Some("1h"), Some("2026-12-01T10:00"), Some("2026-12-01T12:30:00Z")), NOW, "1h", None)
                .unwrap();
        assert_eq!(custom.key, "custom");
        assert_eq!(custom.span_ms(), 9_000_000);
        assert!(resolve(&params(Some("2y"), None, None), NOW, "1h", None).unwrap_err().contains("2y"));
        assert!(resolve(&params(Some("window"), None, None), NOW, "1h", None).is_err(), "no window on this page");
        assert!(resolve(&params(None, Some("2026-12-02T00:00"), Some("2026-12-01T00:00")), NOW, "1h", None).is_err());
        assert!(resolve(&params(None, Some("yesterday"), None), NOW, "1h", None).unwrap_err().contains("yesterday"));
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000));
    }

    #[test]
    fn the_default_range_fits_the_data() {
        let thirty_days = 30 * 86_400_000;
        assert_eq!(fitting(Some(NOW - 600_000), NOW, thirty_days), "15m");
        assert_eq!(fitting(Some(NOW - 5 * 3_600_000), NOW, thirty_days), "6h");
        assert_eq!(fitting(Some(NOW - 20 * 86_400_000), NOW, thirty_days), "window");
        assert_eq!(fitting(None, NOW, thirty_days), "window");
        assert_eq!(fitting(Some(NOW - 2 * 86_400_000), NOW, 86_400_000), "window", "never past the window");
    }

    #[test]
    fn picker_links_keep_the_other_parameters() {
        let range = resolve(&params(Some("6h"), None, None), NOW, "1h", None).unwrap();
        let picker =
            RangePicker::new("/explore", &[("lang", "promql"), ("q", "up{a=\"b\"}"), ("empty", "")], &range, None);
        let six = picker.links.iter().find(|l| l.active).unwrap();
        assert_eq!(six.label, "6h");
        assert_eq!(six.href, "/explore?lang=promql&q=up%7Ba%3D%22b%22%7D&range=6h");
        assert_eq!(picker.keep.len(), 2, "empty parameters are dropped");
        assert_eq!(picker.links.len(), PRESETS.len());
    }
}
