//! Publishing an evaluation: alerts to the dispatcher, `ALERTS`/`ALERTS_FOR_STATE` series
//! (stale markers for alerts that went away) and `alerts` table rows for state changes to
//! storage, then the state to disk.

use std::collections::BTreeSet;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, StringDictionaryBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::Int32Type;
use vigil_storage::schema::{FixedTable, string_map_builder};
use vigil_storage::{LabelSet, MetricSeries, STALE_NAN, Sample, TableRows, WriteBatch};

use crate::dispatch::NotifyAlert;
use crate::engine::{Alerting, State};
use crate::labels::{Labels, fingerprint_hex};
use crate::state::{Alert, AlertState, Transition};

impl Alerting {
    /// After an evaluation: alerts to the dispatcher, series and state changes to storage,
    /// state to disk.
    pub(crate) async fn publish(&self, now: i64, transitions: Vec<Transition>, mut metrics_out: Vec<MetricSeries>) {
        let (rows, firing, pending) = {
            let mut state = self.inner.state.lock();
            let alerts = notify_alerts(&state);
            state.dispatcher.update(&alerts, now);
            let mut current = BTreeSet::new();
            let (mut firing, mut pending) = (0usize, 0usize);
            let series_ms = self.now_ms().max(state.written_at_ms + 1);
            state.written_at_ms = series_ms;
            let now_ns = series_ms * 1_000_000;
            // Posted alerts are their sender's: it writes its own `ALERTS` series.
            for source in state.sources.values().filter(|s| s.kind != crate::engine::SourceKind::Posted) {
                for alert in source.alerts.active() {
                    match alert.state {
                        AlertState::Firing => firing += 1,
                        _ => pending += 1,
                    }
                    let mut labels = alert.labels.clone();
                    labels.insert("alertstate".into(), alert.state.as_str().into());
                    push_sample(&mut metrics_out, "ALERTS", &labels, now_ns, 1.0);
                    push_sample(
                        &mut metrics_out,
                        "ALERTS_FOR_STATE",
                        &alert.labels,
                        now_ns,
                        (alert.active_at_ms / 1000) as f64,
                    );
                    current.insert(labels);
                }
            }
            for gone in state.written.difference(&current) {
                push_sample(&mut metrics_out, "ALERTS", gone, now_ns, STALE_NAN);
                let mut plain = gone.clone();
                plain.remove("alertstate");
                if !current.iter().any(|c| c.iter().filter(|(k, _)| k.as_str() != "alertstate").eq(plain.iter())) {
                    push_sample(&mut metrics_out, "ALERTS_FOR_STATE", &plain, now_ns, STALE_NAN);
                }
            }
            state.written = current;
            (transition_rows(&transitions, now), firing, pending)
        };
        metrics::gauge!("vigil_alerts", "state" => "firing").set(firing as f64);
        metrics::gauge!("vigil_alerts", "state" => "pending").set(pending as f64);
        let batch = WriteBatch {
            metrics: metrics_out,
            rows: rows.into_iter().map(|batch| TableRows { table: FixedTable::Alerts, batch }).collect(),
        };
        if let Err(e) = self.inner.engine.storage().write(batch).await {
            tracing::warn!(error = %e, "writing alert series failed");
        }
        self.persist().await;
    }
}

/// Firing and recently resolved alerts of every source, as the dispatcher takes them.
pub(crate) fn notify_alerts(state: &State) -> Vec<NotifyAlert> {
    let mut out = Vec::new();
    for source in state.sources.values() {
        for (fp, alert) in &source.alerts.alerts {
            if !alert.is_notifiable() {
                continue;
            }
            out.push(NotifyAlert {
                fingerprint: *fp,
                labels: alert.labels.clone(),
                annotations: alert.annotations.clone(),
                starts_at_ms: alert.fired_at_ms.unwrap_or(alert.active_at_ms),
                ends_at_ms: alert.resolved_at_ms.filter(|_| alert.state == AlertState::Inactive),
                generator_url: alert.generator_url.clone().unwrap_or_else(|| source.generator_url.clone()),
                receivers: source.receivers.get(fp).cloned().unwrap_or_default(),
            });
        }
    }
    out
}

fn push_sample(out: &mut Vec<MetricSeries>, metric: &str, labels: &Labels, timestamp_ns: i64, value: f64) {
    if let Ok(set) = LabelSet::new(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()) {
        out.push(MetricSeries { metric: metric.into(), labels: set, samples: vec![Sample { timestamp_ns, value }] });
    }
}

/// `alerts` table rows for state changes.
fn transition_rows(transitions: &[Transition], now: i64) -> Option<RecordBatch> {
    if transitions.is_empty() {
        return None;
    }
    let dictionary = |values: Vec<Option<String>>| -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        for value in values {
            builder.append_option(value);
        }
        std::sync::Arc::new(builder.finish())
    };
    let map = |f: &dyn Fn(&Alert) -> &Labels| -> ArrayRef {
        let mut builder = string_map_builder();
        for t in transitions {
            for (k, v) in f(&t.alert) {
                builder.keys().append_value(k);
                builder.values().append_value(v);
            }
            // Keys and values were appended in pairs: appending the entry cannot fail.
            let _ = builder.append(true);
        }
        std::sync::Arc::new(builder.finish())
    };
    let label = |name: &str| dictionary(transitions.iter().map(|t| t.alert.labels.get(name).cloned()).collect());
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(
            TimestampNanosecondArray::from(vec![now * 1_000_000; transitions.len()]).with_timezone("UTC"),
        ),
        dictionary(
            transitions.iter().map(|t| Some(t.alert.labels.get("alertname").cloned().unwrap_or_default())).collect(),
        ),
        std::sync::Arc::new(StringArray::from_iter_values(
            transitions.iter().map(|t| fingerprint_hex(&t.alert.labels)),
        )),
        dictionary(transitions.iter().map(|t| Some(t.to.to_string())).collect()),
        label("slo"),
        label("severity"),
        map(&|a| &a.labels),
        map(&|a| &a.annotations),
        std::sync::Arc::new(transitions.iter().map(|t| Some(t.alert.value)).collect::<Float64Array>()),
        std::sync::Arc::new(
            TimestampNanosecondArray::from(
                transitions.iter().map(|t| Some(t.alert.active_at_ms * 1_000_000)).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    ];
    match RecordBatch::try_new(FixedTable::Alerts.schema(), columns) {
        Ok(batch) => Some(batch),
        Err(e) => {
            tracing::warn!(error = %e, "building alerts rows failed");
            None
        }
    }
}
