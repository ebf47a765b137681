//! Replaying stored data through the evaluator on a manual clock: the statuses an SLO would
//! have had at every step of a past range, as the live evaluator computes them (the same
//! sources, rollups, corrections and status), for backtesting a policy.
//!
//! Stored data is read a day at a time, as a backfill reads it, into rollups that keep a day
//! more than the live ones; each day's steps are computed from them. A status at a minute
//! boundary sums only buckets that end by then, so data read ahead of a step never counts in
//! it.

use std::sync::Arc;

use super::correction::Correction;
use super::evaluate::{SloRuntime, SloStatus, advance, history_start, status};
use super::model::SloDefinition;
use super::rollup::{HOUR_MS, MINUTE_MS, minute_of};

use super::SloState;
use super::scans::Scans;
use crate::QueryEngine;

const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplayError {
    #[error("the SLI could not be evaluated at {at_ms}: {message}")]
    Source { at_ms: i64, message: String },
}

/// Calls `each(t, statuses)` for every `t` in `(from_ms, to_ms]` `step_ms` apart (both
/// taken down to whole minutes), with the statuses of `definition`'s groups at `t`.
pub async fn replay(
    engine: &QueryEngine,
    definition: SloDefinition,
    corrections: &[Arc<Correction>],
    (from_ms, to_ms): (i64, i64),
    step_ms: i64,
    mut each: impl FnMut(i64, Vec<SloStatus>),
) -> Result<(), ReplayError> {
    let from_ms = from_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let step_ms = (step_ms.div_euclid(MINUTE_MS) * MINUTE_MS).max(MINUTE_MS);
    let mut runtime = SloRuntime::new(definition, corrections);
    runtime.lag_ms = DAY_MS;
    let definition = runtime.definition();
    let mut at = minute_of(history_start(&definition, from_ms));
    runtime.committed_ms = Some(at);
    let failed = |statuses: &[SloStatus], at_ms: i64| {
        statuses
            .iter()
            .find(|s| s.state == SloState::Error)
            .map(|s| ReplayError::Source { at_ms, message: s.error.clone().unwrap_or_default() })
    };
    while at < from_ms {
        at = (at + DAY_MS).min(from_ms);
        let statuses = advance(engine, &Scans::new(), &mut runtime, at, None, corrections).await;
        if let Some(error) = failed(&statuses, at) {
            return Err(error);
        }
    }
    let mut step = from_ms + step_ms;
    while step <= to_ms {
        let chunk_end = (step + DAY_MS - MINUTE_MS).min(to_ms);
        let statuses = advance(engine, &Scans::new(), &mut runtime, chunk_end, None, corrections).await;
        if let Some(error) = failed(&statuses, chunk_end) {
            return Err(error);
        }
        while step <= chunk_end {
            let statuses =
                runtime.groups.iter().map(|(group, state)| status(&definition, group, state, step)).collect();
            each(step, statuses);
            step += step_ms;
        }
    }
    Ok(())
}
