//! Pull: scraping Prometheus targets the way Prometheus does.
//!
//! Each target is scraped every `interval` (first scrape offset by a hash of its URL, so
//! targets spread out), with `timeout`. Samples get `job` and `instance` (and the static
//! labels); a clashing scraped label becomes `exported_<name>` unless `honor_labels`. Every
//! scrape also writes Prometheus's five synthetic series: `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and `scrape_series_added`. A series
//! that disappears, or every series of a target that fails, gets a stale marker, so queries
//! stop seeing it at once. A failing target is reported, never fatal.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use vigil_storage::{LabelSet, MetricName, MetricSeries, Sample, WriteBatch};

use crate::exposition::{self, Format};
use crate::otlp::metrics::STALE_NAN;
use crate::text_import::{LabelMerge, to_series};
use crate::{Ingestor, Limits};
use vigil_storage::clock::now_ms;

const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeTarget {
    pub job: String,
    /// `host:port`
    pub address: String,
    pub scheme: String,
    pub metrics_path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub honor_labels: bool,
    /// Static labels from the config (`labels:` of a static config), after the target's
    /// `relabel_configs`; an `instance` here replaces the address.
    pub labels: Vec<(String, String)>,
    /// Timestamps the exposition gives are kept (`honor_timestamps`, on by default); off,
    /// every sample takes the scrape's time.
    pub honor_timestamps: bool,
    /// `metric_relabel_configs`: applied to every scraped sample before it is stored.
    pub metric_relabel: Vec<crate::relabel::Rule>,
}

impl ScrapeTarget {
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.address, self.metrics_path)
    }

    /// `job`, `instance` and the static labels; static ones win.
    pub fn target_labels(&self) -> Vec<(String, String)> {
        let mut labels = vec![("job".to_string(), self.job.clone()), ("instance".to_string(), self.address.clone())];
        for (name, value) in &self.labels {
            labels.retain(|(n, _)| n != name);
            labels.push((name.clone(), value.clone()));
        }
        labels
    }
}

/// The state of a target as the targets API shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TargetHealth {
    /// `unknown` before the first scrape, then `up` or `down`.
    pub health: &'static str,
    pub last_error: String,
    pub last_scrape_unix_ms: Option<i64>,
    pub last_duration_seconds: f64,
    pub samples: usize,
}

struct TargetState {
    target: ScrapeTarget,
    health: Mutex<TargetHealth>,
}

/// One target's loop.
struct Running {
    state: Arc<TargetState>,
    task: JoinHandle<()>,
}

/// Runs the scrape loops; stops them when dropped.
pub struct Scraper {
    running: Mutex<Vec<Running>>,
    ingestor: Ingestor,
    client: reqwest::Client,
}

impl Scraper {
    pub fn start(targets: Vec<ScrapeTarget>, ingestor: Ingestor) -> Scraper {
        let client = reqwest::Client::builder()
            .user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let scraper = Scraper { running: Mutex::new(Vec::new()), ingestor, client };
        scraper.set_targets(targets);
        scraper
    }

    /// Scrapes `targets` from now on (a reload): a target that stays keeps its loop and its
    /// health; removed ones stop; new ones start. Returns how many started and stopped.
    pub fn set_targets(&self, targets: Vec<ScrapeTarget>) -> (usize, usize) {
        let mut running = self.running.lock();
        let (kept, gone): (Vec<Running>, Vec<Running>) =
            std::mem::take(&mut *running).into_iter().partition(|r| targets.contains(&r.state.target));
        for loop_ in &gone {
            loop_.task.abort();
        }
        *running = kept;
        let mut started = 0;
        for target in targets {
            if running.iter().any(|r| r.state.target == target) {
                continue;
            }
            let state = Arc::new(TargetState {
                target,
                health: Mutex::new(TargetHealth { health: "unknown", ..Default::default() }),
            });
            let task = tokio::spawn(scrape_loop(state.clone(), self.ingestor.clone(), self.client.clone()));
            running.push(Running { state, task });
            started += 1;
        }
        (started, gone.len())
    }

    pub fn targets(&self) -> Vec<(ScrapeTarget, TargetHealth)> {
        self.running.lock().iter().map(|r| (r.state.target.clone(), r.state.health.lock().clone())).collect()
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        for loop_ in self.running.lock().iter() {
            loop_.task.abort();
        }
    }
}

async fn scrape_loop(state: Arc<TargetState>, ingestor: Ingestor, client: reqwest::Client) {
    let target = &state.target;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    target.url().hash(&mut hasher);
    let interval_ms = target.interval.as_millis().max(1) as u64;
    tokio::time::sleep(Duration::from_millis(hasher.finish() % interval_ms)).await;
    let mut ticker = tokio::time::interval(target.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: HashSet<(MetricName, LabelSet)> = HashSet::new();
    loop {
        ticker.tick().await;
        previous = scrape_once(&state, &ingestor, &client, previous).await;
    }
}

/// Why a scrape failed (the target's `lastError`).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("server returned HTTP status {0}")]
    Status(reqwest::StatusCode),
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("{0}")]
    Parse(String),
}

/// Fetches the body, refusing more than `limit` bytes.
async fn fetch(client: &reqwest::Client, target: &ScrapeTarget, limit: usize) -> Result<(String, String), ScrapeError> {
    let request = client
        .get(target.url())
        .header(reqwest::header::ACCEPT, ACCEPT)
        .header("X-Prometheus-Scrape-Timeout-Seconds", target.timeout.as_secs_f64().to_string())
        .timeout(target.timeout);
    let mut response = request.send().await?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(response.status()));
    }
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(ScrapeError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body).map_err(|_| ScrapeError::NotUtf8)?;
    Ok((content_type, text))
}

fn parse_body(
    ingestor: &Ingestor,
    content_type: &str,
    body: &str,
    target: &ScrapeTarget,
    timestamp_ms: i64,
    limits: &Limits,
) -> Result<(Vec<MetricSeries>, usize), ScrapeError> {
    let mut parsed =
        exposition::parse(body, Format::detect(content_type, body)).map_err(|e| ScrapeError::Parse(e.to_string()))?;
    ingestor.record_families(&parsed.families);
    if !target.honor_timestamps {
        for sample in &mut parsed.samples {
            sample.timestamp_ms = None;
        }
    }
    let merge = if target.honor_labels { LabelMerge::ScrapedWin } else { LabelMerge::RenameScraped };
    let series = to_series(parsed.samples, timestamp_ms, &target.target_labels(), merge, limits)
        .map_err(|e| ScrapeError::Parse(e.to_string()))?;
    let scraped = series.len();
    Ok((metric_relabel(series, &target.metric_relabel), scraped))
}

/// `metric_relabel_configs` over scraped series: dropped ones go, relabelled ones keep their
/// samples (one that loses its name, or whose labels become invalid, is dropped too).
fn metric_relabel(series: Vec<MetricSeries>, rules: &[crate::relabel::Rule]) -> Vec<MetricSeries> {
    if rules.is_empty() {
        return series;
    }
    series
        .into_iter()
        .filter_map(|s| {
            let mut labels: std::collections::BTreeMap<String, String> =
                s.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            labels.insert("__name__".into(), s.metric.to_string());
            let mut labels = crate::relabel::relabel(labels, rules)?;
            let metric = labels.remove("__name__")?;
            let labels = LabelSet::new(labels.into_iter().collect()).ok()?;
            vigil_storage::write::is_valid_metric_name(&metric).then_some(MetricSeries {
                metric: metric.into(),
                labels,
                samples: s.samples,
            })
        })
        .collect()
}

/// One scrape; returns the series it saw, for the next scrape's staleness check.
async fn scrape_once(
    state: &TargetState,
    ingestor: &Ingestor,
    client: &reqwest::Client,
    previous: HashSet<(MetricName, LabelSet)>,
) -> HashSet<(MetricName, LabelSet)> {
    let target = &state.target;
    let started = Instant::now();
    let timestamp_ms = now_ms();
    let limit = ingestor.limits().max_decompressed_bytes;
    let result = match fetch(client, target, limit).await {
        Ok((content_type, body)) => parse_body(ingestor, &content_type, &body, target, timestamp_ms, ingestor.limits()),
        Err(e) => Err(e),
    };
    let duration = started.elapsed().as_secs_f64();
    let timestamp_ns = timestamp_ms.saturating_mul(1_000_000);
    let (mut series, scraped, error) = match result {
        Ok((series, scraped)) => (series, scraped, None),
        Err(error) => (Vec::new(), 0, Some(error)),
    };
    let kept = series.len();
    let current: HashSet<(MetricName, LabelSet)> =
        series.iter().map(|s| (s.metric.clone(), s.labels.clone())).collect();
    // As Prometheus: the series this scrape has that the last one lacked (all of them at first).
    let added = current.difference(&previous).count();
    for (metric, labels) in previous.difference(&current) {
        series.push(MetricSeries {
            metric: metric.clone(),
            labels: labels.clone(),
            samples: vec![Sample { timestamp_ns, value: STALE_NAN }],
        });
    }
    let report_labels = LabelSet::new(target.target_labels()).unwrap_or_default();
    let report = |metric: &str, value: f64| MetricSeries {
        metric: metric.into(),
        labels: report_labels.clone(),
        samples: vec![Sample { timestamp_ns, value }],
    };
    series.push(report("up", if error.is_none() { 1.0 } else { 0.0 }));
    series.push(report("scrape_duration_seconds", duration));
    series.push(report("scrape_samples_scraped", scraped as f64));
    series.push(report("scrape_samples_post_metric_relabeling", kept as f64));
    series.push(report("scrape_series_added", added as f64));
    // Samples with timestamps outside the accepted range are dropped and counted, as
    // Prometheus drops out-of-bounds samples of a scrape.
    let written = ingestor.store(WriteBatch { metrics: series, rows: Vec::new() }).await;
    let error = match (error, written) {
        (Some(e), _) => Some(e.to_string()),
        (None, Err(e)) => Some(format!("storing the scrape failed: {e}")),
        (None, Ok((_, refused))) if !refused.is_empty() => Some(refused.describe()),
        (None, Ok(_)) => None,
    };
    metrics::counter!("vigil_scrapes_total", "job" => target.job.clone(), "outcome" => if error.is_some() { "failure" } else { "success" })
        .increment(1);
    match &error {
        Some(e) => warn!(url = %target.url(), error = %e, "scrape failed"),
        None => debug!(url = %target.url(), samples = scraped, "scraped"),
    }
    *state.health.lock() = TargetHealth {
        health: if error.is_none() { "up" } else { "down" },
        last_error: error.clone().unwrap_or_default(),
        last_scrape_unix_ms: Some(timestamp_ms),
        last_duration_seconds: duration,
        samples: scraped,
    };
    if error.is_some() { HashSet::new() } else { current }
}
