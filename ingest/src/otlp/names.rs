//! OTLP names to Prometheus names, as Prometheus's OTLP translator does it (with suffixes,
//! without UTF-8 names): invalid characters split the name into tokens joined by `_`, the
//! unit becomes a suffix (`s` → `seconds`, `By/s` → `bytes_per_second`, `{requests}`
//! dropped), monotonic sums end in `_total`, gauges of unit `1` in `_ratio`.

use std::borrow::Cow;

/// What kind of Prometheus metric a point becomes; decides the suffixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Gauge,
    MonotonicCounter,
    /// A non-monotonic sum: no `_total`, and unlike a gauge no `_ratio`.
    NonMonotonicCounter,
    Histogram,
    Summary,
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

fn unit_name(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit_name(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// Invalid characters to `_`, runs of `_` collapsed, no leading `_`.
fn clean_unit(unit: &str) -> String {
    unit.split(|c: char| !is_metric_char(c)).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("_")
}

/// Main and per-unit suffixes of an OTLP (UCUM) unit.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) { String::new() } else { clean_unit(unit_name(main)) };
    let per = match parts.next().map(str::trim) {
        Some(per) if !per.is_empty() && !per.contains(['{', '}']) => {
            let per = clean_unit(per_unit_name(per));
            if per.is_empty() { String::new() } else { format!("per_{per}") }
        }
        _ => String::new(),
    };
    (main, per)
}

/// The Prometheus metric name of an OTLP metric.
pub fn metric_name(name: &str, unit: &str, kind: MetricKind) -> String {
    let mut tokens: Vec<String> =
        name.split(|c: char| !is_metric_char(c)).filter(|t| !t.is_empty()).map(str::to_string).collect();
    let (main, per) = unit_suffixes(unit);
    if !main.is_empty() && !tokens.contains(&main) {
        tokens.push(main);
    }
    if !per.is_empty() && !tokens.contains(&per) {
        tokens.push(per);
    }
    if kind == MetricKind::MonotonicCounter {
        tokens.retain(|t| t != "total");
        tokens.push("total".into());
    }
    if unit == "1" && kind == MetricKind::Gauge {
        tokens.retain(|t| t != "ratio");
        tokens.push("ratio".into());
    }
    let joined = tokens.join("_");
    if joined.starts_with(|c: char| c.is_ascii_digit()) { format!("_{joined}") } else { joined }
}

/// The Prometheus label name of an OTLP attribute key: invalid characters become `_`; a
/// leading digit gets `key_`, a single leading `_` gets `key` (`__` is kept).
pub fn label_name(key: &str) -> Cow<'_, str> {
    let valid = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && (!key.starts_with('_') || key.starts_with("__"));
    if valid {
        return Cow::Borrowed(key);
    }
    Cow::Owned(sanitized_label_name(key))
}

fn sanitized_label_name(key: &str) -> String {
    let sanitized: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if sanitized.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{sanitized}")
    } else if sanitized.starts_with('_') && !sanitized.starts_with("__") {
        format!("key{sanitized}")
    } else {
        sanitized
    }
}

/// A float as Prometheus writes `le` and `quantile` values: shortest form, `+Inf`.
pub fn format_bound(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else if value.is_nan() {
        "NaN".into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_translator() {
        use MetricKind::*;
        let cases = [
            ("http.server.duration", "s", Histogram, "http_server_duration_seconds"),
            ("requests.count", "1", MonotonicCounter, "requests_count_total"),
            ("memory.usage", "By", Gauge, "memory_usage_bytes"),
            ("cpu.utilization", "1", Gauge, "cpu_utilization_ratio"),
            ("system.network.io", "By/s", Gauge, "system_network_io_bytes_per_second"),
            ("http.requests", "{requests}", MonotonicCounter, "http_requests_total"),
            ("latency_seconds", "s", Histogram, "latency_seconds"),
            ("requests_total", "", MonotonicCounter, "requests_total"),
            ("total.requests", "", MonotonicCounter, "requests_total"),
            ("rig_latency", "ms", Histogram, "rig_latency_milliseconds"),
            ("rig_temperature", "Cel", Gauge, "rig_temperature_celsius"),
            ("2xx.count", "", Gauge, "_2xx_count"),
            ("a..b__c", "", Gauge, "a_b_c"),
            ("throughput", "1/s", Gauge, "throughput_per_second"),
        ];
        for (name, unit, kind, expected) in cases {
            assert_eq!(metric_name(name, unit, kind), expected, "{name} [{unit}]");
        }
    }

    #[test]
    fn labels_follow_the_prometheus_translator() {
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("2xx"), "key_2xx");
        assert_eq!(label_name("_private"), "key_private");
        assert_eq!(label_name("__reserved"), "__reserved");
        assert_eq!(label_name("ünïcode"), "key_n_code");
    }

    #[test]
    fn bounds_are_written_like_prometheus() {
        assert_eq!(format_bound(0.3), "0.3");
        assert_eq!(format_bound(1.0), "1");
        assert_eq!(format_bound(f64::INFINITY), "+Inf");
        assert_eq!(format_bound(1e-7), "0.0000001");
    }
}
