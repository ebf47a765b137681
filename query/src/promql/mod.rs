//! PromQL, compiled to DataFusion plans.
//!
//! ```text
//!  text ──promql-parser──► AST ──compile──► DataFusion plan ──execute──► rows ──► result
//! ```
//! A selector becomes a scan of its metric's table (matchers and the time range pushed down),
//! grouped per series into sample lists (`array_agg`); a UDF evaluates the instant lookup or a
//! range function at every step of the query and the rows are unnested, one per (series,
//! step): columns are the labels, `__ts__` (ms) and `__value__`. Aggregations are `GROUP BY`
//! over labels and step, vector matching is a join on the matching labels and step, set
//! operators are semi/anti joins. Semantics follow Prometheus 2.42: a 5-minute lookback,
//! closed range windows, stale markers ending a series, 2.x rate extrapolation.

mod compile;
mod errors;
mod exemplars;
pub mod kernels;
mod result;
mod series;
pub mod udf;

use std::time::Duration;

pub use errors::PromError;
pub use exemplars::{ExemplarPoint, ExemplarSeries};
pub use result::{Labels, PromResult, Sample, Series};

use crate::QueryEngine;

/// The time frame of an evaluation, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalRange {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
}

impl EvalRange {
    pub fn instant(at_ms: i64) -> Self {
        EvalRange { start_ms: at_ms, end_ms: at_ms, step_ms: 1 }
    }
}

/// Most points per series a range query may produce (as Prometheus).
pub const MAX_POINTS: i64 = 11_000;

/// A compiler for reading raw selector samples (SLI sources); its steps are unused.
pub(crate) fn compile_for_sources(engine: &QueryEngine) -> compile::Compiler<'_> {
    compile::Compiler::new(engine, EvalRange::instant(0), DEFAULT_LOOKBACK.as_millis() as i64)
}

/// A Prometheus duration (`5m`, `1h30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    promql_parser::util::duration::parse_duration(text).ok()
}
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(300);

impl QueryEngine {
    /// Evaluates PromQL over `range` (an instant query when start = end).
    pub async fn promql(&self, text: &str, range: EvalRange, instant: bool) -> Result<PromResult, PromError> {
        let started = std::time::Instant::now();
        let expr = errors::parse(text)?;
        if !instant && (range.end_ms - range.start_ms) / range.step_ms.max(1) >= MAX_POINTS {
            return Err(PromError::BadData(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try decreasing the query resolution (?step=XX)"
            )));
        }
        let run = async {
            let compiler = compile::Compiler::new(self, range, DEFAULT_LOOKBACK.as_millis() as i64);
            let value = compiler.compile(&expr).await?;
            if !instant && matches!(value, compile::Value::Matrix(_)) {
                return Err(PromError::BadData("invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into()));
            }
            result::collect(value, range, instant, compile::sort_order(&expr)).await
        };
        let outcome = match tokio::time::timeout(self.options().timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(PromError::Timeout(self.options().timeout)),
        };
        metrics::histogram!("vigil_query_duration_seconds", "language" => "promql", "outcome" => if outcome.is_ok() { "ok" } else { "error" })
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}

#[cfg(test)]
mod tests;
