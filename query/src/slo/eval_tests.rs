//! SLO evaluation against data whose good/total per minute is known, so SLI, budget and
//! every burn rate have closed forms.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int64Array, StringArray, TimestampNanosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::record_batch::RecordBatch;
use vigil_storage::schema::FixedTable;
use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, StorageOptions, TableRows, WriteBatch};

use super::evaluate::{SloEvaluator, SloStatus};
use super::load_texts;
use crate::{QueryEngine, QueryOptions};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// 2024-03-04T00:00:00Z, a Monday.
const NOW: i64 = 1_709_510_400_000;

async fn engine() -> (QueryEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StorageOptions::new(dir.path());
    options.retention = std::time::Duration::ZERO;
    let storage = Storage::open(options).await.unwrap();
    (QueryEngine::new(storage, QueryOptions::default()).unwrap(), dir)
}

/// A counter with `per_minute(m)` events in minute m (m = minutes since `start`), sampled
/// every 15 s, a quarter of the minute's events at each sample. `reset_at` restarts it.
fn counter(
    metric: &str,
    labels: &[(&str, &str)],
    start: i64,
    minutes: i64,
    per_minute: impl Fn(i64) -> f64,
    reset_at: Option<i64>,
    gap: Option<(i64, i64)>,
) -> MetricSeries {
    let mut value = 0.0;
    let mut samples = vec![Sample { timestamp_ns: start * 1_000_000, value: 0.0 }];
    for m in 0..minutes {
        if Some(m) == reset_at {
            value = 0.0;
        }
        for quarter in 1..=4 {
            value += per_minute(m) / 4.0;
            let t = start + m * MINUTE + quarter * 15_000;
            if gap.is_some_and(|(from, to)| m >= from && m < to) {
                continue;
            }
            samples.push(Sample { timestamp_ns: t * 1_000_000, value });
        }
    }
    MetricSeries {
        metric: metric.into(),
        labels: LabelSet::new(labels.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap(),
        samples,
    }
}

/// 100 requests a minute of job `shop` from `start`, `bad(m)` of them errors in minute m.
async fn write_shop_traffic(engine: &QueryEngine, start: i64, minutes: i64, bad: impl Fn(i64) -> f64) {
    let batch = WriteBatch {
        metrics: vec![
            counter("requests_total", &[("job", "shop")], start, minutes, |_| 100.0, None, None),
            counter("errors_total", &[("job", "shop")], start, minutes, bad, None, None),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
}

async fn evaluate(engine: &QueryEngine, yaml: &str, now: i64) -> Vec<SloStatus> {
    let definitions = load_texts(&[("t.yaml".into(), yaml.into())], None).unwrap_or_else(|e| panic!("{e:?}"));
    let evaluator = SloEvaluator::new(engine.clone());
    evaluator.set_definitions(definitions).await;
    evaluator.settle(now).await
}

fn close(actual: Option<f64>, expected: f64) {
    let actual = actual.unwrap_or(f64::NAN);
    assert!((actual - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{actual} vs {expected}");
}

fn slo(name: &str, objective: &str, window: &str, sli: &str) -> String {
    format!(
        "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: {name}, service: shop}}\nspec:\n  objective: {objective}\n  window: {window}\n  sli: {sli}\n"
    )
}

/// Total 100/min for 3 days; bad 1/min, but 10/min during the last 2 hours.
fn bad_rate(m: i64, minutes: i64) -> f64 {
    if m >= minutes - 120 { 10.0 } else { 1.0 }
}

#[tokio::test]
async fn ratio_sli_budget_and_every_burn_rate() {
    let (engine, _dir) = engine().await;
    let minutes = 3 * 24 * 60;
    let start = NOW - minutes * MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            counter("requests_total", &[("job", "shop")], start, minutes, |_| 100.0, None, None),
            counter("errors_total", &[("job", "shop")], start, minutes, |m| bad_rate(m, minutes), None, None),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let yaml =
        slo("avail", "97", "1d", "{ratio: {bad: 'errors_total{job=\"shop\"}', total: 'requests_total{job=\"shop\"}'}}");
    let status = &evaluate(&engine, &yaml, NOW).await[0];
    // Last day: 120 minutes at 10, 1320 at 1, of 144000.
    let bad_day = 10.0 * 120.0 + 1320.0;
    close(status.sli, 1.0 - bad_day / 144_000.0);
    close(Some(status.total), 144_000.0);
    close(status.error_budget_remaining, 1.0 - (bad_day / 144_000.0) / 0.03);
    let burn = |bad: f64, total: f64| Some((bad / total) / 0.03);
    close(status.burn_rates["5m"], burn(0.1, 1.0).unwrap());
    close(status.burn_rates["2h"], burn(0.1, 1.0).unwrap());
    close(status.burn_rates["6h"], burn(1200.0 + 240.0, 36_000.0).unwrap());
    close(status.burn_rates["1d"], burn(bad_day, 144_000.0).unwrap());
    close(status.burn_rates["3d"], burn(1200.0 + (4320.0 - 120.0), 432_000.0).unwrap());
    // A 1-day window scales the alert windows by 1/30: 3.3x over the last 48 min (and 1x over
    // 2.4 h) is a ticket, not a page.
    assert_eq!(status.state, "burning");
    assert!(status.conditions.iter().filter(|c| c.severity == "page").all(|c| !c.active));
    assert!(status.conditions.iter().filter(|c| c.severity == "ticket").all(|c| c.active));
    // 1 hour burn = 3.33: remaining × 1 day / 3.33.
    close(status.time_to_exhaustion_seconds, status.error_budget_remaining.unwrap() * 86_400.0 / (0.1 / 0.03));

    // A page-level burn: objective 99.5% makes the last hour burn 20x.
    let yaml = slo("tight", "99.5", "30d", "{ratio: {good: 'requests_total', total: 'requests_total'}}");
    let all_good = &evaluate(&engine, &yaml, NOW).await[0];
    close(all_good.sli, 1.0);
    close(all_good.burn_rates["5m"], 0.0);
    let yaml = slo("burning", "99.5", "30d", "{ratio: {bad: 'errors_total', total: 'requests_total'}}");
    let burning = &evaluate(&engine, &yaml, NOW).await[0];
    close(burning.burn_rates["1h"], 0.1 / 0.005);
    assert_eq!(burning.state, "exhausted", "3 days of 1% errors exhaust a 0.5% budget");
    let page = burning.conditions.iter().find(|c| c.severity == "page" && c.long_window == "1h").unwrap();
    assert!(page.active);
}

#[tokio::test]
async fn counter_resets_gaps_and_no_data() {
    let (engine, _dir) = engine().await;
    let minutes = 600;
    let start = NOW - minutes * MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            // The total restarts from zero at minute 300 and misses samples for 30 minutes.
            counter("reqs_total", &[], start, minutes, |_| 60.0, Some(300), Some((400, 430))),
            counter("errs_total", &[], start, minutes, |_| 0.6, Some(300), None),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let yaml = slo("resets", "99", "12h", "{ratio: {bad: 'errs_total', total: 'reqs_total'}}");
    let status = &evaluate(&engine, &yaml, NOW).await[0];
    close(Some(status.total), 60.0 * 600.0);
    close(status.sli, 0.99);
    // The gap's events land when the series resumes: a 30-minute window over the gap is empty...
    let gap_end = start + 430 * MINUTE;
    let evaluator_at = |t: i64| {
        let engine = engine.clone();
        let yaml = yaml.clone();
        async move { evaluate(&engine, &yaml, t).await.remove(0) }
    };
    let during = evaluator_at(gap_end - MINUTE).await;
    assert_eq!(during.burn_rates["5m"], None, "no total events during the gap");
    // ...and a window that spans it counts all of them.
    let after = evaluator_at(gap_end + 5 * MINUTE).await;
    close(Some(after.total), 60.0 * 435.0);

    let yaml = slo("nothing", "99", "1d", "{ratio: {bad: 'missing_errors_total', total: 'missing_total'}}");
    let none = &evaluate(&engine, &yaml, NOW).await[0];
    assert_eq!((none.state.as_str(), none.sli), ("no_data", None));
}

#[tokio::test]
async fn latency_from_buckets_and_thresholds_that_are_no_bucket() {
    let (engine, _dir) = engine().await;
    let minutes = 120;
    let start = NOW - minutes * MINUTE;
    let bucket = |le: &str, per_minute: f64| {
        counter(
            "latency_seconds_bucket",
            &[("job", "api"), ("le", le)],
            start,
            minutes,
            move |_| per_minute,
            None,
            None,
        )
    };
    let batch =
        WriteBatch { metrics: vec![bucket("0.1", 50.0), bucket("0.3", 95.0), bucket("+Inf", 100.0)], rows: vec![] };
    engine.storage().write(batch).await.unwrap();
    let ok = slo("lat", "90", "1h", "{latency: {histogram: 'latency_seconds{job=\"api\"}', threshold: 0.3}}");
    let status = &evaluate(&engine, &ok, NOW).await[0];
    close(status.sli, 0.95);
    close(status.burn_rates["30m"], 0.05 / 0.1);
    let wrong =
        slo("lat", "90", "1h", "{latency: {histogram: 'latency_seconds_bucket{job=\"api\"}', threshold: 0.25}}");
    let status = &evaluate(&engine, &wrong, NOW).await[0];
    assert_eq!(status.state, "error");
    assert_eq!(
        status.error.as_deref(),
        Some("latency threshold 0.25 is no bucket bound of latency_seconds_bucket; the bounds are 0.1, 0.3, +Inf")
    );
}

fn dictionary(values: Vec<&str>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>())
}

fn timestamps(values: Vec<i64>) -> ArrayRef {
    Arc::new(
        TimestampNanosecondArray::from(values.into_iter().map(|ms| ms * 1_000_000).collect::<Vec<_>>())
            .with_timezone("UTC"),
    )
}

#[tokio::test]
async fn spans_drift_and_sql_slis() {
    let (engine, _dir) = engine().await;
    // 60 spans of POST /pay in the last hour: every 10th failed, every 5th took 2 s.
    let n = 60;
    let starts: Vec<i64> = (0..n).map(|i| NOW - HOUR + i * MINUTE + 1000).collect();
    let statuses: Vec<&str> = (0..n).map(|i| if i % 10 == 0 { "error" } else { "ok" }).collect();
    let durations: Vec<i64> = (0..n).map(|i| if i % 5 == 1 { 2_000_000_000 } else { 100_000_000 }).collect();
    let schema = FixedTable::Spans.schema();
    let nulls = |i: usize| datafusion::arrow::array::new_null_array(schema.field(i).data_type(), n as usize);
    // The failures on /pay/card, the slow ones on /pay/wallet, the rest on /pay/cash.
    let mut routes = vigil_storage::schema::string_map_builder();
    for i in 0..n {
        routes.keys().append_value("http.route");
        routes.values().append_value(match i {
            _ if i % 10 == 0 => "/pay/card",
            _ if i % 5 == 1 => "/pay/wallet",
            _ => "/pay/cash",
        });
        routes.append(true).unwrap();
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["0123456789abcdef0123456789abcdef"; n as usize])),
        Arc::new(StringArray::from((0..n).map(|i| format!("{i:016x}")).collect::<Vec<_>>())),
        nulls(2),
        nulls(3),
        dictionary(vec!["payments"; n as usize]),
        dictionary(vec!["POST /pay"; n as usize]),
        dictionary(vec!["server"; n as usize]),
        timestamps(starts.clone()),
        timestamps(starts.iter().zip(&durations).map(|(s, d)| s + d / 1_000_000).collect()),
        Arc::new(Int64Array::from(durations)),
        dictionary(statuses),
        nulls(11),
        Arc::new(routes.finish()),
        nulls(13),
        nulls(14),
        nulls(15),
        nulls(16),
        nulls(17),
    ];
    let spans = RecordBatch::try_new(schema.clone(), columns).unwrap();
    // Hourly PSI over 10 hours: 3 of them above 0.2.
    let hours = 10;
    let scores: Vec<f64> = (0..hours).map(|h| if h % 4 == 1 { 0.3 } else { 0.05 }).collect();
    let score_times: Vec<i64> = (0..hours).map(|h| NOW - (hours - h) * HOUR + 30 * MINUTE).collect();
    let drift = RecordBatch::try_new(
        FixedTable::DriftScores.schema(),
        vec![
            timestamps(score_times.clone()),
            timestamps(score_times.iter().map(|t| t + HOUR).collect()),
            dictionary(vec!["fraud"; hours as usize]),
            dictionary(vec!["v1"; hours as usize]),
            dictionary(vec!["amount"; hours as usize]),
            dictionary(vec!["psi"; hours as usize]),
            Arc::new(Float64Array::from(scores)),
            Arc::new(UInt64Array::from(vec![1000u64; hours as usize])),
            Arc::new(UInt64Array::from(vec![100u64; hours as usize])),
            Arc::new(datafusion::arrow::array::StringArray::from(vec![Some("ref"); hours as usize])),
        ],
    )
    .unwrap();
    engine
        .storage()
        .write(WriteBatch {
            metrics: vec![],
            rows: vec![
                TableRows { table: FixedTable::Spans, batch: spans },
                TableRows { table: FixedTable::DriftScores, batch: drift },
            ],
        })
        .await
        .unwrap();

    let yaml = slo(
        "pay",
        "90",
        "1d",
        "{spans: {service: payments, name: \"POST /pay\", good: {status: [unset, ok], max_duration: 1s}}}",
    );
    let status = &evaluate(&engine, &yaml, NOW).await[0];
    // Bad: 6 errors, 12 slow, 0 both (i%10==0 and i%5==1 never meet): 18 of 60.
    close(status.sli, 42.0 / 60.0);
    // Attributed: the slow /pay/wallet spans carry two thirds of the burn, the failing
    // /pay/card ones a third; the newest failing span of the top route is the exemplar.
    let definition = load_texts(&[("t.yaml".into(), yaml.clone())], None).unwrap().remove(0);
    let attribution =
        super::attribution::attribute(&engine, &definition, std::time::Duration::from_secs(3600), NOW).await.unwrap();
    close(Some(attribution.bad_events), 18.0);
    let routes = &attribution.dimensions[0];
    assert_eq!(routes.label, "http.route", "span.name is the same on every span: {attribution:?}");
    assert_eq!(routes.contributors.len(), 2, "no good span counts: {attribution:?}");
    assert_eq!((routes.contributors[0].value.as_str(), routes.contributors[0].bad_events), ("/pay/wallet", 12.0));
    close(Some(routes.contributors[1].share), 1.0 / 3.0);
    assert_eq!(attribution.exemplars[0].span_id.as_deref(), Some(format!("{:016x}", 56).as_str()));
    assert_eq!(attribution.summary(), "http.route=/pay/wallet 67% (of 18 bad events)");
    let yaml =
        slo("drift", "90", "1d", "{drift: {model: fraud, feature: amount, statistic: psi, below: 0.2, slice: 1h}}");
    let status = &evaluate(&engine, &yaml, NOW).await[0];
    close(Some(status.total), 10.0);
    close(status.sli, 0.7);
    let yaml = slo(
        "sqlspans",
        "90",
        "1d",
        "{sql: {bad: \"SELECT start AS timestamp FROM spans WHERE status = 'error'\", total: 'SELECT start AS timestamp FROM spans'}}",
    );
    let status = &evaluate(&engine, &yaml, NOW).await[0];
    close(status.sli, 54.0 / 60.0);
}

#[tokio::test]
async fn the_three_dialects_give_the_same_numbers() {
    let (engine, _dir) = engine().await;
    let minutes = 2 * 24 * 60;
    let start = NOW - minutes * MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            counter(
                "http_requests_total",
                &[("job", "checkout"), ("code", "200")],
                start,
                minutes,
                |m| 100.0 + (m % 7) as f64,
                None,
                None,
            ),
            counter(
                "http_requests_total",
                &[("job", "checkout"), ("code", "500")],
                start,
                minutes,
                |m| if m % 60 < 5 { 8.0 } else { 0.5 },
                None,
                None,
            ),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let vigil = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: v, service: checkout}\nspec:\n  objective: 99.9\n  window: 1d\n  sli: {ratio: {bad: 'http_requests_total{job=\"checkout\", code=~\"5..\"}', total: 'http_requests_total{job=\"checkout\"}'}}\n";
    let sloth = "version: prometheus/v1\nservice: checkout\nslos:\n  - name: s\n    objective: 99.9\n    sli:\n      events:\n        error_query: sum(rate(http_requests_total{job=\"checkout\",code=~\"5..\"}[{{.window}}]))\n        total_query: sum(rate(http_requests_total{job=\"checkout\"}[{{.window}}]))\n---\napiVersion: sloth.slok.dev/v1\nkind: AlertWindows\nspec:\n  sloPeriod: 1d\n  page:\n    quick: {errorBudgetPercent: 2, shortWindow: 5m, longWindow: 1h}\n    slow: {errorBudgetPercent: 5, shortWindow: 30m, longWindow: 6h}\n  ticket:\n    quick: {errorBudgetPercent: 10, shortWindow: 2h, longWindow: 1d}\n    slow: {errorBudgetPercent: 10, shortWindow: 6h, longWindow: 3d}\n";
    let openslo = "apiVersion: openslo/v1\nkind: Service\nmetadata: {name: checkout}\nspec: {}\n---\napiVersion: openslo/v1\nkind: SLO\nmetadata: {name: o}\nspec:\n  service: checkout\n  indicator:\n    metadata: {name: good}\n    spec:\n      ratioMetric:\n        counter: true\n        good: {metricSource: {type: Prometheus, spec: {query: 'sum(http_requests_total{job=\"checkout\",code!~\"5..\"})'}}}\n        total: {metricSource: {type: Prometheus, spec: {query: 'sum(http_requests_total{job=\"checkout\"})'}}}\n  timeWindow: [{duration: 1d, isRolling: true}]\n  budgetingMethod: Occurrences\n  objectives: [{target: 0.999}]\n";
    let v = evaluate(&engine, vigil, NOW).await.remove(0);
    let s = evaluate(&engine, sloth, NOW).await.remove(0);
    let o = evaluate(&engine, openslo, NOW).await.remove(0);
    for other in [&s, &o] {
        close(other.sli, v.sli.unwrap());
        close(other.error_budget_remaining, v.error_budget_remaining.unwrap());
        for window in ["5m", "30m", "1h", "6h", "1d"] {
            close(other.burn_rates[window], v.burn_rates[window].unwrap());
        }
    }
}

#[tokio::test]
async fn calendar_months_in_a_time_zone_and_time_slices() {
    let (engine, _dir) = engine().await;
    // 2024-03-02T10:00Z; March began at 2024-02-29T23:00Z in Paris.
    let now = 1_709_373_600_000;
    let minutes = 5 * 24 * 60;
    let start = now - minutes * MINUTE;
    let march_paris = 1_709_247_600_000;
    let first_march_minute = (march_paris - start) / MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            counter("cal_total", &[], start, minutes, |_| 10.0, None, None),
            counter(
                "cal_errors_total",
                &[],
                start,
                minutes,
                move |m| if m < first_march_minute { 5.0 } else { 0.1 },
                None,
                None,
            ),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let yaml = slo(
        "cal",
        "95",
        "{calendar: month, timeZone: Europe/Paris}",
        "{ratio: {bad: 'cal_errors_total', total: 'cal_total'}}",
    );
    let status = &evaluate(&engine, &yaml, now).await[0];
    close(Some(status.total), 10.0 * ((now - march_paris) / MINUTE) as f64);
    close(status.sli, 0.99);
    let utc =
        slo("cal", "95", "{calendar: month, timeZone: UTC}", "{ratio: {bad: 'cal_errors_total', total: 'cal_total'}}");
    let status_utc = &evaluate(&engine, &utc, now).await[0];
    assert!(status_utc.total < status.total, "March starts an hour later in UTC");

    // Time slices of 1 hour, good when 98.5% of the hour's requests are good: the hours
    // before March (50% errors) are bad, the March ones (1%) are good.
    let slices = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: sl, service: shop}\nspec:\n  objective: 90\n  window: 2d\n  budgeting: {timeslices: {slice: 1h, target: 0.985}}\n  sli: {ratio: {bad: 'cal_errors_total', total: 'cal_total'}}\n".to_string();
    let status = &evaluate(&engine, &slices, now).await[0];
    // 48 slices: the last 35 hours are March (good), 13 before (bad); the open slice is empty at :00.
    let good_hours = ((now - march_paris) / HOUR) as f64;
    close(Some(status.total), 48.0);
    close(status.sli, good_hours / 48.0);
}

#[tokio::test]
async fn incremental_evaluation_equals_a_fresh_backfill() {
    let (engine, _dir) = engine().await;
    let minutes = 24 * 60;
    let start = NOW - minutes * MINUTE;
    let pattern = |m: i64| if m % 90 < 10 { 3.0 } else { 0.2 };
    let write = |from: i64, count: i64| {
        let engine = engine.clone();
        async move {
            let total = counter("inc_total", &[], start, from + count, |_| 20.0, None, None);
            let bad = counter("inc_errors_total", &[], start, from + count, pattern, None, None);
            let keep = |mut s: MetricSeries| {
                s.samples.retain(|x| x.timestamp_ns > (start + from * MINUTE) * 1_000_000 - 1);
                s
            };
            engine.storage().write(WriteBatch { metrics: vec![keep(total), keep(bad)], rows: vec![] }).await.unwrap();
        }
    };
    write(0, minutes - 30).await;
    let yaml = slo("inc", "99", "12h", "{ratio: {bad: 'inc_errors_total', total: 'inc_total'}}");
    let definitions = load_texts(&[("t.yaml".into(), yaml.clone())], None).unwrap();
    let incremental = SloEvaluator::new(engine.clone());
    incremental.set_definitions(definitions).await;
    incremental.settle(NOW - 30 * MINUTE).await;
    // Thirty more minutes arrive, in two parts, evaluated as they come.
    write(minutes - 30, 15).await;
    incremental.evaluate(NOW - 15 * MINUTE).await;
    write(minutes - 15, 15).await;
    let stepped = incremental.evaluate(NOW).await.remove(0);
    let fresh = evaluate(&engine, &yaml, NOW).await.remove(0);
    close(stepped.sli, fresh.sli.unwrap());
    close(Some(stepped.total), fresh.total);
    for window in ["5m", "30m", "1h", "6h", "1d"] {
        close(stepped.burn_rates[window], fresh.burn_rates[window].unwrap());
    }
}

#[tokio::test]
async fn grouping_gives_one_slo_per_label_value() {
    let (engine, _dir) = engine().await;
    let minutes = 120;
    let start = NOW - minutes * MINUTE;
    let mut metrics = Vec::new();
    for (route, errors) in [("/pay", 5.0), ("/cart", 1.0)] {
        metrics.push(counter("grouped_total", &[("route", route), ("pod", "a")], start, minutes, |_| 50.0, None, None));
        metrics.push(counter("grouped_total", &[("route", route), ("pod", "b")], start, minutes, |_| 50.0, None, None));
        metrics.push(counter(
            "grouped_errors_total",
            &[("route", route), ("pod", "a")],
            start,
            minutes,
            move |_| errors,
            None,
            None,
        ));
    }
    engine.storage().write(WriteBatch { metrics, rows: vec![] }).await.unwrap();
    let yaml = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: g, service: shop}\nspec:\n  objective: 99\n  window: 1h\n  group_by: [route]\n  sli: {ratio: {bad: grouped_errors_total, total: grouped_total}}\n";
    let statuses = evaluate(&engine, yaml, NOW).await;
    assert_eq!(statuses.len(), 2);
    let by_route =
        |route: &str| statuses.iter().find(|s| s.group.get("route").map(String::as_str) == Some(route)).unwrap();
    close(by_route("/pay").sli, 1.0 - 5.0 / 100.0);
    close(by_route("/cart").sli, 1.0 - 1.0 / 100.0);
    assert_eq!(by_route("/pay").id(), "g{route=\"/pay\"}");
}

/// Writes `series` keeping only the samples in minutes `[from, to)` after `start`.
async fn write_minutes(engine: &QueryEngine, series: &[MetricSeries], start: i64, from: i64, to: i64) {
    let (low, high) = ((start + from * MINUTE) * 1_000_000, (start + to * MINUTE) * 1_000_000);
    let metrics = series
        .iter()
        .map(|s| MetricSeries {
            samples: s.samples.iter().filter(|x| x.timestamp_ns > low - 1 && x.timestamp_ns < high).cloned().collect(),
            ..s.clone()
        })
        .collect();
    engine.storage().write(WriteBatch { metrics, rows: vec![] }).await.unwrap();
}

fn same_numbers(stepped: &SloStatus, fresh: &SloStatus) {
    close(stepped.sli, fresh.sli.unwrap());
    close(Some(stepped.total), fresh.total);
    close(Some(stepped.good), fresh.good);
    for (window, rate) in &fresh.burn_rates {
        match rate {
            Some(rate) => close(stepped.burn_rates[window], *rate),
            None => assert_eq!(stepped.burn_rates[window], None, "{window}"),
        }
    }
}

#[tokio::test]
async fn late_samples_at_any_age_reach_the_sli_budget_and_burn_rates() {
    let (engine, _dir) = engine().await;
    let minutes = 6 * 24 * 60;
    let start = NOW - minutes * MINUTE;
    let series = [
        counter("late_total", &[], start, minutes, |_| 50.0, None, None),
        counter("late_errors_total", &[], start, minutes, |m| if m % 120 < 20 { 9.0 } else { 0.5 }, None, None),
    ];
    // A replica whose samples of five days ago only come in a backfill, now.
    let backfilled = counter("late_errors_total", &[("replica", "b")], start, minutes, |_| 3.0, None, None);
    // Everything but two holes: across the 1h burn window's edge (minute buckets), and five
    // days ago (hour buckets only).
    let recent_hole = (minutes - 75, minutes - 45);
    let old_hole = (minutes - 5 * 24 * 60 + 7, minutes - 5 * 24 * 60 + 130);
    write_minutes(&engine, &series, start, 0, old_hole.0).await;
    write_minutes(&engine, &series, start, old_hole.1, recent_hole.0).await;
    let yaml = slo("late", "99", "7d", "{ratio: {bad: 'late_errors_total', total: 'late_total'}}");
    let evaluator = SloEvaluator::new(engine.clone());
    evaluator.set_definitions(load_texts(&[("t.yaml".into(), yaml.clone())], None).unwrap()).await;
    evaluator.settle(NOW - 60 * MINUTE).await;
    write_minutes(&engine, &series, start, recent_hole.1, minutes - 30).await;
    evaluator.evaluate(NOW - 30 * MINUTE).await;
    // The holes arrive 30 minutes and five days late, with the backfill.
    write_minutes(&engine, &series, start, recent_hole.0, recent_hole.1).await;
    write_minutes(&engine, &series, start, old_hole.0, old_hole.1).await;
    write_minutes(&engine, std::slice::from_ref(&backfilled), start, old_hole.0, old_hole.1).await;
    write_minutes(&engine, &series, start, minutes - 30, minutes + 1).await;
    let stepped = evaluator.evaluate(NOW).await.remove(0);
    let fresh = evaluate(&engine, &yaml, NOW).await.remove(0);
    same_numbers(&stepped, &fresh);
    // And the numbers are those of the data: the 7 d window holds the 6 days written, and
    // the backfilled replica's errors after its first sample (a quarter minute in).
    close(Some(fresh.total), 50.0 * minutes as f64);
    let bad: f64 = (0..minutes).map(|m| if m % 120 < 20 { 9.0 } else { 0.5 }).sum::<f64>()
        + 3.0 * (old_hole.1 - old_hole.0) as f64
        - 0.75;
    close(Some(fresh.total - fresh.good), bad);
}

#[tokio::test]
async fn promql_slis_hold_over_thirty_days() {
    let (engine, _dir) = engine().await;
    let minutes = 31 * 24 * 60;
    let start = NOW - minutes * MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            counter("month_requests_total", &[("code", "200")], start, minutes, |_| 60.0, None, None),
            counter(
                "month_requests_total",
                &[("code", "500")],
                start,
                minutes,
                |m| if m % 1000 < 30 { 6.0 } else { 0.06 },
                None,
                None,
            ),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let vigil = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: v, service: month}\nspec:\n  objective: 99.5\n  window: 30d\n  sli: {ratio: {bad: 'month_requests_total{code=~\"5..\"}', total: 'month_requests_total'}}\n";
    let sloth = "version: prometheus/v1\nservice: month\nslos:\n  - name: s\n    objective: 99.5\n    sli:\n      events:\n        error_query: sum(rate(month_requests_total{code=~\"5..\"}[{{.window}}]))\n        total_query: sum(rate(month_requests_total[{{.window}}]))\n";
    let v = evaluate(&engine, vigil, NOW).await.remove(0);
    let s = evaluate(&engine, sloth, NOW).await.remove(0);
    assert_eq!(s.error, None, "{s:?}");
    assert_eq!(s.window, "30d");
    close(s.sli, v.sli.unwrap());
    close(Some(s.total), v.total);
    close(s.error_budget_remaining, v.error_budget_remaining.unwrap());
}

#[tokio::test]
async fn saved_state_resumes_where_it_was_and_only_for_the_same_definition() {
    let (full, _full_dir) = engine().await;
    let minutes = 2 * 24 * 60;
    let start = NOW - minutes * MINUTE;
    let series = [
        counter("resume_total", &[("job", "a")], start, minutes + 10, |_| 40.0, None, None),
        counter(
            "resume_errors_total",
            &[("job", "a")],
            start,
            minutes + 10,
            |m| if m % 50 < 5 { 4.0 } else { 0.1 },
            None,
            None,
        ),
    ];
    write_minutes(&full, &series, start, 0, minutes + 11).await;
    let yaml = slo("resume", "99", "1d", "{ratio: {bad: 'resume_errors_total', total: 'resume_total'}}");
    let definitions = load_texts(&[("t.yaml".into(), yaml.clone())], None).unwrap();
    let before = SloEvaluator::new(full.clone());
    before.set_definitions(definitions.clone()).await;
    before.settle(NOW).await;
    let state_dir = tempfile::tempdir().unwrap();
    let path = super::persist::state_path(state_dir.path());
    assert_eq!(before.save(&path).await.unwrap(), 1);

    // A store holding only the last half hour: only a resumed state knows the day before.
    let (recent, _recent_dir) = engine().await;
    write_minutes(&recent, &series, start, minutes - 20, minutes + 11).await;
    // These writes stand for what the saved state had already taken in: no late change.
    recent.storage().drain_changes();
    let after = SloEvaluator::new(recent.clone());
    after.set_definitions(definitions).await;
    assert_eq!(after.restore(&path, NOW + 10 * MINUTE).await.unwrap(), 1);
    let resumed = after.evaluate(NOW + 10 * MINUTE).await.remove(0);
    let fresh = evaluate(&full, &yaml, NOW + 10 * MINUTE).await.remove(0);
    same_numbers(&resumed, &fresh);

    // An edited definition does not take up the old state.
    let edited = load_texts(&[("t.yaml".into(), yaml.replace("objective: 99", "objective: 98"))], None).unwrap();
    let other = SloEvaluator::new(recent.clone());
    other.set_definitions(edited).await;
    assert_eq!(other.restore(&path, NOW + 10 * MINUTE).await.unwrap(), 0);
    assert!(
        other.settle(NOW + 10 * MINUTE).await[0].total < fresh.total / 10.0,
        "a backfill from the recent store only"
    );
}

#[tokio::test]
async fn a_new_slo_backfills_in_the_background_while_the_others_are_evaluated() {
    let (engine, _dir) = engine().await;
    let minutes = 3 * 24 * 60;
    let start = NOW - minutes * MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            counter("bg_total", &[], start, minutes, |_| 10.0, None, None),
            counter("bg_errors_total", &[], start, minutes, |m| if m % 10 == 0 { 0.5 } else { 0.0 }, None, None),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let existing = slo("existing", "99", "1d", "{ratio: {bad: 'bg_errors_total', total: 'bg_total'}}");
    let added = slo("added", "99", "3d", "{ratio: {bad: 'bg_errors_total', total: 'bg_total'}}");
    let evaluator = SloEvaluator::new(engine.clone());
    evaluator.set_definitions(load_texts(&[("a.yaml".into(), existing.clone())], None).unwrap()).await;
    let first = evaluator.settle(NOW - 2 * MINUTE).await;
    assert_eq!(first[0].state, "ok");
    evaluator
        .set_definitions(load_texts(&[("a.yaml".into(), existing), ("b.yaml".into(), added)], None).unwrap())
        .await;
    let during = evaluator.evaluate(NOW - MINUTE).await;
    let by_name = |statuses: &[SloStatus], name: &str| statuses.iter().find(|s| s.name == name).cloned().unwrap();
    let (kept, new) = (by_name(&during, "existing"), by_name(&during, "added"));
    assert!(
        kept.sli.is_some() && kept.evaluated_at_ms == NOW - MINUTE,
        "the existing SLO is evaluated on schedule: {kept:?}"
    );
    assert_eq!(new.state, "backfilling");
    assert_eq!((new.sli, new.error_budget_remaining), (None, None), "no made-up numbers while backfilling");
    assert!(new.backfill_progress.is_some_and(|p| (0.0..=1.0).contains(&p)));
    let done = evaluator.settle(NOW).await;
    let new = by_name(&done, "added");
    close(new.sli, 1.0 - 0.05 / 10.0);
    assert_eq!(new.backfill_progress, None);
}

#[tokio::test]
async fn slos_sharing_a_table_each_get_their_own_series() {
    let (engine, _dir) = engine().await;
    let minutes = 6 * 60;
    let start = NOW - minutes * MINUTE;
    let mut metrics = Vec::new();
    for (route, bad_per_minute) in [("/a", 1.0), ("/b", 5.0), ("/c", 20.0)] {
        metrics.push(counter("shared_requests_total", &[("route", route)], start, minutes, |_| 100.0, None, None));
        metrics.push(counter(
            "shared_errors_total",
            &[("route", route)],
            start,
            minutes,
            move |_| bad_per_minute,
            None,
            None,
        ));
    }
    engine.storage().write(WriteBatch { metrics, rows: Vec::new() }).await.unwrap();
    let ratio = |matchers: &str| {
        format!("{{ratio: {{bad: 'shared_errors_total{{{matchers}}}', total: 'shared_requests_total{{{matchers}}}'}}}}")
    };
    let cases = [
        ("only-a", "route=\"/a\"", 1.0),
        ("a-or-b", "route=~\"/(a|b)\"", 3.0),
        ("not-c", "route!=\"/c\"", 3.0),
        ("all", "", 26.0 / 3.0),
        ("no-route", "route=\"\"", f64::NAN),
    ];
    let yaml: Vec<String> = cases.iter().map(|(name, matchers, _)| slo(name, "99", "1d", &ratio(matchers))).collect();
    let together = evaluate(&engine, &yaml.join("---\n"), NOW).await;
    for ((name, _, bad_percent), status) in cases.iter().zip(&together) {
        assert_eq!(&status.name, name);
        if bad_percent.is_nan() {
            assert_eq!(status.sli, None, "{name}: no series match");
            continue;
        }
        close(status.sli, 1.0 - bad_percent / 100.0);
        // The same SLO alone reads the table on its own: the numbers are the same.
        let alone = evaluate(&engine, &yaml[together.iter().position(|s| &s.name == name).unwrap()], NOW).await;
        same_numbers(&alone[0], status);
    }
}

/// The evaluation loop reads "now" from its clock, evaluates only while its node is active,
/// hands every cycle on, and saves the state when it stops.
#[tokio::test]
async fn the_loop_evaluates_on_its_clock_while_active_and_saves_at_the_end() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use vigil_storage::clock::{Clock, ManualClock};

    use super::schedule::Schedule;

    let (engine, dir) = engine().await;
    let yaml = slo("looped", "99", "1h", "{ratio: {bad: 'errs_total', total: 'reqs_total'}}");
    let definitions = load_texts(&[("t.yaml".into(), yaml)], None).unwrap();
    let evaluator = Arc::new(SloEvaluator::new(engine.clone()));
    evaluator.set_definitions(definitions).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let active = Arc::new(AtomicBool::new(false));
    let cycles: Arc<std::sync::Mutex<Vec<(usize, Vec<i64>)>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let state_path = dir.path().join("slo-state");
    // An hour at first: after the first tick (on standby) nothing runs until a reload
    // shortens the period.
    let schedule =
        Schedule { every: Duration::from_secs(3600), save_every: Duration::ZERO, state_path: state_path.clone() };
    let (reload, schedules) = tokio::sync::watch::channel(schedule.clone());
    let task = tokio::spawn(evaluator.clone().run(
        schedules,
        clock.clone(),
        {
            let active = active.clone();
            move || active.load(Ordering::SeqCst)
        },
        {
            let cycles = cycles.clone();
            move |definitions, statuses| {
                let cycles = cycles.clone();
                async move {
                    let at = statuses.iter().map(|s| s.evaluated_at_ms).collect();
                    cycles.lock().unwrap().push((definitions.len(), at));
                }
            }
        },
        {
            let stop = stop.clone();
            async move { stop.notified().await }
        },
    ));
    let wait_for = |wanted: i64| {
        let cycles = cycles.clone();
        async move {
            for _ in 0..500 {
                if cycles.lock().unwrap().iter().any(|(_, at)| at.contains(&wanted)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no cycle evaluated at {wanted}");
        }
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(cycles.lock().unwrap().is_empty(), "a standby node evaluates nothing");
    active.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(cycles.lock().unwrap().is_empty(), "the next cycle is an hour away");
    reload.send_modify(|s| s.every = Duration::from_millis(20));
    wait_for(NOW).await;
    clock.advance(Duration::from_secs(60));
    wait_for(NOW + MINUTE).await;
    assert!(
        cycles
            .lock()
            .unwrap()
            .iter()
            .all(|(definitions, at)| *definitions == 1 && at.len() == 1 && at[0] <= clock.now_ms())
    );
    assert!(!state_path.exists(), "save_every zero: saved at the end only");
    stop.notify_one();
    task.await.unwrap();
    assert!(state_path.exists(), "saved when the loop stopped");
}

/// An SLO is listed from the moment it is defined — new ones, and edited ones (whose old
/// numbers belong to the old definition), as backfilling and not evaluated yet; an unchanged
/// one keeps its numbers; a removed one goes.
#[tokio::test]
async fn defined_slos_are_listed_before_their_first_evaluation() {
    let (engine, _dir) = engine().await;
    let sli = "{ratio: {bad: 'errors_total', total: 'requests_total'}}";
    let evaluator = SloEvaluator::new(engine);
    let texts = |slos: &[(&str, &str)]| {
        let yaml: Vec<String> = slos.iter().map(|(name, objective)| slo(name, objective, "1d", sli)).collect();
        load_texts(&[("t.yaml".into(), yaml.join("---\n"))], None).unwrap()
    };
    evaluator.set_definitions(texts(&[("kept", "99"), ("edited", "99"), ("removed", "99")])).await;
    let listed = evaluator.statuses();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|s| s.state == super::evaluate::SloState::Backfilling && s.evaluated_at_ms == 0));
    let evaluated = evaluator.settle(NOW).await;
    assert!(evaluated.iter().all(|s| s.evaluated_at_ms == NOW), "{evaluated:?}");

    evaluator.set_definitions(texts(&[("kept", "99"), ("edited", "99.9"), ("added", "99")])).await;
    let mut listed: Vec<(String, i64)> =
        evaluator.statuses().into_iter().map(|s| (s.name, s.evaluated_at_ms)).collect();
    listed.sort();
    assert_eq!(listed, [("added".into(), 0), ("edited".into(), 0), ("kept".into(), NOW)]);
}

/// A composite of two SLOs with constant SLIs: by events it is their pooled ratio, by
/// declared weights the weighted mean of their ratios; a part that cannot be computed makes
/// the composite an error that names it.
#[tokio::test]
async fn composite_slis_have_the_weighted_closed_form() {
    let (engine, _dir) = engine().await;
    let minutes = 120;
    let start = NOW - minutes * MINUTE;
    let batch = WriteBatch {
        metrics: vec![
            // A: 100 a minute, 1 bad (99 %); B: 300 a minute, 30 bad (90 %).
            counter("a_total", &[], start, minutes, |_| 100.0, None, None),
            counter("a_errors_total", &[], start, minutes, |_| 1.0, None, None),
            counter("b_total", &[], start, minutes, |_| 300.0, None, None),
            counter("b_errors_total", &[], start, minutes, |_| 30.0, None, None),
            counter("lat_seconds_bucket", &[("le", "0.1")], start, minutes, |_| 50.0, None, None),
            counter("lat_seconds_bucket", &[("le", "+Inf")], start, minutes, |_| 60.0, None, None),
        ],
        rows: vec![],
    };
    engine.storage().write(batch).await.unwrap();
    let parts = [
        slo("a", "99", "1h", "{ratio: {bad: a_errors_total, total: a_total}}"),
        slo("b", "95", "1h", "{ratio: {bad: b_errors_total, total: b_total}}"),
    ]
    .join("---\n");
    let composite = |weighting: &str| {
        format!(
            "---\n{}",
            slo(
                "ab",
                "95",
                "1h",
                &format!("{{composite: {{weighting: {weighting}, parts: [{{slo: a, weight: 3}}, {{slo: b}}]}}}}")
            )
        )
    };
    let by_events = evaluate(&engine, &format!("{parts}{}", composite("events")), NOW).await;
    let ab = by_events.iter().find(|s| s.name == "ab").unwrap();
    // Events weighted 3:1: good = 3·99 + 270 per minute of 3·100 + 300.
    close(ab.sli, (3.0 * 99.0 + 270.0) / (3.0 * 100.0 + 300.0));
    close(ab.error_budget_remaining, 1.0 - (1.0 - (3.0 * 99.0 + 270.0) / 600.0) / 0.05);
    let declared = evaluate(&engine, &format!("{parts}{}", composite("declared")), NOW).await;
    let ab = declared.iter().find(|s| s.name == "ab").unwrap();
    close(ab.sli, (3.0 * 0.99 + 0.90) / 4.0);
    close(ab.burn_rates["5m"], (1.0 - (3.0 * 0.99 + 0.90) / 4.0) / 0.05);

    // A part whose SLI cannot be computed: the composite says which and why.
    let broken = [
        slo("a", "99", "1h", "{ratio: {bad: a_errors_total, total: a_total}}"),
        // 0.25 is no bucket bound of lat_seconds: the latency SLI cannot be computed.
        slo("lat", "99", "1h", "{latency: {histogram: 'lat_seconds', threshold: 0.25}}"),
        slo("al", "95", "1h", "{composite: {parts: [{slo: a}, {slo: lat}]}}"),
    ]
    .join("---\n");
    let statuses = evaluate(&engine, &broken, NOW).await;
    let lat = statuses.iter().find(|s| s.name == "lat").unwrap();
    let al = statuses.iter().find(|s| s.name == "al").unwrap();
    assert_eq!((lat.state.as_str(), al.state.as_str()), ("error", "error"), "{lat:?} / {al:?}");
    assert!(al.error.as_deref().is_some_and(|e| e.starts_with("part lat: ")), "{al:?}");
}

/// A monthly report of February 2024 over data whose every minute is known: 100 requests a
/// minute, 1 bad, and a burst of 50 bad a minute for an hour on the 10th.
#[tokio::test]
async fn a_monthly_report_matches_the_hand_computed_figures() {
    let (engine, _dir) = engine().await;
    let february = super::report::Period::parse("2024-02", "UTC").unwrap();
    let start = february.start_ms - HOUR;
    let minutes = (february.end_ms - start) / MINUTE + 60;
    let burst_from = (9 * 1440 + 12 * 60) + 60; // 2024-02-10 12:00, in minutes since `start`
    let bad = move |m: i64| if (burst_from..burst_from + 60).contains(&m) { 50.0 } else { 1.0 };
    write_shop_traffic(&engine, start, minutes, bad).await;
    let yaml = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: avail, service: shop, labels: {team: web}}\nspec:\n  objective: 99\n  window: 30d\n  sli: {ratio: {bad: 'errors_total{job=\"shop\"}', total: 'requests_total{job=\"shop\"}'}}\n";
    let definitions = load_texts(&[("t.yaml".into(), yaml.into())], None).unwrap();
    let report =
        super::report::report(&engine, &definitions.iter().collect::<Vec<_>>(), &[], february.clone(), NOW).await;
    let row = &report.slos[0];
    let (total, bad_events) = (29.0 * 1440.0 * 100.0, 29.0 * 1440.0 + 60.0 * 49.0);
    assert_eq!(row.error, None);
    close(Some(row.total), total);
    close(Some(row.total - row.good), bad_events);
    close(row.sli, 1.0 - bad_events / total);
    close(row.budget_spent, (bad_events / total) / 0.01);
    // The burst's 60 minutes (a minute's bucket holds the samples of (start, end]).
    assert_eq!(row.bad_minutes, 60);
    assert_eq!(row.met, Some(false));
    assert_eq!((row.pages, row.tickets), (0, 0));
    assert_eq!(report.until_ms, february.end_ms, "a past month is reported whole");
    assert_eq!((report.services[0].name.as_str(), report.services[0].missed), ("shop", 1));
    assert_eq!(report.teams[0].name, "web");
    let csv = super::report::to_csv(&report);
    assert!(
        csv.starts_with("period,slo,service")
            && csv.lines().nth(1).unwrap().starts_with("2024-02,avail,shop,web,0.99,"),
        "{csv}"
    );
}

/// A replay's status at each step is the one the evaluator gives when asked at that time,
/// with later data already stored (it must not count), and a correction applied the same.
#[tokio::test]
async fn a_replay_gives_at_each_step_the_status_the_evaluator_gives_then() {
    let (engine, _dir) = engine().await;
    let minutes = 3 * 1440;
    let start = NOW - minutes * MINUTE;
    // 100 events a minute; every 7th minute 5 bad; minutes 3000..3030 half bad.
    let bad = |m: i64| {
        if (3000..3030).contains(&m) {
            50.0
        } else if m % 7 == 0 {
            5.0
        } else {
            0.0
        }
    };
    write_shop_traffic(&engine, start, minutes, bad).await;
    let correction = "---\napiVersion: vigil/v1\nkind: Correction\nmetadata: {name: c}\nspec: {reason: r, start: '2024-03-03T02:10:00Z', duration: 20m, scope: {slos: [r]}, effect: [exclude]}\n";
    let yaml = slo("r", "99", "1d", "{ratio: {bad: 'errors_total', total: 'requests_total'}}");
    for with_correction in [false, true] {
        let text = if with_correction { format!("{yaml}{correction}") } else { yaml.clone() };
        let loaded = super::load::load_definitions(&[("t.yaml".into(), text)], None).unwrap();
        let corrections: Vec<Arc<super::Correction>> = loaded.corrections.into_iter().map(Arc::new).collect();
        assert_eq!(corrections.len(), usize::from(with_correction));
        let mut replayed = Vec::new();
        super::replay::replay(
            &engine,
            loaded.slos[0].clone(),
            &corrections,
            (NOW - 23 * HOUR, NOW - 20 * HOUR),
            7 * MINUTE,
            |t, statuses| replayed.push((t, statuses)),
        )
        .await
        .unwrap();
        assert_eq!(replayed.len(), 180 / 7);
        for (t, statuses) in replayed.iter().step_by(5) {
            let evaluator = SloEvaluator::new(engine.clone());
            evaluator.set_definitions(loaded.slos.clone()).await;
            evaluator.set_file_corrections(corrections.iter().map(|c| (**c).clone()).collect(), *t).await;
            let live = evaluator.settle(*t).await;
            let (a, b) = (&statuses[0], &live[0]);
            close(a.sli, b.sli.unwrap());
            close(a.error_budget_remaining, b.error_budget_remaining.unwrap());
            for window in ["5m", "1h", "6h", "1d"] {
                assert_eq!(a.burn_rates[window].is_some(), b.burn_rates[window].is_some(), "{window} at {t}");
                if let Some(rate) = b.burn_rates[window] {
                    close(a.burn_rates[window], rate);
                }
            }
            assert_eq!(a.conditions, b.conditions, "at {t}");
        }
    }
}
