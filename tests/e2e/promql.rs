//! The PromQL corpus (tests/promql/corpus.promql) evaluated by a real Prometheus 2.42 and by
//! Vigil on the same data, sent to both by remote write; instant queries at three times and
//! two range queries per expression, compared series by series within 1e-9 relative.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::harness::{Vigil, fixture, free_port, require_program};
use crate::prometheus::start_prometheus;
use crate::remote_write_client::{Label, Sample, TimeSeries, WriteRequest, encode, send};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const STEP_MS: i64 = 15_000;
const STEPS: i64 = 240;
const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// A deterministic source of noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 10_000) as f64 / 10_000.0
    }
}

struct SeriesSpec {
    labels: Vec<(&'static str, String)>,
    /// Value at step i, or None for no sample.
    values: Vec<Option<f64>>,
}

fn spec(name: &str, labels: &[(&'static str, &str)], values: Vec<Option<f64>>) -> SeriesSpec {
    let mut all: Vec<(&'static str, String)> = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    all.push(("__name__", name.to_string()));
    all.sort();
    SeriesSpec { labels: all, values }
}

fn counter(noise: &mut Noise, per_step: f64, reset_at: Option<usize>) -> Vec<Option<f64>> {
    let mut value = 0.0;
    (0..=STEPS as usize)
        .map(|i| {
            if Some(i) == reset_at {
                value = 0.0;
            }
            value += (per_step * (0.5 + noise.next())).round();
            Some(value)
        })
        .collect()
}

fn dataset() -> Vec<SeriesSpec> {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let n = STEPS as usize;
    let mut out = vec![
        spec(
            "http_requests_total",
            &[("job", "api"), ("instance", "api-1"), ("method", "GET"), ("code", "200")],
            counter(&mut noise, 75.0, None),
        ),
        spec(
            "http_requests_total",
            &[("job", "api"), ("instance", "api-1"), ("method", "GET"), ("code", "500")],
            counter(&mut noise, 3.0, None),
        ),
        spec(
            "http_requests_total",
            &[("job", "api"), ("instance", "api-2"), ("method", "POST"), ("code", "200")],
            counter(&mut noise, 20.0, Some(120)),
        ),
        spec(
            "http_requests_total",
            &[("job", "web"), ("instance", "web-1"), ("method", "GET"), ("code", "200")],
            counter(&mut noise, 40.0, None),
        ),
        spec(
            "http_requests_total",
            &[("job", "web"), ("instance", "web-1"), ("method", "POST"), ("code", "503")],
            counter(&mut noise, 1.0, None),
        ),
    ];
    // Goes stale at step 160 (a stale marker) and comes back at step 192.
    let mut stale = counter(&mut noise, 10.0, None);
    for (i, value) in stale.iter_mut().enumerate() {
        if i == 160 {
            *value = Some(STALE);
        } else if (161..192).contains(&i) {
            *value = None;
        }
    }
    out.push(spec(
        "http_requests_total",
        &[("job", "api"), ("instance", "api-3"), ("method", "GET"), ("code", "200")],
        stale,
    ));
    // A 10-minute gap without samples.
    let mut gap = counter(&mut noise, 5.0, None);
    for value in &mut gap[80..120] {
        *value = None;
    }
    out.push(spec(
        "http_requests_total",
        &[("job", "web"), ("instance", "web-2"), ("method", "GET"), ("code", "404")],
        gap,
    ));
    for (instance, job) in [("api-1", "api"), ("api-2", "api"), ("api-3", "api"), ("web-1", "web"), ("web-2", "web")] {
        let values =
            (0..=n).map(|i| Some(if instance == "web-2" && (100..140).contains(&i) { 0.0 } else { 1.0 })).collect();
        out.push(spec("up", &[("job", job), ("instance", instance)], values));
    }
    let wave: Vec<Option<f64>> = (0..=n).map(|i| Some(21.0 + 3.0 * (i as f64 / 20.0).sin())).collect();
    out.push(spec("node_temp", &[("instance", "node-1"), ("zone", "a")], wave));
    let random: Vec<Option<f64>> =
        (0..=n).map(|_| Some((15.0 + 10.0 * noise.next() * 100.0).round() / 100.0)).collect();
    out.push(spec("node_temp", &[("instance", "node-1"), ("zone", "b")], random));
    let with_nan: Vec<Option<f64>> =
        (0..=n).map(|i| Some(if i % 10 == 3 { f64::NAN } else { 20.0 + (i % 7) as f64 })).collect();
    out.push(spec("node_temp", &[("instance", "node-1"), ("zone", "c")], with_nan));
    let with_inf: Vec<Option<f64>> =
        (0..=n).map(|i| Some(if i % 25 == 0 { f64::INFINITY } else { 18.0 - (i % 5) as f64 })).collect();
    out.push(spec("node_temp", &[("instance", "node-1"), ("zone", "d")], with_inf));
    out.push(spec(
        "node_temp",
        &[("instance", "node-2")],
        (0..=n).map(|i| Some(19.5 + (i % 3) as f64 / 2.0)).collect(),
    ));
    // Queue depths never tie across queues: topk/bottomk pick among equal values in an
    // implementation-defined order.
    for (q, queue) in ["q1", "q2", "q3"].into_iter().enumerate() {
        let mut depth = 10.0;
        let values = (0..=n)
            .map(|_| {
                depth = (depth + (noise.next() - 0.5) * 4.0).clamp(1.0, 20.0);
                Some((depth * 1000.0).round() / 1000.0 + (q + 1) as f64 * 1e-4)
            })
            .collect();
        out.push(spec("queue_depth", &[("queue", queue)], values));
    }
    for job in ["api", "web"] {
        let bounds = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
        let mut counts = [0.0f64; 6];
        let mut sum = 0.0;
        let mut series: Vec<Vec<Option<f64>>> = vec![Vec::new(); 8];
        for _ in 0..=n {
            for _ in 0..10 {
                let observed = noise.next() * noise.next() * 1.5;
                sum += observed;
                for (b, bound) in bounds.iter().enumerate() {
                    if *bound == "+Inf" || observed <= bound.parse::<f64>().unwrap() {
                        counts[b] += 1.0;
                    }
                }
            }
            for b in 0..6 {
                series[b].push(Some(counts[b]));
            }
            series[6].push(Some((sum * 1e6).round() / 1e6));
            series[7].push(Some(counts[5]));
        }
        for (b, bound) in bounds.iter().enumerate() {
            out.push(spec("http_request_duration_seconds_bucket", &[("job", job), ("le", bound)], series[b].clone()));
        }
        out.push(spec("http_request_duration_seconds_sum", &[("job", job)], series[6].clone()));
        out.push(spec("http_request_duration_seconds_count", &[("job", job)], series[7].clone()));
    }
    out.push(spec("build_info", &[("version", "1.0")], (0..=n).map(|_| Some(1.0)).collect()));
    out
}

/// One remote-write request per step, in time order (Prometheus refuses out-of-order samples).
fn requests(data: &[SeriesSpec], t0: i64) -> Vec<Vec<u8>> {
    (0..=STEPS as usize)
        .map(|i| {
            let timeseries = data
                .iter()
                .filter_map(|s| {
                    let value = s.values[i]?;
                    Some(TimeSeries {
                        labels: s.labels.iter().map(|(k, v)| Label { name: k.to_string(), value: v.clone() }).collect(),
                        samples: vec![Sample { value, timestamp: t0 + i as i64 * STEP_MS }],
                        exemplars: Vec::new(),
                    })
                })
                .collect();
            encode(&WriteRequest { timeseries })
        })
        .collect()
}

/// A result normalised for comparison: series → points (t ms, value).
#[derive(Debug, PartialEq)]
enum Shape {
    Series(String, BTreeMap<String, Vec<(i64, f64)>>),
    Error(String),
}

fn number(value: &Value) -> f64 {
    match value.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(text) => text.parse().unwrap_or(f64::NAN),
        None => f64::NAN,
    }
}

fn point(pair: &Value) -> (i64, f64) {
    ((pair[0].as_f64().unwrap_or(f64::NAN) * 1000.0).round() as i64, number(&pair[1]))
}

fn shape(body: &Value) -> Shape {
    if body["status"] != "success" {
        return Shape::Error(body["error"].as_str().unwrap_or("no answer").to_string());
    }
    let kind = body["data"]["resultType"].as_str().unwrap_or("").to_string();
    let result = &body["data"]["result"];
    let mut series = BTreeMap::new();
    match kind.as_str() {
        "scalar" | "string" => {
            series.insert(String::new(), vec![point(result)]);
        }
        _ => {
            for entry in result.as_array().into_iter().flatten() {
                let labels = entry["metric"].to_string();
                let points = match entry.get("values") {
                    Some(values) => values.as_array().unwrap().iter().map(point).collect(),
                    None => vec![point(&entry["value"])],
                };
                series.insert(labels, points);
            }
        }
    }
    Shape::Series(kind, series)
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a - b).abs() < 1e-12
}

/// Why two results differ, if they do.
fn difference(expected: &Shape, actual: &Shape) -> Option<String> {
    match (expected, actual) {
        (Shape::Error(_), Shape::Error(_)) => None,
        (Shape::Series(k1, s1), Shape::Series(k2, s2)) => {
            if k1 != k2 {
                return Some(format!("result type {k1} vs {k2}"));
            }
            if s1.keys().ne(s2.keys()) {
                let missing: Vec<_> = s1.keys().filter(|k| !s2.contains_key(*k)).take(3).collect();
                let extra: Vec<_> = s2.keys().filter(|k| !s1.contains_key(*k)).take(3).collect();
                return Some(format!(
                    "series differ: missing {missing:?}, extra {extra:?} ({} vs {})",
                    s1.len(),
                    s2.len()
                ));
            }
            for (labels, p1) in s1 {
                let p2 = &s2[labels];
                if p1.len() != p2.len() {
                    return Some(format!("{labels}: {} points vs {}", p1.len(), p2.len()));
                }
                for ((t1, v1), (t2, v2)) in p1.iter().zip(p2) {
                    if t1 != t2 || !same_value(*v1, *v2) {
                        return Some(format!("{labels}: ({t1}, {v1}) vs ({t2}, {v2})"));
                    }
                }
            }
            None
        }
        (Shape::Error(e), _) => Some(format!("Prometheus refused it ({e}), Vigil answered")),
        (_, Shape::Error(e)) => Some(format!("Vigil refused it ({e}), Prometheus answered")),
    }
}

async fn get(client: &reqwest::Client, url: &str, params: &[(&str, String)]) -> Value {
    let response = client.get(url).query(params).send().await.unwrap();
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_promql_corpus_agrees_with_prometheus() {
    if !require_program(PROMETHEUS) {
        return;
    }
    let corpus: Vec<String> = std::fs::read_to_string(fixture("promql/corpus.promql"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(corpus.len() >= 150, "the corpus needs at least 150 expressions, has {}", corpus.len());

    let dir = tempfile::tempdir().unwrap();
    let mut vigil = Vigil::start(&dir.path().join("vigil"), &[]).await;
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global: {scrape_interval: 1m}\nscrape_configs: []\n").unwrap();
    let _prometheus = start_prometheus(dir.path(), port, &["--web.enable-remote-write-receiver"]);
    let prometheus = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    crate::prometheus::prometheus_ready(&client, &prometheus).await;

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let t0 = now / 60_000 * 60_000 - STEPS * STEP_MS;
    for body in requests(&dataset(), t0) {
        for url in [format!("{prometheus}/api/v1/write"), vigil.url("/api/v1/write")] {
            let (status, text) = send(&client, &url, body.clone()).await;
            assert!(status == 204 || status == 200, "{url}: {status} {text}");
        }
    }

    let seconds = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    let minute = 60_000;
    let instants = [t0 + 30 * minute, t0 + 45 * minute + 7_000, t0 + 58 * minute];
    let ranges = [(t0 + 10 * minute, t0 + 58 * minute, 60_000), (t0 + 5 * minute, t0 + 40 * minute, 37_000)];
    let mut failures: Vec<String> = Vec::new();
    let mut evaluations = 0;
    // Once from the write buffer, once after a restart from Parquet segments and their series
    // indexes (a shutdown flushes): both read paths answer as Prometheus does.
    for read_from in ["the write buffer", "segments"] {
        if read_from == "segments" {
            assert!(vigil.terminate().success());
            vigil = Vigil::start(&dir.path().join("vigil"), &[]).await;
        }
        for expression in &corpus {
            let mut first_problem = None;
            for at in instants {
                let params = [("query", expression.clone()), ("time", seconds(at))];
                let expected = shape(&get(&client, &format!("{prometheus}/api/v1/query"), &params).await);
                let actual = shape(&get(&client, &vigil.url("/api/v1/query"), &params).await);
                evaluations += 1;
                if let Some(problem) = difference(&expected, &actual) {
                    first_problem.get_or_insert(format!("instant @{}: {problem}", (at - t0) / 1000));
                }
            }
            for (start, end, step) in ranges {
                let params = [
                    ("query", expression.clone()),
                    ("start", seconds(start)),
                    ("end", seconds(end)),
                    ("step", seconds(step)),
                ];
                let expected = shape(&get(&client, &format!("{prometheus}/api/v1/query_range"), &params).await);
                let actual = shape(&get(&client, &vigil.url("/api/v1/query_range"), &params).await);
                evaluations += 1;
                if let Some(problem) = difference(&expected, &actual) {
                    first_problem.get_or_insert(format!("range step {step}: {problem}"));
                }
            }
            if let Some(problem) = first_problem {
                failures.push(format!("{expression} (from {read_from})\n    {problem}"));
            }
        }
        // The metadata endpoints Grafana uses agree too.
        let whole = [("start", seconds(t0 - 60_000)), ("end", seconds(t0 + STEPS * STEP_MS + 60_000))];
        let api_cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("/api/v1/series", vec![("match[]", "http_requests_total{job=\"api\"}".to_string())]),
            (
                "/api/v1/series",
                vec![("match[]", "{__name__=~\"node_.*|up\"}".to_string()), ("match[]", "build_info".to_string())],
            ),
            ("/api/v1/labels", vec![]),
            ("/api/v1/labels", vec![("match[]", "up".to_string())]),
            ("/api/v1/label/job/values", vec![]),
            ("/api/v1/label/__name__/values", vec![]),
            ("/api/v1/label/zone/values", vec![("match[]", "node_temp".to_string())]),
        ];
        for (path, extra) in api_cases {
            let params: Vec<(&str, String)> = whole.iter().cloned().chain(extra).collect();
            let mut expected = get(&client, &format!("{prometheus}{path}"), &params).await;
            let mut actual = get(&client, &vigil.url(path), &params).await;
            for body in [&mut expected, &mut actual] {
                if let Some(list) = body["data"].as_array_mut() {
                    list.sort_by_key(|v| v.to_string());
                }
            }
            if expected != actual {
                failures.push(format!("{path} {params:?} (from {read_from})\n    {expected} vs {actual}"));
            }
        }
    }

    let agreeing = corpus.len() - failures.len().min(corpus.len());
    println!(
        "PromQL corpus: {agreeing}/{} expressions agree with Prometheus 2.42 ({:.1} %), {evaluations} evaluations",
        corpus.len(),
        100.0 * agreeing as f64 / corpus.len() as f64
    );
    assert!(failures.is_empty(), "{} expressions differ:\n{}", failures.len(), failures.join("\n"));
}
