//! Prometheus's own PromQL test suite (v2.42.0 `promql/testdata/*.test`, vendored with its
//! licence in tests/promql/upstream) run against Vigil: each `load` is remote-written into a
//! fresh Vigil (a new one after every `clear`), each `eval instant` asked of
//! `/api/v1/query`, and compared as upstream's `test.go` compares: the same label sets,
//! values equal within 1e-6 relative (NaN equals NaN), in order for `eval_ordered`, and an
//! error for `eval_fail`.
//!
//! The cases Vigil does not pass yet are listed in tests/promql/upstream/KNOWN_FAILURES
//! (file:line): the test fails when any other case fails, and when a listed case starts
//! passing (so the list only shrinks).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::harness::Vigil;
use crate::remote_write_client::{Label, Sample, TimeSeries, WriteRequest, encode, send};

const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/promql/upstream");

/// A duration as the test language writes one (`5m`, `10s`, `1h`, `1ms`), in ms.
fn duration_ms(text: &str) -> i64 {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    n * match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => panic!("duration unit in {text:?}"),
    }
}

fn number(text: &str) -> f64 {
    match text.trim_start_matches('+') {
        "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().unwrap_or_else(|_| panic!("number {text:?}")),
    }
}

/// Splits `metric{a="b", c="d"} rest` into its labels (with `__name__`) and the rest.
fn series_and_rest(line: &str) -> (Vec<(String, String)>, &str) {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let mut labels = Vec::new();
    if name_end > 0 {
        labels.push(("__name__".to_string(), line[..name_end].to_string()));
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.unwrap_or_else(|| panic!("unclosed braces in {line:?}"));
        let inner = &rest[1..close];
        let mut chars = inner.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
            if name.is_empty() {
                break;
            }
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '=') {
                chars.next();
            }
            assert_eq!(chars.next(), Some('"'), "label value of {name} in {line:?}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => {}
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((name, value));
        }
        rest = &rest[close + 1..];
    }
    labels.sort();
    (labels, rest.trim())
}

/// The values of a series line (`1 2 _ stale 0+10x100 _x3 -2-1x4`): `None` for no sample.
fn expand_values(text: &str) -> Vec<Option<f64>> {
    let mut out = Vec::new();
    for item in text.split_whitespace() {
        match item {
            "_" => out.push(None),
            "stale" => out.push(Some(STALE)),
            _ => match item.rsplit_once('x') {
                Some((start, times)) if times.chars().all(|c| c.is_ascii_digit()) && !times.is_empty() => {
                    let times: usize = times.parse().unwrap_or(0);
                    if start == "_" {
                        out.extend(std::iter::repeat_n(None, times));
                        continue;
                    }
                    // `a+b` or `a-b`: the sign after the first character that is not an exponent's.
                    let bytes = start.as_bytes();
                    let split = (1..bytes.len())
                        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
                    let (first, step) = match split {
                        Some(i) => (number(&start[..i]), number(&start[i..])),
                        None => (number(start), 0.0),
                    };
                    for i in 0..=times {
                        out.push(Some(first + step * i as f64));
                    }
                }
                _ => out.push(Some(number(item))),
            },
        }
    }
    out
}

/// One expected sample of an `eval`: its labels (empty for a scalar) and value.
#[derive(Debug)]
struct Expected {
    labels: Vec<(String, String)>,
    value: f64,
}

enum Command {
    Load { interval_ms: i64, series: Vec<(Vec<(String, String)>, Vec<Option<f64>>)> },
    Clear,
    Eval { line: usize, at_ms: i64, query: String, fail: bool, ordered: bool, expected: Vec<Expected>, scalar: bool },
}

fn parse(text: &str) -> Vec<Command> {
    let lines: Vec<&str> = text.lines().collect();
    let mut commands = Vec::new();
    let mut i = 0;
    let is_body = |l: &str| l.starts_with(' ') || l.starts_with('\t');
    while i < lines.len() {
        let line = lines[i].trim_end();
        i += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line == "clear" {
            commands.push(Command::Clear);
        } else if let Some(interval) = line.strip_prefix("load ") {
            let mut series = Vec::new();
            while i < lines.len() && is_body(lines[i]) && !lines[i].trim().is_empty() {
                let (labels, rest) = series_and_rest(lines[i]);
                series.push((labels, expand_values(rest)));
                i += 1;
            }
            commands.push(Command::Load { interval_ms: duration_ms(interval.trim()), series });
        } else if line.starts_with("eval") {
            let line_number = i;
            let (head, rest) = line.split_once(" instant at ").unwrap_or_else(|| panic!("line {line_number}: {line}"));
            let (at, query) = rest.split_once(' ').unwrap_or_else(|| panic!("line {line_number}: {line}"));
            let mut expected = Vec::new();
            let mut scalar = false;
            while i < lines.len() && is_body(lines[i]) && !lines[i].trim().is_empty() {
                let body = lines[i].trim();
                i += 1;
                if body.starts_with('{')
                    || body.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && !matches!(body, "NaN" | "Inf")
                {
                    let (labels, value) = series_and_rest(body);
                    expected.push(Expected { labels, value: number(value) });
                } else {
                    scalar = true;
                    expected.push(Expected { labels: Vec::new(), value: number(body) });
                }
            }
            commands.push(Command::Eval {
                line: line_number,
                at_ms: duration_ms(at),
                query: query.trim().to_string(),
                fail: head == "eval_fail",
                ordered: head == "eval_ordered",
                expected,
                scalar,
            });
        } else {
            panic!("line {i}: unknown command {line:?}");
        }
    }
    commands
}

/// Upstream's `almostEqual`.
fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 0.000001;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()) < EPSILON
}

async fn load(vigil: &Vigil, interval_ms: i64, series: &[(Vec<(String, String)>, Vec<Option<f64>>)]) {
    let mut timeseries: Vec<TimeSeries> = series
        .iter()
        .map(|(labels, values)| TimeSeries {
            labels: labels.iter().map(|(n, v)| Label { name: n.clone(), value: v.clone() }).collect(),
            samples: values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|value| Sample { value, timestamp: i as i64 * interval_ms }))
                .collect(),
            exemplars: Vec::new(),
        })
        .collect();
    timeseries.retain(|t| !t.samples.is_empty());
    for chunk in timeseries.chunks(50) {
        let (status, body) =
            send(&vigil.client, &vigil.url("/api/v1/write"), encode(&WriteRequest { timeseries: chunk.to_vec() }))
                .await;
        assert_eq!(status, 204, "load refused: {body}");
    }
}

/// The outcome of one `eval` against Vigil: `None` when it passes.
async fn check(vigil: &Vigil, command: &Command) -> Option<String> {
    let Command::Eval { at_ms, query, fail, ordered, expected, scalar, .. } = command else { return None };
    let response = vigil
        .client
        .get(vigil.url("/api/v1/query"))
        .query(&[("query", query.as_str()), ("time", &format!("{}", *at_ms as f64 / 1000.0))])
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let failed = body["status"] != "success";
    if *fail {
        return (!failed).then(|| format!("expected an error, got {}", body["data"]));
    }
    if failed {
        return Some(format!("error: {}", body["error"]));
    }
    let data = &body["data"];
    let value_of = |v: &Value| number(v[1].as_str().unwrap_or("NaN"));
    match data["resultType"].as_str() {
        Some("scalar") => {
            let got = value_of(&data["result"]);
            match expected.as_slice() {
                [one] if *scalar && almost_equal(one.value, got) => None,
                _ => Some(format!("scalar {got}, expected {expected:?}")),
            }
        }
        Some("vector") => {
            let result = data["result"].as_array().cloned().unwrap_or_default();
            let got: Vec<(Vec<(String, String)>, f64)> = result
                .iter()
                .map(|s| {
                    let mut labels: Vec<(String, String)> = s["metric"]
                        .as_object()
                        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                        .unwrap_or_default();
                    labels.sort();
                    (labels, value_of(&s["value"]))
                })
                .collect();
            if *scalar {
                return Some(format!("vector {got:?}, expected a scalar"));
            }
            if got.len() != expected.len() {
                return Some(format!("{} samples, expected {}: {got:?}", got.len(), expected.len()));
            }
            for (index, (labels, value)) in got.iter().enumerate() {
                let want = if *ordered {
                    expected.get(index).filter(|e| &e.labels == labels)
                } else {
                    expected.iter().find(|e| &e.labels == labels)
                };
                match want {
                    Some(e) if almost_equal(e.value, *value) => {}
                    Some(e) => return Some(format!("{labels:?}: {value}, expected {}", e.value)),
                    None => return Some(format!("unexpected {labels:?} {value} (at {index})")),
                }
            }
            let distinct: BTreeSet<&Vec<(String, String)>> = got.iter().map(|(l, _)| l).collect();
            (distinct.len() != got.len()).then(|| "the same label set twice".to_string())
        }
        other => Some(format!("result type {other:?}: {data}")),
    }
}

/// Runs one file; returns the cases that failed, as `file:line: why`.
async fn run_file(name: &str, work: &std::path::Path) -> (usize, Vec<(String, String)>) {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap();
    let mut vigil: Option<Vigil> = None;
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut instance = 0;
    for command in parse(&text) {
        if let Command::Clear = command {
            vigil = None;
            continue;
        }
        if vigil.is_none() {
            instance += 1;
            let data = work.join(format!("{name}-{instance}"));
            vigil = Some(Vigil::start(&data, &["--retention", "0", "--max-past", "0"]).await);
        }
        let Some(current) = vigil.as_ref() else { continue };
        match &command {
            Command::Load { interval_ms, series } => load(current, *interval_ms, series).await,
            Command::Eval { line, .. } => {
                cases += 1;
                if let Some(why) = check(current, &command).await {
                    failures.push((format!("{name}:{line}"), why));
                }
            }
            Command::Clear => {}
        }
    }
    (cases, failures)
}

#[tokio::test]
async fn prometheus_promql_test_suite() {
    let work = tempfile::tempdir().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test"))
        .collect();
    files.sort();
    let known: BTreeSet<String> = std::fs::read_to_string(format!("{DIR}/KNOWN_FAILURES"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let runs = files.iter().map(|f| run_file(f, work.path()));
    let results = futures::future::join_all(runs).await;
    let cases: usize = results.iter().map(|r| r.0).sum();
    let failures: Vec<(String, String)> = results.into_iter().flat_map(|r| r.1).collect();
    let failed: BTreeSet<String> = failures.iter().map(|(case, _)| case.clone()).collect();
    eprintln!("Prometheus v2.42.0 PromQL suite: {} of {cases} cases pass", cases - failed.len());
    for (case, why) in &failures {
        eprintln!("  {case}: {why}");
    }
    let new: Vec<&(String, String)> = failures.iter().filter(|(case, _)| !known.contains(case)).collect();
    let fixed: Vec<&String> = known.iter().filter(|case| !failed.contains(*case)).collect();
    assert!(new.is_empty(), "cases that fail and are not in KNOWN_FAILURES: {new:#?}");
    assert!(fixed.is_empty(), "cases in KNOWN_FAILURES that pass now (take them out): {fixed:?}");
}
