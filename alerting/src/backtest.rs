//! Policy backtesting: an SLO's stored data replayed through the evaluator on a manual clock
//! (`slo::replay`, a step a minute) and through the same alerting as live — the SLO's alert
//! candidates (burn-rate conditions, thresholds, `for`, the `min_events` guard, the budget
//! and no-data alerts), the same pending/firing state machine, and the engine's inhibition —
//! giving every alert that would have fired: when, for how long, its peak burn rate and the
//! budget left when it fired, and whether inhibition kept it from being sent.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use vigil_query::slo::replay::{ReplayError, replay};
use vigil_query::slo::{Correction, SloDefinition, SloStatus};

use crate::engine::Alerting;
use crate::inhibit::InhibitRule;
use crate::labels::{Labels, fingerprint};
use crate::state::RuleAlerts;

const MINUTE_MS: i64 = 60_000;
/// Budget points a backtest returns at most (its curve is thinned to this).
const MAX_CURVE_POINTS: usize = 720;

/// One alert the policy would have fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BacktestAlert {
    pub alertname: String,
    pub severity: String,
    /// The group's labels, for grouped SLOs.
    pub group: BTreeMap<String, String>,
    pub started_ms: i64,
    /// None: still firing at the end of the range.
    pub ended_ms: Option<i64>,
    /// The highest value while it fired (a burn rate for burn-rate alerts).
    pub peak_value: f64,
    /// Error budget left when it fired.
    pub budget_at_start: Option<f64>,
    /// Inhibited (by a page of the same SLO, or a configured rule) for as long as it fired,
    /// so never sent.
    pub inhibited: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BacktestTotals {
    pub pages: usize,
    /// Tickets sent: not inhibited for their whole life.
    pub tickets: usize,
    pub inhibited_tickets: usize,
    /// Other alerts (budget exhausted, no data, deploy freeze) that would have been sent.
    pub other: usize,
    /// Minutes with a page firing.
    pub page_minutes: u64,
    /// Error budget left at the end of the range (the first group's).
    pub final_budget: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backtest {
    pub slo: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub alerts: Vec<BacktestAlert>,
    /// Error budget left over the range, (ms, fraction), at most 720 points (the first group's).
    pub budget: Vec<(i64, f64)>,
    pub totals: BacktestTotals,
}

/// Follows alerts through the replayed steps.
struct Tracker {
    definition: SloDefinition,
    rules: Vec<InhibitRule>,
    alerts: RuleAlerts,
    /// Open episodes: fingerprint → index in `out`, and whether it was ever sent.
    open: BTreeMap<u64, (usize, bool)>,
    out: Vec<BacktestAlert>,
    budget: Vec<(i64, f64)>,
    page_minutes: u64,
}

impl Tracker {
    fn step(&mut self, now_ms: i64, statuses: Vec<SloStatus>) {
        let refs: Vec<&SloStatus> = statuses.iter().collect();
        let candidates = crate::slo_alerts::candidates(&self.definition, &refs, "", None);
        let transitions = self.alerts.advance(now_ms, candidates.into_iter().map(|c| c.candidate).collect());
        let budget_of = |labels: &Labels| {
            statuses
                .iter()
                .find(|s| s.group.iter().all(|(k, v)| labels.get(k) == Some(v)))
                .and_then(|s| s.error_budget_remaining)
        };
        for transition in transitions.unwrap_or_default() {
            let alert = &transition.alert;
            let fp = alert.fingerprint();
            match transition.to {
                "firing" => {
                    let labels = &alert.labels;
                    self.out.push(BacktestAlert {
                        alertname: labels.get("alertname").cloned().unwrap_or_default(),
                        severity: labels.get("severity").cloned().unwrap_or_default(),
                        group: self
                            .definition
                            .group_by
                            .iter()
                            .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
                            .collect(),
                        started_ms: now_ms,
                        ended_ms: None,
                        peak_value: alert.value,
                        budget_at_start: budget_of(labels),
                        inhibited: true,
                    });
                    self.open.insert(fp, (self.out.len() - 1, false));
                }
                "resolved" => {
                    if let Some((index, _)) = self.open.remove(&fp) {
                        self.out[index].ended_ms = Some(now_ms);
                    }
                }
                _ => {}
            }
        }
        // Peaks, and inhibition as the dispatcher judges it at this moment.
        let firing: Vec<&crate::state::Alert> =
            self.alerts.active().filter(|a| a.state == crate::state::AlertState::Firing).collect();
        let mut paging = false;
        for alert in &firing {
            let Some((index, sent)) = self.open.get_mut(&alert.fingerprint()) else { continue };
            let episode = &mut self.out[*index];
            episode.peak_value = episode.peak_value.max(alert.value);
            paging |= episode.severity == "page";
            let inhibited = firing.iter().any(|source| {
                fingerprint(&source.labels) != fingerprint(&alert.labels)
                    && self.rules.iter().any(|rule| rule.inhibits(&source.labels, &alert.labels))
            });
            if !inhibited {
                *sent = true;
                episode.inhibited = false;
            }
        }
        self.page_minutes += u64::from(paging);
        if let Some(budget) = statuses.first().and_then(|s| s.error_budget_remaining) {
            self.budget.push((now_ms, budget));
        }
    }

    fn finish(self, from_ms: i64, to_ms: i64) -> Backtest {
        let mut totals = BacktestTotals {
            page_minutes: self.page_minutes,
            final_budget: self.budget.last().map(|(_, b)| *b),
            ..Default::default()
        };
        for alert in &self.out {
            match (alert.severity.as_str(), alert.inhibited) {
                (_, true) if alert.severity == "ticket" => totals.inhibited_tickets += 1,
                (_, true) => {}
                ("page", false) => totals.pages += 1,
                ("ticket", false) => totals.tickets += 1,
                (_, false) => totals.other += 1,
            }
        }
        let stride = self.budget.len().div_ceil(MAX_CURVE_POINTS).max(1);
        let mut budget: Vec<(i64, f64)> = self.budget.iter().step_by(stride).copied().collect();
        if let Some(last) = self.budget.last()
            && budget.last() != Some(last)
        {
            budget.push(*last);
        }
        Backtest { slo: self.definition.name.clone(), from_ms, to_ms, alerts: self.out, budget, totals }
    }
}

impl Alerting {
    /// Replays `definition` over `(from_ms, to_ms]` (see the module's documentation).
    pub async fn backtest(
        &self,
        definition: &SloDefinition,
        corrections: &[Arc<Correction>],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Backtest, ReplayError> {
        let rules = self.inner.state.lock().inhibit.clone();
        let mut tracker = Tracker {
            definition: definition.clone(),
            rules,
            alerts: RuleAlerts::default(),
            open: BTreeMap::new(),
            out: Vec::new(),
            budget: Vec::new(),
            page_minutes: 0,
        };
        replay(&self.inner.engine, definition.clone(), corrections, (from_ms, to_ms), MINUTE_MS, |t, statuses| {
            tracker.step(t, statuses)
        })
        .await?;
        metrics::counter!("vigil_slo_backtests_total").increment(1);
        Ok(tracker.finish(from_ms, to_ms))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vigil_query::slo::history::alert_episodes;
    use vigil_query::slo::{SloEvaluator, load_texts};
    use vigil_query::{QueryEngine, QueryOptions};
    use vigil_storage::clock::ManualClock;
    use vigil_storage::{LabelSet, MetricSeries, Sample, Storage, StorageOptions, WriteBatch};

    use super::*;
    use crate::engine::AlertingOptions;

    const MINUTE: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MINUTE;
    /// 2027-01-15T08:00:00Z.
    const T0: i64 = 1_800_000_000_000;
    /// Three bursts of ten minutes with half the requests failing: days 5, 12 and 20 at 10:00
    /// (never enough to exhaust the budget: 5 bad minutes' worth in 7,320 at the first).
    const BURSTS: [i64; 3] =
        [T0 + 5 * DAY + 2 * 60 * MINUTE, T0 + 12 * DAY + 2 * 60 * MINUTE, T0 + 20 * DAY + 2 * 60 * MINUTE];
    const BURST_MS: i64 = 10 * MINUTE;

    const SLO: &str = "apiVersion: vigil/v1\nkind: SLO\nmetadata: {name: api, service: api}\nspec:\n  objective: 99.9\n  window: 30d\n  sli: {ratio: {bad: 'requests_total{code=\"500\"}', total: 'requests_total'}}\n  alerting:\n    conditions:\n      - {severity: page, burn_rate: 14.4, long_window: 1h, short_window: 5m}\n      - {severity: ticket, burn_rate: 3, long_window: 1d, short_window: 5m}\n";

    fn in_burst(t: i64) -> bool {
        BURSTS.iter().any(|b| t > *b && t <= b + BURST_MS)
    }

    /// 100 requests a minute, one sample per series at each minute's end, for the minutes
    /// ending in `(from, to]`; counters carried in `totals`.
    fn samples(from: i64, to: i64, totals: &mut (f64, f64)) -> WriteBatch {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let mut t = from + MINUTE;
        while t <= to {
            if in_burst(t) {
                totals.0 += 50.0;
                totals.1 += 50.0;
            } else {
                totals.0 += 100.0;
            }
            ok.push(Sample { timestamp_ns: t * 1_000_000, value: totals.0 });
            failed.push(Sample { timestamp_ns: t * 1_000_000, value: totals.1 });
            t += MINUTE;
        }
        let series = |code: &str, samples| MetricSeries {
            metric: "requests_total".into(),
            labels: LabelSet::new(vec![("code".into(), code.into())]).unwrap(),
            samples,
        };
        WriteBatch { metrics: vec![series("200", ok), series("500", failed)], rows: Vec::new() }
    }

    /// The live path, with the data arriving as time passes: hourly evaluations, every minute
    /// around the bursts; then what the `alerts` table recorded.
    async fn live(
        engine: &QueryEngine,
        dir: &std::path::Path,
        definition: &Arc<SloDefinition>,
    ) -> Vec<(String, i64, Option<i64>)> {
        let clock = Arc::new(ManualClock::new(T0));
        let alerting = Alerting::open(engine.clone(), AlertingOptions::new(dir.join("live")), clock.clone());
        let evaluator = SloEvaluator::new(engine.clone());
        evaluator.set_definitions(vec![(**definition).clone()]).await;
        let mut totals = (0.0, 0.0);
        engine.storage().write(samples(T0 - MINUTE, T0, &mut totals)).await.unwrap();
        evaluator.settle(T0).await;
        let (mut t, end) = (T0, T0 + 30 * DAY);
        while t < end {
            let dense = BURSTS.iter().any(|b| t >= b - 5 * MINUTE && t < b + BURST_MS + 70 * MINUTE);
            // An hour at a time, but never past the start of a burst's minute-by-minute stretch.
            let next_dense = BURSTS.iter().map(|b| b - 5 * MINUTE).filter(|d| *d > t).min().unwrap_or(end);
            let next = if dense { t + MINUTE } else { (t + 60 * MINUTE).min(next_dense) }.min(end);
            engine.storage().write(samples(t, next, &mut totals)).await.unwrap();
            clock.set(next);
            let statuses = evaluator.evaluate(next).await;
            alerting.evaluate_slos(std::slice::from_ref(definition), &statuses).await;
            t = next;
        }
        let mut episodes: Vec<(String, i64, Option<i64>)> = alert_episodes(engine, "api", T0, end + MINUTE, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.severity, e.started_ms, e.ended_ms))
            .collect();
        episodes.sort_by_key(|e| (e.1, e.0.clone()));
        episodes
    }

    #[tokio::test]
    async fn a_month_with_three_bursts_pages_three_times_as_the_live_evaluator_did() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StorageOptions::new(dir.path().join("data"));
        options.retention = Duration::ZERO;
        let engine = QueryEngine::new(Storage::open(options).await.unwrap(), QueryOptions::default()).unwrap();
        let definition = Arc::new(load_texts(&[("slo.yaml".into(), SLO.into())], None).unwrap().remove(0));
        let live = live(&engine, dir.path(), &definition).await;

        let clock = Arc::new(ManualClock::new(T0 + 31 * DAY));
        let alerting = Alerting::open(engine.clone(), AlertingOptions::new(dir.path().join("backtest")), clock);
        let result = alerting.backtest(&definition, &[], T0, T0 + 30 * DAY).await.unwrap();
        // Each burst: the page from its second minute (1h: 1/60 of events bad, 16.7× ≥ 14.4;
        // after one minute only 8.3×) to five minutes after it (the 5m window clean again);
        // the ticket from its ninth minute (1d: 4.5/1440 bad, 3.1× ≥ 3; after eight 2.8×) to
        // the same end, inhibited by the page throughout.
        let mut expected = Vec::new();
        for b in BURSTS {
            expected.push(("page".to_string(), b + 2 * MINUTE, Some(b + BURST_MS + 5 * MINUTE)));
            expected.push(("ticket".to_string(), b + 9 * MINUTE, Some(b + BURST_MS + 5 * MINUTE)));
        }
        let replayed: Vec<(String, i64, Option<i64>)> =
            result.alerts.iter().map(|a| (a.severity.clone(), a.started_ms, a.ended_ms)).collect();
        assert_eq!(replayed, expected, "{result:#?}");
        assert_eq!(live, expected, "the live evaluator paged the same");
        assert_eq!(result.totals.pages, 3);
        assert_eq!((result.totals.tickets, result.totals.inhibited_tickets), (0, 3));
        assert!(result.alerts.iter().filter(|a| a.severity == "ticket").all(|a| a.inhibited));
        assert!(result.alerts.iter().filter(|a| a.severity == "page").all(|a| !a.inhibited));
        // Budget when the first page fired: one bad minute's worth in 7,322 at a 0.1 % budget.
        let first = result.alerts[0].budget_at_start.unwrap();
        assert!((first - (1.0 - 1000.0 / 7322.0)).abs() < 1e-9, "{first}");
        // The alert's value is the fastest long burn: the whole burst in the hour, 5/60 bad.
        assert!((result.alerts[0].peak_value - (5.0 / 60.0) / 0.001).abs() < 1e-6, "{:?}", result.alerts[0]);
        assert_eq!(result.totals.page_minutes, 3 * 13, "steps 2 to 14 of each burst");
        let end_budget = 1.0 - (15.0 / (30.0 * 1440.0)) / 0.001;
        assert!((result.totals.final_budget.unwrap() - end_budget).abs() < 1e-9, "{:?}", result.totals);
        assert!(result.budget.len() <= MAX_CURVE_POINTS + 1 && result.budget.len() > 100);
    }
}
