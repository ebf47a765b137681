//! PromQL, compiled to DataFusion plans.
//!
//! ```text
//!  text ──promql-parser──► AST ──compile──► DataFusion plan ──execute──► rows ──► result
//! ```
//! A selector becomes a scan of its metric's table (matchers and the time range pushed down),
//! read a partition at a time by the step sweep ([`sweep`]), which evaluates the instant
//! lookup or a range function at every step and yields one row per (series, step): columns
//! are the labels, `#ts` (ms) and `#value` (no label name can hold `#`). `sum`/`avg`/`count`/
//! `min`/`max`/`group` straight over a selector are folded into the sweep; other aggregations are `GROUP BY`
//! over labels and step, vector matching is a join on the matching labels and step, set
//! operators are semi/anti joins. Semantics follow Prometheus 2.42: a 5-minute lookback,
//! closed range windows, stale markers ending a series, 2.x rate extrapolation.

mod chunk_scan;
mod compile;
mod errors;
mod exemplars;
pub mod kernels;
mod labelsets;
mod pushdown;
mod result;
mod series;
mod sweep;
pub mod udf;

use std::time::Duration;

pub use compile::{TS as TS_COLUMN, VALUE as VALUE_COLUMN};
pub use errors::PromError;
pub(crate) use exemplars::selectors;
pub use exemplars::{ExemplarPoint, ExemplarSeries};
pub use result::{Labels, PromResult, Sample, Series};

use crate::QueryEngine;

/// The time frame of an evaluation, in ms, and whether it is an instant query (`/query`:
/// one step, a range vector allowed at the top, a scalar answered as a scalar) or a range
/// query (`/query_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalRange {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub kind: EvalKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalKind {
    Instant,
    Range,
}

impl EvalRange {
    /// An instant query at `at_ms`.
    pub fn instant(at_ms: i64) -> Self {
        EvalRange { start_ms: at_ms, end_ms: at_ms, step_ms: 1, kind: EvalKind::Instant }
    }

    /// A range query: every `step_ms` from `start_ms` to `end_ms`.
    pub fn range(start_ms: i64, end_ms: i64, step_ms: i64) -> Self {
        EvalRange { start_ms, end_ms, step_ms, kind: EvalKind::Range }
    }

    pub fn is_instant(&self) -> bool {
        self.kind == EvalKind::Instant
    }
}

/// Most points per series a range query may produce (as Prometheus).
pub const MAX_POINTS: i64 = 11_000;

/// Earliest and latest time a query may name, in ms: what storage can hold (nanoseconds in
/// an i64: 1677-09-21 to 2262-04-11).
pub const MIN_TIME_MS: i64 = i64::MIN / 1_000_000;
pub const MAX_TIME_MS: i64 = i64::MAX / 1_000_000;

/// Checks an evaluation's frame: times storage can hold, in order, a positive step, and at
/// most [`MAX_POINTS`] steps per series for a range query. Arithmetic in i128: nothing wraps.
pub fn check_range(range: EvalRange) -> Result<(), PromError> {
    for (name, ms) in [("start", range.start_ms), ("end", range.end_ms)] {
        if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
            return Err(PromError::BadData(format!(
                "invalid parameter \"{name}\": {ms} ms is outside the times Vigil can hold (1677-09-21 to 2262-04-11)"
            )));
        }
    }
    if range.is_instant() {
        return Ok(());
    }
    if range.end_ms < range.start_ms {
        return Err(PromError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    if range.step_ms <= 0 {
        return Err(PromError::BadData(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (i128::from(range.end_ms) - i128::from(range.start_ms)) / i128::from(range.step_ms) >= i128::from(MAX_POINTS) {
        return Err(PromError::BadData(format!(
            "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try decreasing the query resolution (?step=XX)"
        )));
    }
    Ok(())
}

/// Parses PromQL text (no shape bounds: see [`crate::guard::QueryShape::parse_promql`]).
pub(crate) fn parse_text(text: &str) -> Result<promql_parser::parser::Expr, PromError> {
    errors::parse(text)
}

/// A compiler for reading raw selector samples (SLI sources); its steps are unused.
pub(crate) fn compile_for_sources(engine: &QueryEngine) -> compile::Compiler<'_> {
    compile::Compiler::new(engine, EvalRange::instant(0), DEFAULT_LOOKBACK.as_millis() as i64)
}

/// The metric a selector names: by name (`up{...}`) or by an `__name__="..."` matcher.
pub(crate) fn metric_name(selector: &promql_parser::parser::VectorSelector) -> Option<&str> {
    selector.name.as_deref().or_else(|| {
        selector
            .matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == promql_parser::label::MatchOp::Equal)
            .map(|m| m.value.as_str())
    })
}

/// A Prometheus duration (`5m`, `1h30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    promql_parser::util::duration::parse_duration(text).ok()
}
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(300);

impl QueryEngine {
    /// Evaluates PromQL over `range`.
    pub async fn promql(&self, text: &str, range: EvalRange) -> Result<PromResult, PromError> {
        let started = std::time::Instant::now();
        check_range(range)?;
        let expr = self.parse_promql(text).await?;
        let engine = self.clone();
        let work = async move {
            match engine.evaluate(&expr, range).await {
                // A damaged segment: move it aside and answer from the rest.
                Err(PromError::Storage(message)) => {
                    match engine.storage().quarantine_damaged(&engine.tables_of(&expr)).await {
                        Ok(moved) if moved > 0 => engine.evaluate(&expr, range).await,
                        _ => Err(PromError::Storage(message)),
                    }
                }
                other => other,
            }
        };
        let outcome = self.within_timeout(work).await;
        metrics::histogram!("vigil_query_duration_seconds", "language" => "promql", "outcome" => if outcome.is_ok() { "ok" } else { "error" })
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}

impl QueryEngine {
    /// The raw samples, stale markers included, of every series `matchers` select in
    /// `[start_ms, end_ms]` (Prometheus's remote read), within the query limits: time,
    /// memory and result size.
    pub async fn raw_series(
        &self,
        matchers: promql_parser::label::Matchers,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, PromError> {
        if matchers.matchers.iter().all(|m| m.is_match("")) {
            return Err(PromError::BadData("at least one matcher must not match the empty value".into()));
        }
        let selector = promql_parser::parser::VectorSelector::new(None, matchers);
        let engine = self.clone();
        let work = async move {
            let compiler = compile_for_sources(&engine);
            let Some((frame, labels)) = compiler.selector_rows(&selector, start_ms, end_ms).await? else {
                return Ok(Vec::new());
            };
            let batches = engine.read(frame).await?;
            result::series(&batches, &labels)
        };
        self.within_timeout(work).await
    }
}

impl QueryEngine {
    async fn evaluate(&self, expr: &promql_parser::parser::Expr, range: EvalRange) -> Result<PromResult, PromError> {
        let compiler = compile::Compiler::new(self, range, DEFAULT_LOOKBACK.as_millis() as i64);
        let value = compiler.compile_answer(expr).await?;
        if !range.is_instant() && matches!(value, compile::Value::Matrix(_)) {
            return Err(PromError::BadData(
                "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
            ));
        }
        result::collect(value, range, compile::sort_order(expr)).await
    }

    /// The metric tables an expression's selectors may read (every one for a selector
    /// without a metric name).
    fn tables_of(&self, expr: &promql_parser::parser::Expr) -> std::collections::BTreeSet<String> {
        let mut selectors = Vec::new();
        exemplars::selectors(expr, &mut selectors);
        let mut tables = std::collections::BTreeSet::new();
        for selector in selectors {
            match metric_name(selector) {
                Some(name) => {
                    tables.insert(vigil_storage::schema::metric_table_name(name).into_owned());
                }
                None => tables.extend(
                    self.metric_names().iter().map(|m| vigil_storage::schema::metric_table_name(m).into_owned()),
                ),
            }
        }
        tables
    }

    /// Runs `work` on the query threads under the query timeout: every query, metadata ones
    /// included.
    pub(crate) async fn within_timeout<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, PromError>> + Send + 'static,
    ) -> Result<T, PromError> {
        match self.bounded(work).await {
            Ok(result) => result,
            Err(crate::engine::Interrupted::Timeout(timeout)) => Err(PromError::Timeout(timeout)),
            Err(crate::engine::Interrupted::Failed(failed)) => {
                Err(PromError::Internal(format!("the query's task failed: {failed}")))
            }
        }
    }

    /// Parses PromQL within the length and depth bounds.
    pub async fn parse_promql(&self, text: &str) -> Result<promql_parser::parser::Expr, PromError> {
        self.options().shape.parse_promql(text).await.map_err(|e| PromError::BadData(e.to_string()))?
    }
}

#[cfg(test)]
mod tests;
