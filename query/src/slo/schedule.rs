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
                // New or edited SLOs: their backfill starts now, not at the next tick.
                () = self.defined.notified() => {}
            }
            if !is_active() {
                continue;
            }
            // This cycle evaluates whatever was defined until now: a wake-up left from before
            // it would only run it twice.
            let _ = futures::FutureExt::now_or_never(self.defined.notified());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use vigil_storage::clock::ManualClock;
    use vigil_storage::{Storage, StorageOptions};

    use super::*;
    use crate::slo::load_texts;
    use crate::{QueryEngine, QueryOptions};

    /// An SLO added while the loop waits for an hour-long tick is evaluated at once.
    #[tokio::test]
    async fn slos_defined_between_ticks_are_evaluated_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
        let evaluator = Arc::new(SloEvaluator::new(QueryEngine::new(storage, QueryOptions::default()).unwrap()));
        let definitions = |name: &str| {
            let yaml = format!(
                "apiVersion: vigil/v1\nkind: SLO\nmetadata: {{name: {name}, service: s}}\nspec:\n  objective: 99\n  window: 1d\n  sli: {{ratio: {{bad: 'e_total', total: 'r_total'}}}}\n"
            );
            load_texts(&[("t.yaml".into(), yaml)], None).unwrap()
        };
        evaluator.set_definitions(definitions("first")).await;
        let schedule = Schedule {
            every: Duration::from_secs(3600),
            save_every: Duration::ZERO,
            state_path: dir.path().join("state"),
        };
        let (_schedule, schedules) = tokio::sync::watch::channel(schedule);
        let (cycles, mut evaluated) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(evaluator.clone().run(
            schedules,
            Arc::new(ManualClock::new(1_700_000_000_000)),
            || true,
            move |_, statuses: Vec<SloStatus>| {
                let _ = cycles.send(statuses.into_iter().map(|s| s.name).collect());
                async {}
            },
            async move {
                let _ = stopped.await;
            },
        ));
        // The first tick is at once; then, with the next an hour away, the new SLO's cycle
        // can only come from its definition.
        let cycle_with = async |evaluated: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<String>>, name: &str| {
            let wait = async {
                while let Some(names) = evaluated.recv().await {
                    if names.iter().any(|n| n == name) {
                        return names;
                    }
                }
                panic!("the loop ended");
            };
            tokio::time::timeout(Duration::from_secs(30), wait).await.unwrap_or_else(|_| panic!("no cycle with {name}"))
        };
        assert_eq!(cycle_with(&mut evaluated, "first").await, ["first"]);
        evaluator.set_definitions(definitions("second")).await;
        assert_eq!(cycle_with(&mut evaluated, "second").await, ["second"]);
        let _ = stop.send(());
        run.await.unwrap();
    }
}
