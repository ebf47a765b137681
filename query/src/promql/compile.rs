//! Compiles a PromQL AST into DataFusion plans (see the module docs for the row shapes).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{ScalarValue, TableReference};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{array_agg, avg, count, max, min, stddev_pop, sum, var_pop};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, JoinType, ScalarUDF, when};
use datafusion::prelude::{Expr, cast, coalesce, concat_ws, ident, isnan, lit, nullif, regexp_like};
use futures::future::BoxFuture;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr as PromExpr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use vigil_storage::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN, label_column_name, label_columns, label_name_of_column};

use super::EvalRange;
use super::chunk_scan::{ChunkScan, TableRead};
use super::errors::PromError;
use super::kernels::{BinaryOp, RangeFunction};
use super::labelsets;
use super::sweep::{Fold, Sweep, SweepChunk, SweepLanes, SweepSpec, chunk_bounds, join_chunks_within, lane_starts};
use super::udf::{
    BinaryUdf, CompareUdf, FormatValueUdf, HistogramQuantileUdf, LabelRegexUdf, LabelReplaceUdf, MathFunction, MathUdf,
    MillisecondsUdf, QuantileUdf, SampleBudget, Steps,
};
use crate::QueryEngine;

// The plans' own columns carry `#`, which no label name can hold (`[a-zA-Z_][a-zA-Z0-9_]*`):
// whatever labels a sender invents (`__ts__`, `__value__`, ...), they never meet these.
pub const TS: &str = "#ts";
pub const VALUE: &str = "#value";
pub const NAME: &str = "__name__";
const RIGHT: &str = "#r:";

/// A metric table a selector reads, with its label columns and the matchers' filters.
struct SelectorTable {
    table: String,
    metric: String,
    schema: datafusion::arrow::datatypes::SchemaRef,
    columns: BTreeSet<String>,
    filters: Vec<Expr>,
}

/// What a selector reads: its tables, the labels of their rows, and — for a selector without
/// a metric name over several tables — the tables as one ([`vigil_storage::metric_set`]):
/// one scan per shared segment instead of one per table.
struct Selection {
    tables: Vec<SelectorTable>,
    labels: Vec<String>,
    set: Option<SelectedSet>,
}

impl Selection {
    /// The labels every row of the selection has alike, and their value: the metric name
    /// of one table.
    fn constants(&self) -> Vec<(String, String)> {
        match self.tables.as_slice() {
            [table] if self.set.is_none() && self.labels.iter().any(|l| l == NAME) => {
                vec![(NAME.to_string(), table.metric.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// The labels of the rows read, but for `constants`.
    fn row_labels<'s>(&'s self, constants: &'s [(String, String)]) -> impl Iterator<Item = &'s String> {
        self.labels.iter().filter(|label| !constants.iter().any(|(constant, _)| constant == *label))
    }
}

/// Tables read as one, with the union of their label columns and the matchers' filters.
struct SelectedSet {
    provider: Arc<vigil_storage::metric_set::MetricSet>,
    columns: BTreeSet<String>,
    filters: Vec<Expr>,
}

impl SelectedSet {
    fn provider(&self, reading: Reading) -> Arc<dyn datafusion::catalog::TableProvider> {
        match reading {
            Reading::Samples => self.provider.clone(),
            Reading::SweptSamples => Arc::new(self.provider.labelled_by_index()),
            Reading::Series => Arc::new(self.provider.series_only()),
        }
    }
}

impl SelectorTable {
    /// The table, read locally.
    fn provider(
        &self,
        storage: &vigil_storage::Storage,
        reading: Reading,
    ) -> Arc<dyn datafusion::catalog::TableProvider> {
        let schema = self.schema.clone();
        match reading {
            Reading::Samples => storage.table_provider(&self.table, schema),
            Reading::SweptSamples => storage.table_reading(
                &self.table,
                schema,
                vigil_storage::series_index::SegmentReading::RowsLabelledByIndex,
            ),
            Reading::Series => storage.series_provider(&self.table, schema),
        }
    }
}

/// What a selector's rows are read for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Every sample.
    Samples,
    /// Every sample, for the sweep: labels as the series index has them where it can (see
    /// `MetricSet::labelled_by_index`), without the labels [`Selection::constants`] gives,
    /// and (read locally) `#ts` in the tables' nanoseconds, which the sweep converts as it
    /// copies.
    SweptSamples,
    /// The series: one row or more per series, time and value not the samples'.
    Series,
}

/// Most tables one union plan holds (see `Compiler::union_in_groups`).
const UNION_FAN_IN: usize = 64;

/// One union of `inputs` (never a chain of two-way unions, which the optimizer flattens in
/// time quadratic in its length).
fn union_of(
    inputs: Vec<Arc<datafusion::logical_expr::LogicalPlan>>,
) -> Result<datafusion::logical_expr::LogicalPlan, PromError> {
    Ok(datafusion::logical_expr::LogicalPlan::Union(datafusion::logical_expr::Union::try_new_with_loose_types(inputs)?))
}

/// Subqueries without a step use Prometheus's default evaluation interval.
const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// Rows of (labels, `#ts`, `#value`): one sample per series and step.
#[derive(Clone)]
pub struct VectorPlan {
    pub frame: DataFrame,
    /// Label columns, sorted.
    pub labels: Vec<String>,
    /// When the rows are a step sweep's output, as it is or finished by one function of its
    /// series: what gives the same answer as series, without rows (see [`SweepLanes::series`]).
    pub sweep: Option<SweptAnswer>,
}

/// A sweep's lanes and what finishes their series into the answer, if anything.
#[derive(Clone, Debug)]
pub struct SweptAnswer {
    pub lanes: SweepLanes,
    pub finish: Option<Finish>,
}

/// A function of a sweep's series computed over them (see `result::swept`) instead of
/// planned over their rows: a dashboard's `topk` or `histogram_quantile` then costs no
/// aggregation or window plan.
#[derive(Clone, Debug)]
pub enum Finish {
    Top(Top),
    /// `histogram_quantile(q, ...)` over series labelled with `labels` (the sweep's, `le`
    /// and the metric name among them).
    HistogramQuantile {
        q: f64,
        labels: Vec<String>,
    },
}

/// `topk(k, ...)`/`bottomk(k, ...)` by `group`: at each step, the `k` largest (smallest)
/// values of each group, NaN last, ties to the series first in label order.
#[derive(Clone, Debug)]
pub struct Top {
    pub k: f64,
    pub descending: bool,
    pub group: Vec<String>,
}

impl MatrixPlan {
    /// The label columns of the chunks' rows.
    pub fn row_labels(&self) -> &[String] {
        &self.labels[..self.labels.len().saturating_sub(self.constants.len())]
    }

    /// The values of `constants`, as a series' labels hold them.
    pub fn constant_values(&self) -> Vec<Option<String>> {
        self.constants.iter().map(|(_, value)| Some(value.clone())).collect()
    }
}

impl VectorPlan {
    fn of(frame: DataFrame, labels: Vec<String>) -> VectorPlan {
        VectorPlan { frame, labels, sweep: None }
    }
}

/// The samples of a range vector: rows of (labels, `#ts`, `#value`) in chunks of time, read
/// one chunk at a time by the step sweep (see [`super::sweep`]), and where its windows are.
#[derive(Clone)]
pub struct MatrixPlan {
    pub chunks: Vec<SweepChunk>,
    /// Every series' labels: the chunks' label columns, and then `constants`.
    pub labels: Vec<String>,
    /// (label, value) every series has that the chunks' rows leave out: a one-table
    /// selector's metric name, which as a column was a constant array built, and a label
    /// compared, per batch.
    pub constants: Vec<(String, String)>,
    pub range_ms: i64,
    pub offset_ms: i64,
    pub at_ms: Option<i64>,
}

#[derive(Clone)]
pub enum ScalarPlan {
    Constant(f64),
    /// Rows of (`#ts`, `#value`), one per step.
    Frame(DataFrame),
}

pub enum Value {
    Vector(VectorPlan),
    Matrix(MatrixPlan),
    Scalar(ScalarPlan),
    String(String),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Vector(_) => "instant vector",
            Value::Matrix(_) => "range vector",
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
        }
    }
}

fn bad(message: impl Into<String>) -> PromError {
    PromError::BadData(message.into())
}

fn wrong_type(expected: &str, got: &Value) -> PromError {
    bad(format!("expected {expected}, got {}", got.kind()))
}

/// Durations and `@` times are held within what storage can hold (see
/// [`super::check_range`]): sums of a few of them never overflow an i64.
const LONGEST_DURATION_MS: i64 = super::MAX_TIME_MS - super::MIN_TIME_MS;

fn ms(duration: &std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX).min(LONGEST_DURATION_MS)
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => ms(d),
        Some(Offset::Neg(d)) => -ms(d),
    }
}

fn time_ms(time: &SystemTime) -> i64 {
    let ms = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    };
    ms.clamp(super::MIN_TIME_MS, super::MAX_TIME_MS)
}

fn null_label() -> Expr {
    lit(ScalarValue::Utf8(None))
}

/// A label's value for matching: absent labels are the empty string.
fn label_or_empty(column: Option<String>) -> Expr {
    match column {
        Some(column) => coalesce(vec![ident(column), lit("")]),
        None => lit(""),
    }
}

fn union_labels<'a>(sets: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
    sets.into_iter().flatten().cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

/// The `sort`/`sort_desc` at the top of a query, which orders an instant result.
pub fn sort_order(expr: &PromExpr) -> Option<bool> {
    match expr {
        PromExpr::Paren(p) => sort_order(&p.expr),
        PromExpr::Call(call) if call.func.name == "sort" => Some(false),
        PromExpr::Call(call) if call.func.name == "sort_desc" => Some(true),
        // An instant query's `topk` answers largest first, `bottomk` smallest first.
        PromExpr::Aggregate(aggregate) if aggregate.op.id() == token::T_TOPK => Some(true),
        PromExpr::Aggregate(aggregate) if aggregate.op.id() == token::T_BOTTOMK => Some(false),
        _ => None,
    }
}

pub struct Compiler<'a> {
    engine: &'a QueryEngine,
    range: EvalRange,
    lookback_ms: i64,
    /// The Ballista session of this query, made when a selector first needs it.
    distributed: tokio::sync::OnceCell<datafusion::prelude::SessionContext>,
    /// Samples the whole query may load and produce (subqueries share it).
    budget: SampleBudget,
}

impl<'a> Compiler<'a> {
    pub fn new(engine: &'a QueryEngine, range: EvalRange, lookback_ms: i64) -> Self {
        let budget = SampleBudget::new(engine.options().max_samples);
        Compiler { engine, range, lookback_ms, distributed: tokio::sync::OnceCell::new(), budget }
    }

    /// A compiler for a subquery's steps, on this query's budget.
    fn inner(&self, range: EvalRange) -> Result<Compiler<'a>, PromError> {
        // Steps are materialised per series: refuse a subquery whose steps alone pass the
        // budget before it allocates them.
        let steps = (i128::from(range.end_ms) - i128::from(range.start_ms)) / i128::from(range.step_ms.max(1)) + 1;
        if steps > i128::try_from(self.budget.limit()).unwrap_or(i128::MAX) {
            return Err(PromError::ResourcesExhausted(format!(
                "query processing would load too many samples into memory in query execution: a subquery of {steps} steps per series (more than {}, query.max_samples)",
                self.budget.limit()
            )));
        }
        Ok(Compiler {
            engine: self.engine,
            range,
            lookback_ms: self.lookback_ms,
            distributed: tokio::sync::OnceCell::new(),
            budget: self.budget.clone(),
        })
    }

    fn steps(&self) -> Steps {
        Steps { start: self.range.start_ms, end: self.range.end_ms, step: self.range.step_ms }
    }

    fn at_ms(&self, at: &Option<AtModifier>) -> Option<i64> {
        match at {
            None => None,
            Some(AtModifier::Start) => Some(self.range.start_ms),
            Some(AtModifier::End) => Some(self.range.end_ms),
            Some(AtModifier::At(time)) => Some(time_ms(time)),
        }
    }

    /// An operand's value: refused at execution where the expression may give two samples of
    /// one label set at one step (see [`labelsets`]).
    pub fn compile<'b>(&'b self, expr: &'b PromExpr) -> BoxFuture<'b, Result<Value, PromError>> {
        Box::pin(async move {
            match self.compile_answer(expr).await? {
                Value::Vector(vector) if labelsets::may_repeat(expr) => Ok(Value::Vector(labelsets::checked(vector)?)),
                value => Ok(value),
            }
        })
    }

    /// The query's own value, unchecked: the answer's series are checked when it is shaped.
    pub fn compile_answer<'b>(&'b self, expr: &'b PromExpr) -> BoxFuture<'b, Result<Value, PromError>> {
        Box::pin(async move {
            match expr {
                PromExpr::NumberLiteral(n) => Ok(Value::Scalar(ScalarPlan::Constant(n.val))),
                PromExpr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
                PromExpr::Paren(p) => self.compile_answer(&p.expr).await,
                PromExpr::VectorSelector(vs) => {
                    let samples = self.series_samples(vs, self.lookback_ms).await?;
                    Ok(Value::Vector(self.apply_steps(
                        samples,
                        RangeFunction::Instant,
                        self.lookback_ms,
                        [0.0; 2],
                        true,
                    )?))
                }
                PromExpr::MatrixSelector(selector) => {
                    Ok(Value::Matrix(self.series_samples(&selector.vs, ms(&selector.range)).await?))
                }
                PromExpr::Subquery(subquery) => Ok(Value::Matrix(self.subquery(subquery).await?)),
                PromExpr::Unary(unary) => {
                    let value = self.compile(&unary.expr).await?;
                    self.arithmetic_with_constant(value, BinaryOp::Mul, -1.0)
                }
                PromExpr::Binary(binary) => self.binary(binary).await,
                PromExpr::Aggregate(aggregate) => self.aggregate(aggregate).await,
                PromExpr::Call(call) => self.call(call).await,
                PromExpr::Extension(_) => Err(bad("extension expressions are not supported")),
            }
        })
    }

    // ---- selectors -------------------------------------------------------------------

    /// Metric tables a selector may read, with their metric names.
    fn tables_for(
        &self,
        selector: &VectorSelector,
        schemas: &std::collections::HashMap<String, datafusion::arrow::datatypes::SchemaRef>,
    ) -> Vec<(String, String)> {
        let name_matchers: Vec<&Matcher> = selector.matchers.matchers.iter().filter(|m| m.name == NAME).collect();
        let candidates: Vec<String> = match &selector.name {
            Some(name) => vec![name.clone()],
            None => self.engine.metric_names(),
        };
        candidates
            .into_iter()
            .filter(|metric| name_matchers.iter().all(|m| m.is_match(metric)))
            .map(|metric| (vigil_storage::schema::metric_table_name(&metric).into_owned(), metric))
            .filter(|(table, _)| schemas.contains_key(table))
            .collect()
    }

    /// A selector's samples in the time span the steps need, in chunks of time that follow
    /// the storage partitions (each chunk's scan reads only its partitions' segments).
    async fn series_samples(&self, selector: &VectorSelector, window_ms: i64) -> Result<MatrixPlan, PromError> {
        let offset = offset_ms(&selector.offset);
        let at = self.at_ms(&selector.at);
        let (first, last) = at.map_or((self.range.start_ms, self.range.end_ms), |a| (a, a));
        let (low_ms, high_ms) = (first - offset - window_ms, last - offset);
        let remote = self.distributed_context(high_ms - low_ms).await?;
        let ctx = remote.unwrap_or(self.engine.context());
        let selection = self.selector_tables(ctx, selector).await?;
        if selection.tables.is_empty() {
            return Ok(self.empty_matrix(window_ms, offset, at));
        }
        // The sweep reads labels as the tables keep them: a series' run is a run of equal keys.
        let sweep_labels = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let chunks = if selection.set.is_none() && selection.tables.len() > UNION_FAN_IN {
            // Thousands of tables are read once, in groups (see `union_in_groups`).
            let shape = self.row_shape(ctx, &selection, (low_ms, high_ms), &sweep_labels, Reading::SweptSamples);
            let frame = self.rows_frame(ctx, &shape).await?;
            vec![SweepChunk { high_ms, scan: ChunkScan::Frame(self.one_stream(ctx, frame)), lead_in: None }]
        } else {
            let partition_ms =
                i64::try_from(self.engine.storage().options().partition_duration.as_millis()).unwrap_or(i64::MAX);
            let merged = self.engine.storage().merged_spans_ms(low_ms, high_ms);
            let bounds = join_chunks_within(chunk_bounds(low_ms, high_ms, partition_ms), &merged);
            // Lanes (chunks swept in parallel) when each step has its own window, local, and
            // a lane's lead-in reaches back at most one partition.
            let lanes = if at.is_none() && remote.is_none() && window_ms <= partition_ms {
                lane_starts(&bounds, self.engine.context().copied_config().target_partitions())
            } else {
                Vec::new()
            };
            let mut chunks = Vec::new();
            let shape = |span| self.row_shape(ctx, &selection, span, &sweep_labels, Reading::SweptSamples);
            for (index, (low, high)) in bounds.into_iter().enumerate() {
                let scan = self.chunk_scan(ctx, &shape((low, high))).await?;
                let lead_in = if lanes.contains(&index) {
                    Some(self.chunk_scan(ctx, &shape((low.saturating_sub(window_ms), low - 1))).await?)
                } else {
                    None
                };
                chunks.push(SweepChunk { high_ms: high, scan, lead_in });
            }
            chunks
        };
        // The chunks' label columns first, as a series' labels have them (see `MatrixPlan`).
        let constants = selection.constants();
        let labels =
            selection.row_labels(&constants).chain(constants.iter().map(|(label, _)| label)).cloned().collect();
        Ok(MatrixPlan { chunks, labels, constants, range_ms: window_ms, offset_ms: offset, at_ms: at })
    }

    /// The samples a selector matches in `[low_ms, high_ms]`: rows of (labels, `#ts`,
    /// `#value`) over every matching metric table; `None` when no table can match.
    pub async fn selector_rows(
        &self,
        selector: &VectorSelector,
        low_ms: i64,
        high_ms: i64,
    ) -> Result<Option<(DataFrame, Vec<String>)>, PromError> {
        self.selector_read(selector, low_ms, high_ms, Reading::Samples).await
    }

    /// At least one row per series a selector matches with samples in `[low_ms, high_ms]`
    /// (labels as in [`Self::selector_rows`]; time and value are not the samples'): shared
    /// segments answer from their series index without reading samples.
    pub async fn selector_series(
        &self,
        selector: &VectorSelector,
        low_ms: i64,
        high_ms: i64,
    ) -> Result<Option<(DataFrame, Vec<String>)>, PromError> {
        self.selector_read(selector, low_ms, high_ms, Reading::Series).await
    }

    async fn selector_read(
        &self,
        selector: &VectorSelector,
        low_ms: i64,
        high_ms: i64,
        reading: Reading,
    ) -> Result<Option<(DataFrame, Vec<String>)>, PromError> {
        let ctx = self.engine.context();
        let selection = self.selector_tables(ctx, selector).await?;
        if selection.tables.is_empty() {
            return Ok(None);
        }
        let frame =
            self.rows_frame(ctx, &self.row_shape(ctx, &selection, (low_ms, high_ms), &DataType::Utf8, reading)).await?;
        Ok(Some((frame, selection.labels)))
    }

    /// A sweep chunk's rows: a local read of one table (or one set of shared segments) is
    /// planned by hand, the rest as a frame.
    async fn chunk_scan(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        shape: &RowShape<'_>,
    ) -> Result<ChunkScan, PromError> {
        let selection = shape.selection;
        let read = match (&selection.set, selection.tables.as_slice()) {
            _ if !shape.local => None,
            (Some(set), _) => {
                let name = ident(vigil_storage::metric_set::TABLE_COLUMN);
                Some((set.provider(shape.reading), shape.exprs(&set.filters, name, &set.columns)))
            }
            (None, [table]) => Some((
                table.provider(self.engine.storage(), shape.reading),
                shape.exprs(&table.filters, lit(table.metric.clone()), &table.columns),
            )),
            _ => None,
        };
        if let Some((provider, (filters, projection))) = read {
            let (state, task) = (self.engine.one_stream_state(), self.engine.one_stream_task());
            return Ok(ChunkScan::Table(Arc::new(TableRead { state, task, provider, filters, projection })));
        }
        let frame = self.rows_frame(ctx, shape).await?;
        Ok(ChunkScan::Frame(self.one_stream(ctx, frame)))
    }

    /// How a selection's rows in `[low_ms, high_ms]` are read (see [`RowShape`]).
    fn row_shape<'s>(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        selection: &'s Selection,
        (low_ms, high_ms): (i64, i64),
        label_type: &'s DataType,
        reading: Reading,
    ) -> RowShape<'s> {
        let local = std::ptr::eq(ctx, self.engine.context());
        let constants = if reading == Reading::SweptSamples { selection.constants() } else { Vec::new() };
        let (low_ns, high_ns) = (low_ms.saturating_mul(1_000_000), high_ms.saturating_mul(1_000_000));
        RowShape { selection, constants, low_ns, high_ns, label_type, reading, local }
    }

    /// A sweep chunk's frame as one stream (see `QueryEngine::one_stream`); a distributed
    /// session plans its own.
    fn one_stream(&self, ctx: &datafusion::prelude::SessionContext, frame: DataFrame) -> DataFrame {
        if std::ptr::eq(ctx, self.engine.context()) { self.engine.one_stream(frame) } else { frame }
    }

    /// The Ballista session, when distributed queries are on and `span_ms` is long enough.
    async fn distributed_context(
        &self,
        span_ms: i64,
    ) -> Result<Option<&datafusion::prelude::SessionContext>, PromError> {
        let Some(ballista) = &self.engine.options().ballista else { return Ok(None) };
        if (span_ms as i128) * 1_000_000 < ballista.min_range.as_nanos() as i128 {
            return Ok(None);
        }
        let ctx =
            self.distributed.get_or_try_init(|| crate::distributed::session(self.engine.storage(), ballista)).await?;
        metrics::counter!("vigil_query_distributed_total", "language" => "promql").increment(1);
        Ok(Some(ctx))
    }

    /// The metric tables a selector may read, with their label filters, and the label
    /// columns of its rows (the union of theirs, and `__name__`).
    async fn selector_tables(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        selector: &VectorSelector,
    ) -> Result<Selection, PromError> {
        if !selector.matchers.or_matchers.is_empty() {
            return Err(bad("`or` in label matchers is not supported"));
        }
        let storage = self.engine.storage();
        let local = std::ptr::eq(ctx, self.engine.context());
        // A named selector needs its one table's schema, not every table's (thousands of names).
        let schemas = match &selector.name {
            Some(name) => {
                let table = vigil_storage::schema::metric_table_name(name);
                storage.table_schema(&table).map(|schema| (table.into_owned(), schema)).into_iter().collect()
            }
            None => storage.metric_table_schemas(),
        };
        let nameless = selector.name.is_none();
        // A selector without a metric name may span thousands of tables: an equality the
        // tables' statistics rule out drops a table before planning (one pass per matcher).
        let possible_tables: Vec<Option<std::collections::HashSet<String>>> = selector
            .matchers
            .matchers
            .iter()
            .filter(|m| m.name != NAME)
            .map(|m| {
                (nameless && m.op == MatchOp::Equal && !m.value.is_empty())
                    .then(|| storage.tables_may_hold_label(&label_column_name(&m.name), &m.value))
            })
            .collect();
        let mut tables = Vec::new();
        for (index, (table, metric)) in self.tables_for(selector, &schemas).into_iter().enumerate() {
            if index % 256 == 255 {
                // Thousands of tables: let the query timeout (and everyone else) in.
                tokio::task::yield_now().await;
            }
            let Some(schema) = schemas.get(&table).cloned() else { continue };
            if !local && !ctx.table_exist(TableReference::bare(table.as_str()))? {
                continue;
            }
            let columns: BTreeSet<String> = label_columns(&schema).map(str::to_string).collect();
            let mut filters = Vec::new();
            let mut possible = true;
            for (matcher, holding) in selector.matchers.matchers.iter().filter(|m| m.name != NAME).zip(&possible_tables)
            {
                let column = label_column_name(&matcher.name).into_owned();
                if columns.contains(&column) {
                    possible &= holding.as_ref().is_none_or(|tables| tables.contains(&table));
                    filters.push(matcher_filter(matcher, &column, local));
                } else if !matcher.is_match("") {
                    possible = false;
                }
            }
            if possible {
                tables.push(SelectorTable { table, metric, schema, columns, filters });
            }
        }
        let labels: Vec<String> = tables
            .iter()
            .flat_map(|t| t.columns.iter().map(|c| label_name_of_column(c).to_string()))
            .chain([NAME.to_string()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let set = if local && nameless && tables.len() > 1 { self.selected_set(selector, &tables) } else { None };
        Ok(Selection { tables, labels, set })
    }

    /// The tables as one, when every one is named like its metric and all their flushed rows
    /// are in shared segments.
    fn selected_set(&self, selector: &VectorSelector, tables: &[SelectorTable]) -> Option<SelectedSet> {
        if tables.iter().any(|t| t.table != t.metric) {
            return None;
        }
        let provider =
            self.engine.storage().metric_set(tables.iter().map(|t| (t.table.as_str(), t.schema.as_ref())))?;
        let columns: BTreeSet<String> = tables.iter().flat_map(|t| t.columns.iter().cloned()).collect();
        let mut filters = Vec::new();
        for matcher in selector.matchers.matchers.iter().filter(|m| m.name != NAME) {
            let column = label_column_name(&matcher.name).into_owned();
            if !columns.contains(&column) {
                continue; // no table has the label: the tables chosen all match it empty
            }
            filters.push(matcher_filter(matcher, &column, true));
        }
        Some(SelectedSet { provider: Arc::new(provider), columns, filters })
    }

    /// The rows of a selection's tables with samples in the shape's time span, in its columns.
    async fn rows_frame(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        shape: &RowShape<'_>,
    ) -> Result<DataFrame, PromError> {
        let selection = shape.selection;
        let rows = |frame: DataFrame,
                    filters: &[Expr],
                    name: Expr,
                    columns: &BTreeSet<String>|
         -> Result<DataFrame, PromError> {
            let (filters, projection) = shape.exprs(filters, name, columns);
            let filter = filters.into_iter().reduce(Expr::and).unwrap_or(lit(true));
            Ok(frame.filter(filter)?.select(projection)?)
        };
        if let Some(set) = &selection.set {
            let name = ident(vigil_storage::metric_set::TABLE_COLUMN);
            return rows(ctx.read_table(set.provider(shape.reading))?, &set.filters, name, &set.columns);
        }
        let mut inputs: Vec<Arc<datafusion::logical_expr::LogicalPlan>> = Vec::with_capacity(selection.tables.len());
        for table in &selection.tables {
            let frame = if shape.local {
                ctx.read_table(table.provider(self.engine.storage(), shape.reading))?
            } else {
                ctx.table(TableReference::bare(table.table.as_str())).await?
            };
            let frame = rows(frame, &table.filters, lit(table.metric.clone()), &table.columns)?;
            inputs.push(Arc::new(frame.into_unoptimized_plan()));
        }
        match inputs.len() {
            0 => Err(PromError::Internal("rows of no table".into())),
            1 => Ok(DataFrame::new(ctx.state(), Arc::unwrap_or_clone(inputs.remove(0)))),
            n if n <= UNION_FAN_IN => Ok(DataFrame::new(ctx.state(), union_of(inputs)?)),
            _ => self.union_in_groups(ctx, inputs).await,
        }
    }

    /// The rows of more tables than one union should hold: DataFusion checks a union's schema
    /// against every pair of its inputs, each time a plan is rewritten, so thousands of
    /// tables in one union plan for minutes. Groups of [`UNION_FAN_IN`] run one after the
    /// other and their rows, counted against the sample budget, are read as one table.
    async fn union_in_groups(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        inputs: Vec<Arc<datafusion::logical_expr::LogicalPlan>>,
    ) -> Result<DataFrame, PromError> {
        let schema = Arc::new(Schema::new(
            inputs[0]
                .schema()
                .as_arrow()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let mut batches = Vec::new();
        let groups: Vec<Vec<Arc<datafusion::logical_expr::LogicalPlan>>> =
            inputs.chunks(UNION_FAN_IN).map(<[_]>::to_vec).collect();
        for mut group in groups {
            let plan = if group.len() == 1 { Arc::unwrap_or_clone(group.remove(0)) } else { union_of(group)? };
            let rows = DataFrame::new(ctx.state(), plan).collect().await?;
            for batch in rows {
                self.budget.take(batch.num_rows())?;
                batches.push(
                    RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                        .map_err(|e| PromError::Internal(e.to_string()))?,
                );
            }
            tokio::task::yield_now().await;
        }
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
        Ok(self.engine.context().read_table(Arc::new(table))?)
    }

    fn empty_matrix(&self, range_ms: i64, offset_ms: i64, at_ms: Option<i64>) -> MatrixPlan {
        MatrixPlan { chunks: Vec::new(), labels: Vec::new(), constants: Vec::new(), range_ms, offset_ms, at_ms }
    }

    /// Evaluates `function` over every series' windows at every step.
    fn apply_steps(
        &self,
        matrix: MatrixPlan,
        function: RangeFunction,
        window_ms: i64,
        params: [f64; 2],
        keep_name: bool,
    ) -> Result<VectorPlan, PromError> {
        let labels: Vec<String> = matrix.labels.iter().filter(|l| keep_name || *l != NAME).cloned().collect();
        self.sweep(matrix, function, window_ms, params, labels, None)
    }

    /// The step sweep over `matrix`, its rows labelled with `labels`; with a fold, one row per
    /// group of `labels` and step.
    fn sweep(
        &self,
        matrix: MatrixPlan,
        function: RangeFunction,
        window_ms: i64,
        params: [f64; 2],
        labels: Vec<String>,
        fold: Option<Fold>,
    ) -> Result<VectorPlan, PromError> {
        let spec = SweepSpec {
            function,
            steps: self.steps(),
            range_ms: window_ms,
            offset_ms: matrix.offset_ms,
            at_ms: matrix.at_ms,
            params,
            budget: self.budget.clone(),
            fold,
            workers: self.engine.context().copied_config().target_partitions(),
        };
        let constants = matrix.constant_values();
        let (schema, lanes) = Sweep::lanes(spec, matrix.chunks, matrix.labels, constants, labels.clone());
        let table = datafusion::catalog::streaming::StreamingTable::try_new(schema, lanes.partitions())?;
        Ok(VectorPlan {
            frame: self.engine.context().read_table(Arc::new(table))?,
            labels,
            sweep: Some(SweptAnswer { lanes, finish: None }),
        })
    }

    async fn subquery(&self, subquery: &SubqueryExpr) -> Result<MatrixPlan, PromError> {
        let offset = offset_ms(&subquery.offset);
        let at = self.at_ms(&subquery.at);
        let range_ms = ms(&subquery.range);
        let step = subquery.step.as_ref().map_or(DEFAULT_SUBQUERY_STEP_MS, ms).max(1);
        let (first, last) = at.map_or((self.range.start_ms, self.range.end_ms), |a| (a, a));
        let low = first - offset - range_ms;
        let mut start = step * low.div_euclid(step);
        if start < low {
            start += step;
        }
        let inner = self.inner(EvalRange::range(start, last - offset, step))?;
        let vector = match inner.compile(&subquery.expr).await? {
            Value::Vector(vector) => vector,
            Value::Scalar(scalar) => inner.scalar_to_vector(scalar)?,
            other => return Err(wrong_type("instant vector or scalar in subquery", &other)),
        };
        // The inner steps are computed once, so the sweep reads them as one chunk.
        let chunk = SweepChunk { high_ms: i64::MAX, scan: ChunkScan::Frame(vector.frame), lead_in: None };
        Ok(MatrixPlan {
            chunks: vec![chunk],
            labels: vector.labels,
            constants: Vec::new(),
            range_ms,
            offset_ms: offset,
            at_ms: at,
        })
    }

    // ---- scalars -----------------------------------------------------------------------

    fn steps_frame(&self) -> Result<DataFrame, PromError> {
        let steps: Vec<i64> = self.steps().iter().collect();
        let schema = Arc::new(Schema::new(vec![Field::new(TS, DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(steps))])
            .map_err(|e| PromError::Internal(e.to_string()))?;
        Ok(self.engine.context().read_batch(batch)?)
    }

    fn scalar_frame(&self, scalar: ScalarPlan) -> Result<DataFrame, PromError> {
        match scalar {
            ScalarPlan::Frame(frame) => Ok(frame),
            ScalarPlan::Constant(value) => Ok(self.steps_frame()?.select(vec![ident(TS), lit(value).alias(VALUE)])?),
        }
    }

    fn scalar_to_vector(&self, scalar: ScalarPlan) -> Result<VectorPlan, PromError> {
        Ok(VectorPlan::of(self.scalar_frame(scalar)?, Vec::new()))
    }

    fn time_scalar(&self) -> Result<ScalarPlan, PromError> {
        let frame = self.steps_frame()?;
        Ok(ScalarPlan::Frame(
            frame.select(vec![ident(TS), (cast(ident(TS), DataType::Float64) / lit(1000.0)).alias(VALUE)])?,
        ))
    }

    // ---- binary operators --------------------------------------------------------------

    fn arithmetic_with_constant(&self, value: Value, op: BinaryOp, constant: f64) -> Result<Value, PromError> {
        match value {
            Value::Scalar(ScalarPlan::Constant(v)) => Ok(Value::Scalar(ScalarPlan::Constant(op.apply(v, constant)))),
            Value::Scalar(ScalarPlan::Frame(frame)) => {
                let v = BinaryUdf::new(op).call(vec![ident(VALUE), lit(constant)]);
                Ok(Value::Scalar(ScalarPlan::Frame(frame.select(vec![ident(TS), v.alias(VALUE)])?)))
            }
            Value::Vector(vector) => {
                Ok(Value::Vector(self.vector_scalar(vector, ScalarPlan::Constant(constant), op, false, false)?))
            }
            other => Err(wrong_type("scalar or instant vector", &other)),
        }
    }

    async fn binary(&self, binary: &BinaryExpr) -> Result<Value, PromError> {
        let modifier = binary.modifier.as_ref();
        let (lhs, rhs) = match self.compile(&binary.lhs).await? {
            Value::Vector(left) if super::pushdown::narrows_right(binary.op.id()) => {
                self.narrowed_right(binary, left).await?
            }
            lhs => (lhs, self.compile(&binary.rhs).await?),
        };
        let return_bool = modifier.is_some_and(|m| m.return_bool);
        let op_id = binary.op.id();
        if matches!(op_id, token::T_LAND | token::T_LOR | token::T_LUNLESS) {
            let (Value::Vector(l), Value::Vector(r)) = (lhs, rhs) else {
                return Err(bad("set operators (and, or, unless) need instant vectors on both sides"));
            };
            return Ok(Value::Vector(self.set_operation(op_id, l, r, modifier.and_then(|m| m.matching.as_ref()))?));
        }
        let op = binary_op(binary.op)?;
        match (lhs, rhs) {
            (Value::Scalar(ScalarPlan::Constant(a)), Value::Scalar(ScalarPlan::Constant(b))) => {
                Ok(Value::Scalar(ScalarPlan::Constant(op.apply(a, b))))
            }
            (Value::Scalar(a), Value::Scalar(b)) => {
                let left = self.scalar_frame(a)?;
                let right =
                    self.scalar_frame(b)?.select(vec![ident(TS).alias("__r_ts"), ident(VALUE).alias("__r_v")])?;
                let joined = left.join_on(right, JoinType::Inner, vec![ident(TS).eq(ident("__r_ts"))])?;
                let v = BinaryUdf::new(op).call(vec![ident(VALUE), ident("__r_v")]);
                Ok(Value::Scalar(ScalarPlan::Frame(joined.select(vec![ident(TS), v.alias(VALUE)])?)))
            }
            (Value::Vector(v), Value::Scalar(s)) => {
                Ok(Value::Vector(self.vector_scalar(v, s, op, false, return_bool)?))
            }
            (Value::Scalar(s), Value::Vector(v)) => {
                Ok(Value::Vector(self.vector_scalar(v, s, op, true, return_bool)?))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let card = modifier.map_or(VectorMatchCardinality::OneToOne, |m| m.card.clone());
                Ok(Value::Vector(self.vector_vector(
                    l,
                    r,
                    op,
                    return_bool,
                    &card,
                    modifier.and_then(|m| m.matching.as_ref()),
                )?))
            }
            (l, r) => Err(bad(format!("binary operator between {} and {} is not allowed", l.kind(), r.kind()))),
        }
    }

    /// The two sides of a binary operation whose left side is a vector: the left computed
    /// first when it is small, and its values of the matching labels pushed into the right
    /// side's selectors (see [`super::pushdown`]); otherwise both as planned.
    async fn narrowed_right(&self, binary: &BinaryExpr, left: VectorPlan) -> Result<(Value, Value), PromError> {
        use super::pushdown;
        let labels =
            pushdown::matching_labels(&left.labels, binary.modifier.as_ref().and_then(|m| m.matching.as_ref()), NAME);
        let probe: Vec<Matcher> = labels.iter().map(|l| Matcher::new(MatchOp::Equal, l, "")).collect();
        // Distributed plans stay as they are: their sides run on other nodes.
        if labels.is_empty()
            || self.engine.options().ballista.is_some()
            || pushdown::with_matchers(&binary.rhs, &probe).is_none()
        {
            return Ok((Value::Vector(left), self.compile(&binary.rhs).await?));
        }
        let mut stream = left.frame.clone().execute_stream().await?;
        let (mut batches, mut bytes) = (Vec::new(), 0usize);
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let batch = batch?;
            bytes += batch.get_array_memory_size();
            if bytes > pushdown::MAX_FIRST_BYTES {
                // Large: planned as before (the part read so far is read again in the join).
                return Ok((Value::Vector(left), self.compile(&binary.rhs).await?));
            }
            batches.push(batch);
        }
        drop(stream);
        let matchers = pushdown::matchers_from(&batches, &labels);
        let right = match pushdown::with_matchers(&binary.rhs, &matchers) {
            Some(narrowed) if !matchers.is_empty() => {
                metrics::counter!("vigil_query_pushed_down_matchers_total").increment(matchers.len() as u64);
                self.compile(&narrowed).await?
            }
            _ => self.compile(&binary.rhs).await?,
        };
        // The left side as computed, so the join does not compute it again.
        let schema =
            batches.first().map_or_else(|| Arc::new(left.frame.schema().as_arrow().clone()), RecordBatch::schema);
        let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
        let (state, _) = left.frame.into_parts();
        let plan = datafusion::logical_expr::LogicalPlanBuilder::scan(
            "promql_left",
            datafusion::datasource::provider_as_source(Arc::new(table)),
            None,
        )?
        .build()?;
        Ok((Value::Vector(VectorPlan::of(DataFrame::new(state, plan), left.labels)), right))
    }

    /// Vector ∘ scalar; `swap` when the scalar was on the left.
    fn vector_scalar(
        &self,
        vector: VectorPlan,
        scalar: ScalarPlan,
        op: BinaryOp,
        swap: bool,
        return_bool: bool,
    ) -> Result<VectorPlan, PromError> {
        let (frame, scalar_value) = match scalar {
            ScalarPlan::Constant(c) => (vector.frame, lit(c)),
            ScalarPlan::Frame(s) => {
                let s = s.select(vec![ident(TS).alias("__s_ts"), ident(VALUE).alias("__s_v")])?;
                (vector.frame.join_on(s, JoinType::Inner, vec![ident(TS).eq(ident("__s_ts"))])?, ident("__s_v"))
            }
        };
        let (l, r) = if swap { (scalar_value, ident(VALUE)) } else { (ident(VALUE), scalar_value) };
        let filtering = op.is_comparison() && !return_bool;
        let keeps_name = filtering || op.keeps_metric_name();
        let labels: Vec<String> = vector.labels.iter().filter(|l| keeps_name || *l != NAME).cloned().collect();
        let mut projection: Vec<Expr> = labels.iter().map(ident).collect();
        projection.push(ident(TS));
        if filtering {
            let kept = frame.filter(CompareUdf::new(op).call(vec![l, r]))?;
            projection.push(ident(VALUE));
            return Ok(VectorPlan::of(kept.select(projection)?, labels));
        }
        projection.push(BinaryUdf::new(op).call(vec![l, r]).alias(VALUE));
        Ok(VectorPlan::of(frame.select(projection)?, labels))
    }

    /// The labels two vectors match on.
    fn matching_keys(lhs: &VectorPlan, rhs: &VectorPlan, matching: Option<&LabelModifier>) -> Vec<String> {
        match matching {
            Some(LabelModifier::Include(on)) => {
                on.labels.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect()
            }
            Some(LabelModifier::Exclude(ignoring)) => union_labels([&lhs.labels, &rhs.labels])
                .into_iter()
                .filter(|l| l != NAME && !ignoring.labels.contains(l))
                .collect(),
            None => union_labels([&lhs.labels, &rhs.labels]).into_iter().filter(|l| l != NAME).collect(),
        }
    }

    /// The right side with every column renamed, so the join has no ambiguous names.
    fn renamed_right(rhs: &VectorPlan) -> Result<DataFrame, PromError> {
        let mut projection: Vec<Expr> = rhs.labels.iter().map(|l| ident(l).alias(format!("{RIGHT}{l}"))).collect();
        projection.push(ident(TS).alias(format!("{RIGHT}{TS}")));
        projection.push(ident(VALUE).alias(format!("{RIGHT}{VALUE}")));
        Ok(rhs.frame.clone().select(projection)?)
    }

    fn join_conditions(lhs: &VectorPlan, rhs: &VectorPlan, keys: &[String]) -> Vec<Expr> {
        let mut conditions = vec![ident(TS).eq(ident(format!("{RIGHT}{TS}")))];
        for key in keys {
            let left = label_or_empty(lhs.labels.contains(key).then(|| key.clone()));
            let right = label_or_empty(rhs.labels.contains(key).then(|| format!("{RIGHT}{key}")));
            conditions.push(left.eq(right));
        }
        conditions
    }

    fn vector_vector(
        &self,
        lhs: VectorPlan,
        rhs: VectorPlan,
        op: BinaryOp,
        return_bool: bool,
        card: &VectorMatchCardinality,
        matching: Option<&LabelModifier>,
    ) -> Result<VectorPlan, PromError> {
        let keys = Self::matching_keys(&lhs, &rhs, matching);
        let conditions = Self::join_conditions(&lhs, &rhs, &keys);
        let joined = lhs.frame.clone().join_on(Self::renamed_right(&rhs)?, JoinType::Inner, conditions)?;
        // The "many" side gives the labels; the "one" side may add `group_x(...)` labels.
        let right_column = |l: &str| format!("{RIGHT}{l}");
        let (many, many_is_right) = match card {
            VectorMatchCardinality::OneToMany(_) => (&rhs, true),
            _ => (&lhs, false),
        };
        let filtering = op.is_comparison() && !return_bool;
        let keeps_name = filtering || op.keeps_metric_name();
        let mut labels: BTreeSet<String> = many.labels.iter().filter(|l| keeps_name || *l != NAME).cloned().collect();
        if matches!(card, VectorMatchCardinality::OneToOne) {
            match matching {
                Some(LabelModifier::Include(on)) => labels.retain(|l| on.labels.contains(l)),
                Some(LabelModifier::Exclude(ignoring)) => labels.retain(|l| !ignoring.labels.contains(l)),
                None => {}
            }
        }
        let include: Vec<String> = card.labels().map(|l| l.labels.clone()).unwrap_or_default();
        let mut projection = Vec::new();
        for label in labels.iter().filter(|l| !include.contains(l)) {
            let column = if many_is_right { right_column(label) } else { label.clone() };
            projection.push(ident(column).alias(label));
        }
        for label in &include {
            let one = if many_is_right { &lhs } else { &rhs };
            let value = if !one.labels.contains(label) {
                null_label()
            } else if many_is_right {
                nullif(ident(label), lit(""))
            } else {
                nullif(ident(right_column(label)), lit(""))
            };
            projection.push(value.alias(label));
        }
        projection.push(ident(TS));
        let (l, r) = (ident(VALUE), ident(right_column(VALUE)));
        let out_labels: Vec<String> = labels
            .iter()
            .filter(|l| !include.contains(l))
            .cloned()
            .chain(include.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let frame = if filtering {
            projection.push(ident(VALUE));
            joined.filter(CompareUdf::new(op).call(vec![l, r]))?.select(projection)?
        } else {
            projection.push(BinaryUdf::new(op).call(vec![l, r]).alias(VALUE));
            joined.select(projection)?
        };
        Ok(VectorPlan::of(frame, out_labels))
    }

    fn set_operation(
        &self,
        op: token::TokenId,
        lhs: VectorPlan,
        rhs: VectorPlan,
        matching: Option<&LabelModifier>,
    ) -> Result<VectorPlan, PromError> {
        let keys = Self::matching_keys(&lhs, &rhs, matching);
        match op {
            token::T_LAND | token::T_LUNLESS => {
                let join = if op == token::T_LAND { JoinType::LeftSemi } else { JoinType::LeftAnti };
                let conditions = Self::join_conditions(&lhs, &rhs, &keys);
                let frame = lhs.frame.clone().join_on(Self::renamed_right(&rhs)?, join, conditions)?;
                Ok(VectorPlan::of(frame, lhs.labels))
            }
            _ => {
                // lhs, plus the rhs series whose signature lhs lacks at that step.
                let conditions = Self::join_conditions(&rhs, &lhs, &keys);
                let left_renamed = Self::renamed_right(&lhs)?;
                let extra = rhs.frame.clone().join_on(left_renamed, JoinType::LeftAnti, conditions)?;
                let labels = union_labels([&lhs.labels, &rhs.labels]);
                let align = |frame: DataFrame, have: &Vec<String>| -> Result<DataFrame, PromError> {
                    let mut projection: Vec<Expr> = labels
                        .iter()
                        .map(|l| if have.contains(l) { ident(l) } else { null_label().alias(l) })
                        .collect();
                    projection.push(ident(TS));
                    projection.push(ident(VALUE));
                    Ok(frame.select(projection)?)
                };
                let frame = align(lhs.frame, &lhs.labels)?.union(align(extra, &rhs.labels)?)?;
                Ok(VectorPlan::of(frame, labels))
            }
        }
    }

    // ---- aggregations ------------------------------------------------------------------

    /// `sum|avg|count|min|max|group [by|without (...)] (f(selector[range]))` or over a plain
    /// selector, folded into the step sweep; `None` for any other shape.
    async fn folded_aggregate(&self, aggregate: &AggregateExpr) -> Result<Option<VectorPlan>, PromError> {
        let fold = match aggregate.op.id() {
            token::T_SUM => Fold::Sum,
            token::T_AVG => Fold::Avg,
            token::T_COUNT => Fold::Count,
            token::T_MIN => Fold::Min,
            token::T_MAX => Fold::Max,
            token::T_GROUP => Fold::Group,
            _ => return Ok(None),
        };
        let mut inner = aggregate.expr.as_ref();
        while let PromExpr::Paren(paren) = inner {
            inner = &paren.expr;
        }
        let (matrix, function, keep_name) = match inner {
            PromExpr::VectorSelector(selector) => {
                (self.series_samples(selector, self.lookback_ms).await?, RangeFunction::Instant, true)
            }
            PromExpr::Call(call) => {
                let function = match RangeFunction::from_name(call.func.name) {
                    Some(
                        RangeFunction::QuantileOverTime
                        | RangeFunction::PredictLinear
                        | RangeFunction::DoubleExponentialSmoothing,
                    )
                    | None => return Ok(None),
                    Some(function) => function,
                };
                let [argument] = call.args.args.as_slice() else { return Ok(None) };
                let PromExpr::MatrixSelector(selector) = argument.as_ref() else { return Ok(None) };
                // Series alike but for a dropped name must be refused, not summed: not folded.
                if !function.keeps_metric_name() && labelsets::selector_names(&selector.vs) == labelsets::Names::Many {
                    return Ok(None);
                }
                (self.series_samples(&selector.vs, ms(&selector.range)).await?, function, function.keeps_metric_name())
            }
            _ => return Ok(None),
        };
        let group: Vec<String> = matrix
            .labels
            .iter()
            .filter(|l| (keep_name || *l != NAME) && kept_in_group(&aggregate.modifier, l))
            .cloned()
            .collect();
        let window = matrix.range_ms;
        Ok(Some(self.sweep(matrix, function, window, [0.0; 2], group, Some(fold))?))
    }

    /// The one value a scalar takes at every step (NaN where it has none, as `scalar()` of an
    /// empty vector); an error when it changes over the range.
    async fn steady(frame: DataFrame) -> Result<f64, PromError> {
        let mut values: Vec<f64> = Vec::new();
        for batch in frame.select(vec![ident(VALUE)])?.collect().await? {
            if let Some(column) = batch.column(0).as_any().downcast_ref::<datafusion::arrow::array::Float64Array>() {
                values.extend(column.iter().map(|v| v.unwrap_or(f64::NAN)));
            }
        }
        let first = values.first().copied().unwrap_or(f64::NAN);
        if values.iter().all(|v| v.to_bits() == first.to_bits() || (v.is_nan() && first.is_nan())) {
            Ok(first)
        } else {
            Err(bad("an aggregation parameter computed from data must have one value over the whole range"))
        }
    }

    async fn aggregate(&self, aggregate: &AggregateExpr) -> Result<Value, PromError> {
        if let Some(folded) = self.folded_aggregate(aggregate).await? {
            return Ok(Value::Vector(folded));
        }
        let vector = match self.compile(&aggregate.expr).await? {
            Value::Vector(v) => v,
            other => return Err(wrong_type("instant vector in aggregation", &other)),
        };
        let param = match &aggregate.param {
            // A parameter computed from data (`topk(scalar(x), ...)`) is used as a constant
            // when it has one value over the whole query.
            Some(p) => match self.compile(p).await? {
                Value::Scalar(ScalarPlan::Frame(frame)) => {
                    Some(Value::Scalar(ScalarPlan::Constant(Self::steady(frame).await?)))
                }
                other => Some(other),
            },
            None => None,
        };
        let op = aggregate.op.id();
        let grouping = |labels: &[String]| -> Vec<String> {
            labels.iter().filter(|l| kept_in_group(&aggregate.modifier, l)).cloned().collect()
        };
        let constant = |what: &str| -> Result<f64, PromError> {
            match &param {
                Some(Value::Scalar(ScalarPlan::Constant(c))) => Ok(*c),
                _ => Err(bad(format!("{what} needs a constant scalar parameter"))),
            }
        };
        match op {
            token::T_TOPK | token::T_BOTTOMK => {
                let k = constant("topk/bottomk")?;
                let group = grouping(&vector.labels);
                let descending = op == token::T_TOPK;
                let mut partition: Vec<Expr> = group.iter().map(ident).collect();
                partition.push(ident(TS));
                // Ties go to the series first in label order, as Prometheus's heap keeps the
                // first it saw (its input is sorted by labels): the same series at every step.
                let mut order = vec![isnan(ident(VALUE)).sort(true, false), ident(VALUE).sort(!descending, false)];
                order.extend(vector.labels.iter().map(|label| ident(label).sort(true, true)));
                let rank = row_number().partition_by(partition).order_by(order).build()?.alias("__rank__");
                let frame = vector.frame.window(vec![rank])?.filter(ident("__rank__").lt_eq(lit(k.floor() as i64)))?;
                let mut projection: Vec<Expr> = vector.labels.iter().map(ident).collect();
                projection.extend([ident(TS), ident(VALUE)]);
                let sweep = match vector.sweep {
                    Some(SweptAnswer { lanes, finish: None }) => {
                        Some(SweptAnswer { lanes, finish: Some(Finish::Top(Top { k, descending, group })) })
                    }
                    _ => None,
                };
                Ok(Value::Vector(VectorPlan { frame: frame.select(projection)?, labels: vector.labels, sweep }))
            }
            token::T_COUNT_VALUES => {
                let Some(Value::String(label)) = &param else {
                    return Err(bad("count_values needs a string parameter"));
                };
                if !vigil_storage::write::is_valid_label_name(label) {
                    return Err(bad(format!("invalid label name {label:?}")));
                }
                let mut projection: Vec<Expr> = vector.labels.iter().filter(|l| *l != label).map(ident).collect();
                projection.push(FormatValueUdf::new().call(vec![ident(VALUE)]).alias(label.as_str()));
                projection.extend([ident(TS), ident(VALUE)]);
                let with_label: Vec<String> = union_labels([&vector.labels, &vec![label.clone()]]);
                let group: Vec<String> = with_label
                    .iter()
                    .filter(|l| *l == label || kept_in_group(&aggregate.modifier, l))
                    .cloned()
                    .collect();
                let frame = vector.frame.select(projection)?;
                let mut keys: Vec<Expr> = group.iter().map(ident).collect();
                keys.push(ident(TS));
                let frame = frame.aggregate(keys, vec![count(ident(VALUE)).alias("__n__")])?;
                let mut projection: Vec<Expr> = group.iter().map(ident).collect();
                projection.push(ident(TS));
                projection.push(cast(ident("__n__"), DataType::Float64).alias(VALUE));
                Ok(Value::Vector(VectorPlan::of(frame.select(projection)?, group)))
            }
            _ => {
                let group = grouping(&vector.labels);
                let mut keys: Vec<Expr> = group.iter().map(ident).collect();
                keys.push(ident(TS));
                let without_nan = when(isnan(ident(VALUE)), lit(ScalarValue::Float64(None))).otherwise(ident(VALUE))?;
                let (aggregates, value): (Vec<Expr>, Expr) = match op {
                    token::T_SUM => (vec![sum(ident(VALUE)).alias("__a__")], ident("__a__")),
                    token::T_AVG => (vec![avg(ident(VALUE)).alias("__a__")], ident("__a__")),
                    token::T_COUNT => {
                        (vec![count(ident(VALUE)).alias("__a__")], cast(ident("__a__"), DataType::Float64))
                    }
                    token::T_GROUP => (vec![count(ident(VALUE)).alias("__a__")], lit(1.0)),
                    token::T_STDDEV => (vec![stddev_pop(ident(VALUE)).alias("__a__")], ident("__a__")),
                    token::T_STDVAR => (vec![var_pop(ident(VALUE)).alias("__a__")], ident("__a__")),
                    // NaN loses to any number, as in Prometheus; all NaN gives NaN.
                    token::T_MIN => (
                        vec![min(without_nan).alias("__a__"), min(ident(VALUE)).alias("__b__")],
                        coalesce(vec![ident("__a__"), ident("__b__")]),
                    ),
                    token::T_MAX => (
                        vec![max(without_nan).alias("__a__"), max(ident(VALUE)).alias("__b__")],
                        coalesce(vec![ident("__a__"), ident("__b__")]),
                    ),
                    token::T_QUANTILE => {
                        let q = constant("quantile")?;
                        (
                            vec![array_agg(ident(VALUE)).alias("__a__")],
                            QuantileUdf::new().call(vec![lit(q), ident("__a__")]),
                        )
                    }
                    _ => return Err(bad(format!("aggregation {} is not supported", aggregate.op))),
                };
                let frame = vector.frame.aggregate(keys, aggregates)?;
                let mut projection: Vec<Expr> = group.iter().map(ident).collect();
                projection.push(ident(TS));
                projection.push(value.alias(VALUE));
                Ok(Value::Vector(VectorPlan::of(frame.select(projection)?, group)))
            }
        }
    }

    // ---- functions ---------------------------------------------------------------------

    async fn arguments(&self, call: &Call) -> Result<Vec<Value>, PromError> {
        let mut values = Vec::with_capacity(call.args.args.len());
        for arg in &call.args.args {
            values.push(self.compile(arg).await?);
        }
        Ok(values)
    }

    async fn call(&self, call: &Call) -> Result<Value, PromError> {
        let name = call.func.name;
        let mut args = self.arguments(call).await?;
        let constant = |value: Option<&Value>, what: &str| -> Result<f64, PromError> {
            match value {
                Some(Value::Scalar(ScalarPlan::Constant(c))) => Ok(*c),
                _ => Err(bad(format!("{name}: {what} must be a constant scalar"))),
            }
        };
        if let Some(function) = RangeFunction::from_name(name) {
            let (matrix, params) = match function {
                RangeFunction::QuantileOverTime => (args.pop(), [constant(args.first(), "φ")?, 0.0]),
                RangeFunction::PredictLinear => {
                    let seconds = constant(args.get(1), "the duration")?;
                    (args.into_iter().next(), [seconds, 0.0])
                }
                RangeFunction::DoubleExponentialSmoothing => {
                    let (sf, tf) =
                        (constant(args.get(1), "the smoothing factor")?, constant(args.get(2), "the trend factor")?);
                    if !(sf > 0.0 && sf < 1.0) {
                        return Err(bad(format!("invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}")));
                    }
                    if !(tf > 0.0 && tf < 1.0) {
                        return Err(bad(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf}")));
                    }
                    (args.into_iter().next(), [sf, tf])
                }
                _ => (args.pop(), [0.0; 2]),
            };
            let Some(Value::Matrix(matrix)) = matrix else { return Err(bad(format!("{name} needs a range vector"))) };
            let range = matrix.range_ms;
            return Ok(Value::Vector(self.apply_steps(
                matrix,
                function,
                range,
                params,
                function.keeps_metric_name(),
            )?));
        }
        if let Some(function) = MathFunction::from_name(name) {
            let mut args = args.into_iter();
            let vector = match args.next() {
                Some(Value::Vector(v)) => v,
                None if function.is_date() => self.scalar_to_vector(self.time_scalar()?)?,
                Some(other) => return Err(wrong_type("instant vector", &other)),
                None => return Err(bad(format!("{name} needs an argument"))),
            };
            let constants: Vec<f64> =
                args.map(|value| constant(Some(&value), "parameter")).collect::<Result<_, _>>()?;
            let mut params: Vec<Expr> = vec![ident(VALUE)];
            params.extend(constants.iter().map(|c| lit(*c)));
            if function == MathFunction::Round && params.len() == 1 {
                params.push(lit(1.0));
            }
            let labels: Vec<String> = vector.labels.iter().filter(|l| *l != NAME).cloned().collect();
            let mut projection: Vec<Expr> = labels.iter().map(ident).collect();
            projection.push(ident(TS));
            projection.push(MathUdf::new(function).call(params).alias(VALUE));
            let mut frame = vector.frame;
            // `clamp(v, min, max)` with max below min is empty, as Prometheus's.
            if let (MathFunction::Clamp, [min, max]) = (function, constants.as_slice())
                && max < min
            {
                frame = frame.filter(lit(false))?;
            }
            return Ok(Value::Vector(VectorPlan::of(frame.select(projection)?, labels)));
        }
        match name {
            "time" => Ok(Value::Scalar(self.time_scalar()?)),
            "pi" => Ok(Value::Scalar(ScalarPlan::Constant(std::f64::consts::PI))),
            "vector" => match args.pop() {
                Some(Value::Scalar(s)) => Ok(Value::Vector(self.scalar_to_vector(s)?)),
                _ => Err(bad("vector() needs a scalar")),
            },
            "scalar" => match args.pop() {
                Some(Value::Vector(v)) => Ok(Value::Scalar(self.scalar_of(v)?)),
                _ => Err(bad("scalar() needs an instant vector")),
            },
            "sort" | "sort_desc" => match args.pop() {
                Some(Value::Vector(v)) => Ok(Value::Vector(v)),
                _ => Err(bad(format!("{name}() needs an instant vector"))),
            },
            "timestamp" => self.timestamp(call, args).await,
            "absent" => {
                let Some(Value::Vector(v)) = args.pop() else { return Err(bad("absent() needs an instant vector")) };
                Ok(Value::Vector(self.absent(v, call.args.args.first().map(|a| a.as_ref()))?))
            }
            "absent_over_time" => {
                let Some(Value::Matrix(m)) = args.pop() else {
                    return Err(bad("absent_over_time() needs a range vector"));
                };
                let range = m.range_ms;
                let present = self.apply_steps(m, RangeFunction::PresentOverTime, range, [0.0; 2], false)?;
                Ok(Value::Vector(self.absent(present, call.args.args.first().map(|a| a.as_ref()))?))
            }
            "histogram_quantile" => {
                let q = constant(args.first(), "φ")?;
                let Some(Value::Vector(v)) = args.pop() else {
                    return Err(bad("histogram_quantile() needs an instant vector"));
                };
                Ok(Value::Vector(self.histogram_quantile(q, v)?))
            }
            "label_replace" => self.label_replace(args),
            "label_join" => self.label_join(args),
            _ => Err(bad(format!("function {name}() is not supported"))),
        }
    }

    /// `scalar(v)`: the single sample's value at each step, NaN otherwise.
    fn scalar_of(&self, vector: VectorPlan) -> Result<ScalarPlan, PromError> {
        let grouped = vector
            .frame
            .aggregate(vec![ident(TS)], vec![count(ident(VALUE)).alias("__n__"), max(ident(VALUE)).alias("__m__")])?
            .select(vec![ident(TS).alias("__r_ts"), ident("__n__"), ident("__m__")])?;
        let frame = self.steps_frame()?.join_on(grouped, JoinType::Left, vec![ident(TS).eq(ident("__r_ts"))])?;
        let value = when(ident("__n__").eq(lit(1i64)), ident("__m__")).otherwise(lit(f64::NAN))?;
        Ok(ScalarPlan::Frame(frame.select(vec![ident(TS), value.alias(VALUE)])?))
    }

    async fn timestamp(&self, call: &Call, mut args: Vec<Value>) -> Result<Value, PromError> {
        let mut arg = call.args.args.first().map(|a| a.as_ref());
        while let Some(PromExpr::Paren(p)) = arg {
            arg = Some(&p.expr);
        }
        if let Some(PromExpr::VectorSelector(selector)) = arg {
            let samples = self.series_samples(selector, self.lookback_ms).await?;
            return Ok(Value::Vector(self.apply_steps(
                samples,
                RangeFunction::InstantTimestamp,
                self.lookback_ms,
                [0.0; 2],
                false,
            )?));
        }
        let Some(Value::Vector(v)) = args.pop() else { return Err(bad("timestamp() needs an instant vector")) };
        let labels: Vec<String> = v.labels.iter().filter(|l| *l != NAME).cloned().collect();
        let mut projection: Vec<Expr> = labels.iter().map(ident).collect();
        projection.push(ident(TS));
        projection.push((cast(ident(TS), DataType::Float64) / lit(1000.0)).alias(VALUE));
        Ok(Value::Vector(VectorPlan::of(v.frame.select(projection)?, labels)))
    }

    /// 1 at every step where the vector is empty, labelled with the selector's equalities.
    fn absent(&self, vector: VectorPlan, arg: Option<&PromExpr>) -> Result<VectorPlan, PromError> {
        let present = vector.frame.select(vec![ident(TS).alias("__r_ts")])?.distinct()?;
        let missing = self.steps_frame()?.join_on(present, JoinType::LeftAnti, vec![ident(TS).eq(ident("__r_ts"))])?;
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut selector = arg;
        while let Some(PromExpr::Paren(p)) = selector {
            selector = Some(&p.expr);
        }
        let matchers = match selector {
            Some(PromExpr::VectorSelector(vs)) => Some(&vs.matchers),
            Some(PromExpr::MatrixSelector(ms)) => Some(&ms.vs.matchers),
            _ => None,
        };
        // As Prometheus: a label of an equality matcher, unless another matcher names it too.
        let mut dropped: BTreeSet<&str> = BTreeSet::new();
        for matcher in matchers.map(|m| m.matchers.as_slice()).unwrap_or_default() {
            if matcher.name == NAME {
                continue;
            }
            if matches!(matcher.op, MatchOp::Equal) && !labels.iter().any(|(n, _)| *n == matcher.name) {
                labels.push((matcher.name.clone(), matcher.value.clone()));
            } else {
                dropped.insert(&matcher.name);
            }
        }
        labels.retain(|(name, _)| !dropped.contains(name.as_str()));
        labels.sort();
        let mut projection: Vec<Expr> = labels.iter().map(|(n, v)| lit(v.clone()).alias(n)).collect();
        projection.push(ident(TS));
        projection.push(lit(1.0).alias(VALUE));
        Ok(VectorPlan::of(missing.select(projection)?, labels.into_iter().map(|(n, _)| n).collect()))
    }

    fn histogram_quantile(&self, q: f64, vector: VectorPlan) -> Result<VectorPlan, PromError> {
        let group: Vec<String> = vector.labels.iter().filter(|l| *l != NAME && *l != "le").cloned().collect();
        if !vector.labels.iter().any(|l| l == "le") {
            let frame = vector.frame.filter(lit(false))?;
            let mut projection: Vec<Expr> = group.iter().map(ident).collect();
            projection.extend([ident(TS), ident(VALUE)]);
            return Ok(VectorPlan::of(frame.select(projection)?, group));
        }
        // Buckets group with their metric name, which the answer then drops: two histograms
        // alike but for the name are two answers of one label set (an error), not one.
        let mut keys: Vec<Expr> = group.iter().map(ident).collect();
        if vector.labels.iter().any(|l| l == NAME) {
            keys.push(ident(NAME));
        }
        keys.push(ident(TS));
        let frame = vector.frame.filter(ident("le").is_not_null())?.aggregate(
            keys,
            vec![array_agg(ident("le")).alias("__les__"), array_agg(ident(VALUE)).alias("__counts__")],
        )?;
        let mut projection: Vec<Expr> = group.iter().map(ident).collect();
        projection.push(ident(TS));
        projection
            .push(HistogramQuantileUdf::new().call(vec![lit(q), ident("__les__"), ident("__counts__")]).alias(VALUE));
        let sweep = match vector.sweep {
            Some(SweptAnswer { lanes, finish: None }) => {
                Some(SweptAnswer { lanes, finish: Some(Finish::HistogramQuantile { q, labels: vector.labels }) })
            }
            _ => None,
        };
        Ok(VectorPlan { frame: frame.select(projection)?, labels: group, sweep })
    }

    fn label_replace(&self, args: Vec<Value>) -> Result<Value, PromError> {
        let mut args = args.into_iter();
        let (
            Some(Value::Vector(v)),
            Some(Value::String(destination)),
            Some(Value::String(replacement)),
            Some(Value::String(source)),
            Some(Value::String(regex)),
        ) = (args.next(), args.next(), args.next(), args.next(), args.next())
        else {
            return Err(bad("label_replace(v, dst, replacement, src, regex) takes a vector and four strings"));
        };
        if !vigil_storage::write::is_valid_label_name(&destination) {
            return Err(bad(format!("invalid destination label name in label_replace(): {destination}")));
        }
        let udf: ScalarUDF = LabelReplaceUdf::new(&regex, &replacement)
            .map_err(|e| bad(format!("invalid regular expression in label_replace(): {e}")))?;
        let source_value = if v.labels.contains(&source) { ident(source.as_str()) } else { null_label() };
        let destination_value =
            if v.labels.contains(&destination) { ident(destination.as_str()) } else { null_label() };
        Ok(Value::Vector(self.set_label(v, &destination, udf.call(vec![destination_value, source_value]))?))
    }

    fn label_join(&self, args: Vec<Value>) -> Result<Value, PromError> {
        let mut args = args.into_iter();
        let (Some(Value::Vector(v)), Some(Value::String(destination)), Some(Value::String(separator))) =
            (args.next(), args.next(), args.next())
        else {
            return Err(bad("label_join(v, dst, separator, src...) takes a vector and strings"));
        };
        if !vigil_storage::write::is_valid_label_name(&destination) {
            return Err(bad(format!("invalid destination label name in label_join(): {destination}")));
        }
        let mut parts = Vec::new();
        for arg in args {
            let Value::String(source) = arg else { return Err(bad("label_join() source labels must be strings")) };
            parts.push(if v.labels.contains(&source) {
                coalesce(vec![ident(source.as_str()), lit("")])
            } else {
                lit("")
            });
        }
        let joined = if parts.is_empty() { lit("") } else { concat_ws(lit(separator), parts) };
        Ok(Value::Vector(self.set_label(v, &destination, nullif(joined, lit("")))?))
    }

    fn set_label(&self, vector: VectorPlan, label: &str, value: Expr) -> Result<VectorPlan, PromError> {
        let labels: Vec<String> = union_labels([&vector.labels, &vec![label.to_string()]]);
        let mut projection: Vec<Expr> =
            labels.iter().map(|l| if l == label { value.clone().alias(l) } else { ident(l) }).collect();
        projection.extend([ident(TS), ident(VALUE)]);
        Ok(VectorPlan::of(vector.frame.select(projection)?, labels))
    }
}

/// Whether an aggregation's `by (...)` / `without (...)` keeps `label` in its groups
/// (`without` always drops the metric name).
fn kept_in_group(modifier: &Option<LabelModifier>, label: &str) -> bool {
    match modifier {
        Some(LabelModifier::Include(l)) => l.labels.iter().any(|listed| listed == label),
        Some(LabelModifier::Exclude(l)) => label != NAME && !l.labels.iter().any(|listed| listed == label),
        None => false,
    }
}

/// How a selector's rows are read from a table: the filter's conjuncts (the time bounds,
/// then the matchers') and the row's columns (the labels as `label_type`, `#ts`, `#value`).
struct RowShape<'s> {
    selection: &'s Selection,
    constants: Vec<(String, String)>,
    low_ns: i64,
    high_ns: i64,
    label_type: &'s DataType,
    reading: Reading,
    local: bool,
}

impl RowShape<'_> {
    /// The filter's conjuncts and the row's columns of a table with `columns`, whose metric
    /// name is `name` and which the matchers filter with `filters`.
    fn exprs(&self, filters: &[Expr], name: Expr, columns: &BTreeSet<String>) -> (Vec<Expr>, Vec<Expr>) {
        let stamp = |ns: i64| lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())));
        let conjuncts =
            [ident(TIMESTAMP_COLUMN).gt_eq(stamp(self.low_ns)), ident(TIMESTAMP_COLUMN).lt_eq(stamp(self.high_ns))]
                .into_iter()
                .chain(filters.iter().cloned())
                .collect();
        let label_type = self.label_type;
        let mut projection: Vec<Expr> = self
            .selection
            .row_labels(&self.constants)
            .map(|label| {
                if label == NAME {
                    return cast(name.clone(), label_type.clone()).alias(NAME);
                }
                let column = label_column_name(label).into_owned();
                let value = if columns.contains(&column) { ident(column) } else { null_label() };
                cast(value, label_type.clone()).alias(label)
            })
            .collect();
        // Ballista's executors know DataFusion's functions, not ours.
        let ms = if self.local && self.reading == Reading::SweptSamples {
            ident(TIMESTAMP_COLUMN)
        } else if self.local {
            MillisecondsUdf::new().call(vec![ident(TIMESTAMP_COLUMN)])
        } else {
            cast(ident(TIMESTAMP_COLUMN), DataType::Int64) / lit(1_000_000i64)
        };
        projection.push(ms.alias(TS));
        projection.push(ident(VALUE_COLUMN).alias(VALUE));
        (conjuncts, projection)
    }
}

/// A label matcher as a filter on its column (absent = empty string, as Prometheus).
///
/// Equalities compare the dictionary column with the value itself (DataFusion compares the
/// dictionary's values once, and statistics prune files, row groups and pages with it);
/// a regex runs once per distinct value of the column ([`LabelRegexUdf`]) where the plan is
/// ours to run, not once per row of a column cast to strings.
fn matcher_filter(matcher: &Matcher, column: &str, local: bool) -> Expr {
    let label = ident(column);
    let value = matcher.value.as_str();
    match &matcher.op {
        MatchOp::Equal if value.is_empty() => label.clone().is_null().or(label.eq(lit(""))),
        MatchOp::Equal => label.eq(lit(value)),
        MatchOp::NotEqual if value.is_empty() => label.clone().is_not_null().and(label.not_eq(lit(""))),
        MatchOp::NotEqual => label.clone().is_null().or(label.not_eq(lit(value))),
        MatchOp::Re(regex) | MatchOp::NotRe(regex) => {
            // The parser compiled it anchored, Go's literal braces escaped (`a{b}`): compiled
            // again here, it cost a tenth of a millisecond a matcher and refused `a{b}`.
            let negated = matches!(matcher.op, MatchOp::NotRe(_));
            if local {
                LabelRegexUdf::new(regex.clone(), negated).call(vec![label])
            } else {
                // A distributed plan carries only DataFusion's own functions.
                let text = coalesce(vec![cast(label, DataType::Utf8), lit("")]);
                let matched = regexp_like(text, lit(regex.as_str()), None);
                if negated { datafusion::logical_expr::not(matched) } else { matched }
            }
        }
    }
}

pub(crate) fn binary_op(op: TokenType) -> Result<BinaryOp, PromError> {
    Ok(match op.id() {
        token::T_ADD => BinaryOp::Add,
        token::T_SUB => BinaryOp::Sub,
        token::T_MUL => BinaryOp::Mul,
        token::T_DIV => BinaryOp::Div,
        token::T_MOD => BinaryOp::Mod,
        token::T_POW => BinaryOp::Pow,
        token::T_ATAN2 => BinaryOp::Atan2,
        token::T_EQLC => BinaryOp::Eq,
        token::T_NEQ => BinaryOp::Ne,
        token::T_GTR => BinaryOp::Gt,
        token::T_LSS => BinaryOp::Lt,
        token::T_GTE => BinaryOp::Ge,
        token::T_LTE => BinaryOp::Le,
        _ => return Err(bad(format!("operator {op} is not supported"))),
    })
}
