//! The scheduled report digest (`reports:` in the config): when a week, month or quarter
//! ends, its compliance report is mailed to the configured receivers, once — the last period
//! sent is kept in `data_dir/reports/last_period`, so a restart neither repeats nor skips one.
//! Only the node holding the alerting lease sends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil_query::QueryEngine;
use vigil_query::slo::SloEvaluator;
use vigil_query::slo::report::{Period, report};

use crate::config::ReportsConfig;

/// The period whose report is due now: the one before `current` when the last period sent
/// (`last`) is an earlier one; none on a first start (nothing is sent for a period that ended
/// before Vigil ran).
pub fn due(last: Option<&str>, current: &Period) -> Option<Period> {
    match last {
        Some(last) if last != current.name => current.neighbour(-1),
        _ => None,
    }
}

pub async fn run(
    settings: ReportsConfig,
    data_dir: PathBuf,
    slos: Arc<SloEvaluator>,
    engine: QueryEngine,
    alerting: vigil_alerting::Alerting,
    stop: CancellationToken,
) {
    let Some(every) = settings.every.clone() else { return };
    let state = data_dir.join("reports").join("last_period");
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        let now = crate::reload::now_ms();
        let Ok(current) = Period::containing(&every, now, &settings.time_zone) else { return };
        let last = std::fs::read_to_string(&state).ok().map(|t| t.trim().to_string());
        if let Some(ended) = due(last.as_deref(), &current)
            && alerting.is_active()
        {
            let definitions = slos.definitions().await;
            let chosen: Vec<&vigil_query::slo::SloDefinition> = definitions.iter().map(|d| d.as_ref()).collect();
            let sent = report(&engine, &chosen, &slos.corrections(), ended.clone(), now).await;
            let failures = alerting.send_report(&sent, &settings.receivers).await;
            if failures.is_empty() {
                info!(period = %ended.name, receivers = ?settings.receivers, "SLO report mailed");
            }
            for (receiver, error) in failures {
                warn!(period = %ended.name, %receiver, %error, "SLO report not mailed");
            }
        }
        if last.as_deref() != Some(current.name.as_str()) {
            let written = std::fs::create_dir_all(state.parent().unwrap_or(&data_dir))
                .and_then(|()| std::fs::write(&state, &current.name));
            if let Err(error) = written {
                warn!(%error, path = %state.display(), "the last report period could not be saved");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_due_once_when_its_period_has_ended() {
        let december = Period::parse("2026-12", "UTC").unwrap();
        assert_eq!(due(Some("2026-11"), &december).map(|p| p.name), Some("2026-11".into()));
        assert_eq!(due(Some("2026-12"), &december), None, "sent already");
        assert_eq!(due(None, &december), None, "a first start sends nothing for the past");
    }
}
