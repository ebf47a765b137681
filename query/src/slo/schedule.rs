//! The SLO evaluation loop: every `every`, on the node that holds the alerting lease, every
//! SLO is evaluated and the statuses handed on (to alerting); the state is saved now and then
//! and at the end, so the next start resumes from the last cycle instead of backfilling.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_storage::clock::Clock;

use super::evaluate::{SloEvaluator, SloStatus};
use super::model::SloDefinition;

/// When the loop evaluates and saves.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub every: Duration,
    /// Zero: saved at the end only.
    pub save_every: Duration,
    pub state_path: PathBuf,
}

impl SloEvaluator {
    /// Evaluates on `schedule` until `stop`, while `is_active` (this node holds the lease),
    /// handing each cycle's definitions and statuses to `after`.
    ///
    /// `schedule` may change while it runs (a reload): the next cycle follows the new period.
    pub async fn run<Active, After, Done>(
        self: Arc<Self>,
        mut schedules: tokio::sync::watch::Receiver<Schedule>,
        clock: Arc<dyn Clock>,
        is_active: Active,
        after: After,
        stop: impl Future<Output = ()>,
    ) where
        Active: Fn() -> bool,
        After: Fn(Vec<Arc<SloDefinition>>, Vec<SloStatus>) -> Done,
        Done: Future<Output = ()>,
    {
        let ticker_for = |every: Duration| {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker
        };
        let mut schedule = schedules.borrow_and_update().clone();
        let mut ticker = ticker_for(schedule.every);
        // Until the sender is gone (then the schedule stays as it is).
        let mut follow = true;
        let mut saved_at = Instant::now();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                changed = schedules.changed(), if follow => {
                    if changed.is_err() {
                        follow = false;
                    } else {
                        let next = schedules.borrow_and_update().clone();
                        if next.every != schedule.every {
                            ticker = ticker_for(next.every);
                            // `interval` ticks at once: this cycle runs now, on the new period.
                        }
                        schedule = next;
                    }
                    continue;
                }
                _ = ticker.tick() => {}
            }
            if !is_active() {
                continue;
            }
            let statuses = self.evaluate(clock.now_ms()).await;
            after(self.definitions().await, statuses).await;
            if !schedule.save_every.is_zero() && saved_at.elapsed() >= schedule.save_every {
                self.save_logged(&schedule).await;
                saved_at = Instant::now();
            }
        }
        // At shutdown, so the next start resumes from the last cycle.
        if is_active() {
            self.save_logged(&schedule).await;
        }
    }

    /// Saves the state; a failure is counted and logged (the next start then backfills).
    async fn save_logged(&self, schedule: &Schedule) {
        match self.save(&schedule.state_path).await {
            Ok(saved) => tracing::debug!(saved, "SLO state saved"),
            Err(error) => {
                metrics::counter!("vigil_slo_state_save_failures_total").increment(1);
                tracing::warn!(%error, "saving the SLO state failed; a restart would backfill");
            }
        }
    }
}
