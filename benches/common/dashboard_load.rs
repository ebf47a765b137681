//! The query bench's load, which `ingest/benches/write_path.rs` sends too: 90 % request
//! counters (`bench_requests_total{job, instance, code}`, 10 jobs), 10 % a latency histogram
//! (`bench_latency_seconds_bucket{job, instance, le}`, 10 buckets), in remote-write requests
//! of 2,000 series each, time-major (one sample a series a request, as Prometheus's shards
//! send). The includer declares `client` (`tests/e2e/remote_write_client.rs`) beside it.
//!
//! Values are [`Values::Steady`] (each series rises by the same amount every step: second
//! differences all zero, a best case for VictoriaMetrics's encoding) or [`Values::Noisy`]
//! (counters rising by a random count every step, as requests arrive; buckets rising by
//! random counts, cumulative over `le`), chosen by `VIGIL_BENCH_VALUES`.

use super::client::{Label, Sample, TimeSeries, WriteRequest, encode};

fn labels(pairs: &[(&str, String)]) -> Vec<Label> {
    let mut out: Vec<Label> = pairs.iter().map(|(k, v)| Label { name: k.to_string(), value: v.clone() }).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// How the load's series rise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // the write-path bench sends the steady load only
pub enum Values {
    /// Series `i` rises by a fixed count each step.
    Steady,
    /// Series `i` rises by a random count each step, uniform over 0..=2× its steady count
    /// per second of the step (a request counter at 1-7 requests a second).
    Noisy,
}

#[allow(dead_code)]
impl Values {
    /// `VIGIL_BENCH_VALUES`: `steady` (the default) or `noisy`.
    fn from_env() -> Values {
        match std::env::var("VIGIL_BENCH_VALUES").as_deref() {
            Err(_) | Ok("steady") => Values::Steady,
            Ok("noisy") => Values::Noisy,
            Ok(other) => panic!("VIGIL_BENCH_VALUES={other}: steady or noisy"),
        }
    }
}

/// The load's step: `VIGIL_BENCH_STEP` seconds, 60 unless set.
#[allow(dead_code)]
fn step_ms_from_env() -> i64 {
    let seconds: i64 = std::env::var("VIGIL_BENCH_STEP").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    seconds.max(1) * 1000
}

/// A load ending now, as a bench sends it.
#[allow(dead_code)]
pub struct Load {
    pub bodies: Vec<Vec<u8>>,
    /// The last sample's time, on a step.
    pub end_ms: i64,
    /// Samples in all: what bytes per sample divide by.
    pub samples: f64,
}

/// `total` series over `days` ending now, at the step and with the values the environment
/// sets (`VIGIL_BENCH_STEP`, `VIGIL_BENCH_VALUES`); says what it made.
#[allow(dead_code)]
pub fn from_env(total: usize, days: i64) -> Load {
    const DAY_MS: i64 = 86_400_000;
    let (step_ms, values) = (step_ms_from_env(), Values::from_env());
    let points = days * DAY_MS / step_ms;
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the clock is past 1970").as_millis()
            as i64;
    let end_ms = now_ms / step_ms * step_ms;
    let bodies = load(end_ms, total, points, step_ms, values);
    println!(
        "load: {total} series x {} samples {step_ms} ms apart, {values:?} values, {} requests",
        points + 1,
        bodies.len()
    );
    Load { bodies, end_ms, samples: total as f64 * (points + 1) as f64 }
}

/// SplitMix64: a reproducible random count per series and step, with no state to carry.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A random count in 0..=`bound`, fixed by `series` and `step`.
fn draw(series: usize, step: i64, bound: u64) -> f64 {
    (mix(((series as u64) << 32) ^ step as u64) % (bound + 1)) as f64
}

/// Requests of 2,000 series each, in time order: `points + 1` samples per series, `step_ms`
/// apart, the last at `end_ms`, rising as `values` says.
pub fn load(end_ms: i64, total: usize, points: i64, step_ms: i64, values: Values) -> Vec<Vec<u8>> {
    let start_ms = end_ms - points * step_ms;
    // Each series' labels, its steady rise per step, and (noisy) which random rises it adds up:
    // a counter its own, a bucket its instance's first `le` buckets' (cumulative).
    let mut series: Vec<(Vec<Label>, f64, std::ops::Range<usize>)> = Vec::new();
    for i in 0..total * 9 / 10 {
        let code = ["200", "200", "200", "500", "404"][i % 5].to_string();
        series.push((
            labels(&[
                ("__name__", "bench_requests_total".into()),
                ("job", format!("job-{}", i % 10)),
                ("instance", format!("host-{}", i / 10)),
                ("code", code),
            ]),
            1.0 + (i % 7) as f64,
            i..i + 1,
        ));
    }
    let counters = series.len();
    let bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"];
    for i in 0..total / 100 {
        for (b, le) in bounds.iter().enumerate() {
            series.push((
                labels(&[
                    ("__name__", "bench_latency_seconds_bucket".into()),
                    ("job", format!("job-{}", i % 10)),
                    ("instance", format!("host-{i}")),
                    ("le", le.to_string()),
                ]),
                (b + 1) as f64,
                counters + i * bounds.len()..counters + i * bounds.len() + b + 1,
            ));
        }
    }
    let step_s = (step_ms / 1000).max(1) as u64;
    // Noisy arrivals per step: a counter's at 1-7 requests a second on average, a bucket's own
    // (before it adds the buckets below it) at a quarter of one.
    let noisy_bound = |index: usize| if index < counters { 2 * step_s * (1 + (index % 7) as u64) } else { step_s / 2 };
    let mut totals = vec![0.0; series.len()];
    let mut bodies = Vec::new();
    for step in 0..=points {
        let t = start_ms + step * step_ms;
        if values == Values::Noisy && step > 0 {
            for (total, (_, _, rises)) in totals.iter_mut().zip(&series) {
                *total += rises.clone().map(|index| draw(index, step, noisy_bound(index))).sum::<f64>();
            }
        }
        for (chunk, chunk_totals) in series.chunks(2_000).zip(totals.chunks(2_000)) {
            let timeseries = chunk
                .iter()
                .zip(chunk_totals)
                .map(|((labels, per_step, _), total)| TimeSeries {
                    labels: labels.clone(),
                    samples: vec![Sample {
                        value: match values {
                            Values::Steady => per_step * step as f64,
                            Values::Noisy => *total,
                        },
                        timestamp: t,
                    }],
                    exemplars: Vec::new(),
                })
                .collect();
            bodies.push(encode(&WriteRequest { timeseries }));
        }
    }
    bodies
}
