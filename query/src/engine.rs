//! The DataFusion session and the SQL entry point.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use vigil_storage::Storage;

#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// A query running longer is cancelled.
    pub timeout: Duration,
    /// Memory all running queries may hold together for sorts, joins and aggregations.
    pub max_memory_bytes: usize,
    /// Run queries over long ranges on Ballista; `None` = everything runs here.
    pub ballista: Option<crate::distributed::BallistaOptions>,
    /// Length and nesting bounds of query text.
    pub shape: crate::guard::QueryShape,
    /// Rows a SQL result may have (it is held whole to be encoded).
    pub max_result_rows: usize,
    /// Bytes (in Arrow memory) a SQL result may hold.
    pub max_result_bytes: usize,
    /// Samples one PromQL query may load and produce, as Prometheus's `query.max-samples`.
    pub max_samples: usize,
    /// Threads one query computes on at most (DataFusion's target partitions: scans, and
    /// the lanes of a PromQL step sweep); 0 = one per CPU, more than
    /// [`MAX_WORKERS_PER_QUERY`] is that many. VictoriaMetrics's `search.maxWorkersPerQuery`.
    pub max_workers_per_query: usize,
}

/// Most workers one query may have: past this DataFusion would plan a partition per worker
/// for every scan and repartition, for no gain on any machine this runs on.
pub const MAX_WORKERS_PER_QUERY: usize = 256;

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            timeout: Duration::from_secs(120),
            max_memory_bytes: 1 << 30,
            ballista: None,
            shape: crate::guard::QueryShape::default(),
            max_result_rows: 1_000_000,
            max_result_bytes: 256 << 20,
            max_samples: 20_000_000,
            max_workers_per_query: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text is wrong: syntax, unknown table or column, type errors.
    #[error("{message}")]
    Invalid { message: String, position: Option<(u64, u64)> },
    /// Statements that would change data or settings.
    #[error("{0}")]
    NotAllowed(String),
    /// The query's text is too long or nests too deep.
    #[error("{0}")]
    Shape(#[from] crate::guard::ShapeError),
    /// The result would be larger than allowed (`setting` names the limit).
    #[error("the result has more than {limit} {what} (query.{setting})")]
    ResultTooLarge { what: &'static str, limit: usize, setting: &'static str },
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(Duration),
    #[error("query needs more memory than allowed: {0}")]
    ResourcesExhausted(String),
    #[error("query failed: {0}")]
    Execution(String),
    /// Stored data could not be read (a damaged or missing segment).
    #[error("stored data could not be read: {0}")]
    Storage(String),
    #[error("internal query error: {0}")]
    Internal(String),
}

impl QueryError {
    pub fn hint(&self) -> String {
        match self {
            QueryError::Invalid { position: Some((line, column)), .. } => {
                format!("the error is at line {line}, column {column}; list tables and columns with SELECT * FROM information_schema.columns")
            }
            QueryError::Invalid { .. } => {
                "list tables and columns with SELECT * FROM information_schema.columns".into()
            }
            QueryError::NotAllowed(_) => "the SQL API is read-only: only queries (SELECT, EXPLAIN, SHOW) run, and no recursive CTE".into(),
            QueryError::Shape(_) => "write the expression flatter or shorter (e.g. sum over a regex selector instead of a chain of +), or raise the named limit".into(),
            QueryError::ResultTooLarge { .. } => "aggregate, add a LIMIT or a narrower WHERE, or raise the named limit".into(),
            QueryError::Timeout(_) => "narrow the time range or raise query.timeout".into(),
            QueryError::ResourcesExhausted(_) => "narrow the time range, aggregate more, or raise query.max_memory".into(),
            QueryError::Execution(_) => "the query is valid but failed on the data; check casts and divisions".into(),
            QueryError::Storage(_) => "a damaged segment was found and moved aside (see the log); run the query again, and `vigil store check`".into(),
            QueryError::Internal(_) => "this is a bug in Vigil; please report it with the query".into(),
        }
    }

    pub(crate) fn from_datafusion(error: DataFusionError) -> QueryError {
        let position = error.diagnostic().and_then(|d| d.span).map(|s| (s.start.line, s.start.column));
        let message = error.strip_backtrace();
        match error.find_root() {
            DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
                let position = position.or_else(|| position_in_message(&message));
                QueryError::Invalid { message, position }
            }
            DataFusionError::NotImplemented(_) => QueryError::Invalid { message, position },
            DataFusionError::ResourcesExhausted(_) => QueryError::ResourcesExhausted(message),
            DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => QueryError::Execution(message),
            _ if is_read_failure(&error) => QueryError::Storage(message),
            _ => QueryError::Internal(message),
        }
    }
}

/// True when an error comes from reading stored files (Parquet, the object store, I/O).
pub fn is_read_failure(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::ParquetError(_) | DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => true,
        DataFusionError::External(inner) => {
            let text = inner.to_string();
            inner.is::<datafusion::parquet::errors::ParquetError>()
                || text.contains("Parquet error")
                || text.contains("Object Store error")
        }
        _ => false,
    }
}

/// The tables a plan scans.
pub fn scanned_tables(plan: &datafusion::logical_expr::LogicalPlan) -> std::collections::BTreeSet<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut tables = std::collections::BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let datafusion::logical_expr::LogicalPlan::TableScan(scan) = node {
            tables.insert(scan.table_name.table().to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}

/// sqlparser reports positions as "at Line: 1, Column: 8".
fn position_in_message(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("Line: ")? + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// Line and column just past the end of `text` (1-based), where "found: EOF" errors are.
fn end_position(text: &str) -> (u64, u64) {
    let trimmed = text.trim_end();
    let line = trimmed.lines().count().max(1) as u64;
    let column = trimmed.lines().last().map_or(0, |l| l.chars().count()) as u64 + 1;
    (line, column)
}

pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// A UTC timestamp literal of Unix milliseconds, for filters on timestamp columns.
pub(crate) fn ts_literal(ms: i64) -> datafusion::prelude::Expr {
    datafusion::prelude::lit(datafusion::common::ScalarValue::TimestampNanosecond(
        Some(ms.saturating_mul(1_000_000)),
        Some("UTC".into()),
    ))
}

/// One shared session: catalogs, object stores and the memory pool are shared by all queries.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    /// The same session planning without round-robin repartitions (see [`Self::one_stream`]).
    one_stream: Arc<SessionState>,
    /// The task context of `one_stream`, built once: building it per sweep chunk copied the
    /// session's configuration and function registries each time.
    one_stream_task: Arc<TaskContext>,
    options: QueryOptions,
    storage: Storage,
    runtime: Arc<QueryRuntime>,
}

/// The threads queries run on, apart from the server's. A query that computes without ever
/// yielding (DataFusion operators can) then takes a CPU, never the runtime that accepts
/// connections, writes the WAL and answers timeouts: the OS shares the cores between both.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn start() -> Result<QueryRuntime, QueryError> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("vigil-query")
            .thread_stack_size(8 << 20)
            .enable_all()
            .build()
            .map(|runtime| QueryRuntime(Some(runtime)))
            .map_err(|e| QueryError::Internal(format!("starting the query threads: {e}")))
    }

    fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.0.as_ref().map(|runtime| runtime.handle())
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropped inside the server's runtime at shutdown: a blocking drop would panic there.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why a query run on the query threads did not answer.
pub(crate) enum Interrupted {
    Timeout(Duration),
    Failed(String),
}

impl From<Interrupted> for QueryError {
    fn from(interrupted: Interrupted) -> Self {
        match interrupted {
            Interrupted::Timeout(timeout) => QueryError::Timeout(timeout),
            Interrupted::Failed(failed) => QueryError::Internal(format!("the query's task failed: {failed}")),
        }
    }
}

impl QueryEngine {
    /// Runs `work` on the query threads under the query timeout; past it the work is aborted
    /// (at its next await) and the caller answers at once.
    pub(crate) async fn bounded<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, Interrupted> {
        let timeout = self.options.timeout;
        let task = match self.runtime.handle() {
            Some(handle) => handle.spawn(work),
            None => tokio::spawn(work),
        };
        let abort = task.abort_handle();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failed)) => Err(Interrupted::Failed(failed.to_string())),
            Err(_) => {
                abort.abort();
                Err(Interrupted::Timeout(timeout))
            }
        }
    }
}

impl QueryEngine {
    pub fn new(storage: Storage, options: QueryOptions) -> Result<Self, QueryError> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("vigil", "public")
            .with_create_default_catalog_and_schema(true);
        // Keeps source positions so errors can say where they are.
        config.options_mut().sql_parser.collect_spans = true;
        // Recursion without a bound is refused at planning (see `sql`).
        config.options_mut().execution.enable_recursive_ctes = false;
        if options.max_workers_per_query > 0 {
            config = config.with_target_partitions(options.max_workers_per_query.min(MAX_WORKERS_PER_QUERY));
        }
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(options.max_memory_bytes, 1.0)
            .build_arc()
            .map_err(|e| QueryError::Internal(e.to_string()))?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        vigil_storage::catalog::register(&storage, &ctx).map_err(|e| QueryError::Internal(e.to_string()))?;
        let mut config = ctx.state().config().clone();
        config.options_mut().optimizer.enable_round_robin_repartition = false;
        // The catalogs are shared with `ctx`: building must not put an empty default in them.
        config.options_mut().catalog.create_default_catalog_and_schema = false;
        let one_stream = Arc::new(SessionStateBuilder::new_from_existing(ctx.state()).with_config(config).build());
        let one_stream_task = one_stream.task_ctx();
        let runtime = Arc::new(QueryRuntime::start()?);
        Ok(QueryEngine { ctx, one_stream, one_stream_task, options, storage, runtime })
    }

    /// `frame` planned as one stream where its source is one: a PromQL sweep chunk is read
    /// by one consumer in order, and spreading its batches over threads only to gather them
    /// again cost a thread wake-up per batch (17 % of a 24 h query). Chunks overlap through
    /// the sweep's prefetch instead, and a chunk of several files still reads them in parallel.
    pub(crate) fn one_stream(&self, frame: DataFrame) -> DataFrame {
        let (_, plan) = frame.into_parts();
        DataFrame::new((*self.one_stream).clone(), plan)
    }

    /// The session [`Self::one_stream`] plans in, for a plan built by hand.
    pub(crate) fn one_stream_state(&self) -> Arc<SessionState> {
        self.one_stream.clone()
    }

    /// The task context plans in [`Self::one_stream_state`] execute in.
    pub(crate) fn one_stream_task(&self) -> Arc<TaskContext> {
        self.one_stream_task.clone()
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Bytes the running queries hold in DataFusion's memory pool (`query.max_memory`).
    pub fn memory_reserved(&self) -> usize {
        self.ctx.runtime_env().memory_pool.reserved()
    }

    async fn run_sql(&self, query: &str) -> Result<QueryResult, QueryError> {
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let not_allowed = |e: DataFusionError| match e.find_root() {
            DataFusionError::Plan(message) if message.contains("not supported") => {
                QueryError::NotAllowed(e.strip_backtrace())
            }
            DataFusionError::NotImplemented(message) if message.contains("Recursive CTE") => {
                QueryError::NotAllowed("recursive CTEs are refused by the read API: they can run without bound".into())
            }
            _ => QueryError::from_datafusion(e),
        };
        self.options.shape.check_sql(query).await?;
        let mut frame = self.ctx.sql_with_options(query, read_only).await.map_err(not_allowed)?;
        if let Some(ballista) = &self.options.ballista {
            let optimized = frame.clone().into_optimized_plan().map_err(QueryError::from_datafusion)?;
            let long = crate::distributed::scanned_span_ns(&optimized)
                .is_none_or(|span| span >= ballista.min_range.as_nanos() as i64);
            if long {
                let remote =
                    crate::distributed::session(&self.storage, ballista).await.map_err(QueryError::from_datafusion)?;
                frame = remote.sql_with_options(query, read_only).await.map_err(not_allowed)?;
                metrics::counter!("vigil_query_distributed_total", "language" => "sql").increment(1);
            }
        }
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = match self.collect_bounded(frame.clone()).await {
            // A damaged segment: move it aside and answer from the rest.
            Err(QueryError::Storage(message)) => {
                let tables = scanned_tables(frame.logical_plan());
                match self.storage.quarantine_damaged(&tables).await {
                    Ok(moved) if moved > 0 => self.collect_bounded(frame).await?,
                    _ => return Err(QueryError::Storage(message)),
                }
            }
            other => other?,
        };
        Ok(QueryResult { schema, batches })
    }

    /// Runs a plan to the end, stopping as soon as the result passes `max_result_rows` or
    /// `max_result_bytes`: a result is held whole to be encoded, so it is bounded as it
    /// streams in, never after.
    pub async fn collect_bounded(
        &self,
        frame: datafusion::dataframe::DataFrame,
    ) -> Result<Vec<RecordBatch>, QueryError> {
        use futures::StreamExt;
        let mut stream = frame.execute_stream().await.map_err(QueryError::from_datafusion)?;
        let (mut rows, mut bytes) = (0usize, 0usize);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(QueryError::from_datafusion)?;
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
            if rows > self.options.max_result_rows {
                return Err(QueryError::ResultTooLarge {
                    what: "rows",
                    limit: self.options.max_result_rows,
                    setting: "max_result_rows",
                });
            }
            if bytes > self.options.max_result_bytes {
                return Err(QueryError::ResultTooLarge {
                    what: "bytes",
                    limit: self.options.max_result_bytes,
                    setting: "max_result_bytes",
                });
            }
            batches.push(batch);
        }
        Ok(batches)
    }

    /// Runs a frame planned on [`Self::context`] for a reader inside Vigil (drift's window
    /// data and history): on the query threads, under the query timeout and memory limit, and
    /// bounded like any result.
    pub async fn read(&self, frame: DataFrame) -> Result<Vec<RecordBatch>, QueryError> {
        let engine = self.clone();
        self.bounded(async move { engine.collect_bounded(frame).await }).await?
    }

    /// Runs one read-only SQL statement within the time limit, on a task of its own (so that
    /// the limit answers on time even while planning runs without yielding).
    pub async fn sql(&self, query: &str) -> Result<QueryResult, QueryError> {
        let started = std::time::Instant::now();
        let engine = self.clone();
        let text = query.to_string();
        let result = match self.bounded(async move { engine.run_sql(&text).await }).await {
            Ok(Err(QueryError::Invalid { message, position: None })) if message.contains("found: EOF") => {
                Err(QueryError::Invalid { message, position: Some(end_position(query)) })
            }
            Ok(result) => result,
            Err(interrupted) => Err(interrupted.into()),
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("vigil_query_duration_seconds", "language" => "sql", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_parser_messages() {
        assert_eq!(
            position_in_message(
                "SQL error: ParserError(\"Expected: end of statement, found: x at Line: 2, Column: 15\")"
            ),
            Some((2, 15))
        );
        assert_eq!(position_in_message("no position"), None);
    }

    async fn engine() -> (QueryEngine, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(vigil_storage::StorageOptions::new(dir.path())).await.unwrap();
        (QueryEngine::new(storage, QueryOptions::default()).unwrap(), dir)
    }

    #[tokio::test]
    async fn workers_per_query_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(vigil_storage::StorageOptions::new(dir.path())).await.unwrap();
        let workers = |asked: usize| {
            let engine = QueryEngine::new(
                storage.clone(),
                QueryOptions { max_workers_per_query: asked, ..QueryOptions::default() },
            )
            .unwrap();
            engine.context().copied_config().target_partitions()
        };
        assert_eq!(workers(3), 3);
        assert_eq!(workers(MAX_WORKERS_PER_QUERY), MAX_WORKERS_PER_QUERY);
        assert_eq!(workers(MAX_WORKERS_PER_QUERY + 1), MAX_WORKERS_PER_QUERY);
        assert_eq!(workers(usize::MAX), MAX_WORKERS_PER_QUERY);
        assert_eq!(
            workers(0),
            datafusion::prelude::SessionConfig::new().target_partitions(),
            "0: DataFusion's default, one per CPU"
        );
    }

    #[tokio::test]
    async fn bad_sql_is_invalid_with_a_position() {
        let (engine, _dir) = engine().await;
        match engine.sql("SELECT * FROM nowhere").await {
            Err(QueryError::Invalid { message, .. }) => assert!(message.contains("nowhere"), "{message}"),
            other => panic!("unexpected {:?}", other.err()),
        }
        match engine.sql("SELECT 1 +").await {
            Err(QueryError::Invalid { position: Some((1, 11)), .. }) => {}
            other => panic!("unexpected {:?}", other.err()),
        }
        match engine.sql("SELECT 1\nFROM spans WHERE WHERE").await {
            Err(QueryError::Invalid { position: Some((2, 18)), .. }) => {}
            other => panic!("unexpected {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn writes_through_sql_are_refused() {
        let (engine, _dir) = engine().await;
        for statement in [
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO spans SELECT * FROM spans",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(matches!(engine.sql(statement).await, Err(QueryError::NotAllowed(_))), "{statement}");
        }
    }

    #[tokio::test]
    async fn one_stream_plans_a_scan_without_round_robin_and_answers_the_same() {
        use vigil_storage::write::{LabelSet, MetricSeries, Sample};
        let (engine, _dir) = engine().await;
        let storage = engine.storage().clone();
        let series = |host: &str| MetricSeries {
            metric: "m".into(),
            labels: LabelSet::new(vec![("host".into(), host.into())]).unwrap(),
            samples: (1..200).map(|i| Sample { timestamp_ns: i * 1_000_000_000, value: i as f64 }).collect(),
        };
        storage
            .write(vigil_storage::WriteBatch { metrics: vec![series("a"), series("b")], rows: Vec::new() })
            .await
            .unwrap();
        storage.persist().await.unwrap();
        let provider = storage.table_provider("m", storage.table_schema("m").unwrap());
        // The shape of a sweep chunk: a label filter and computed columns.
        use datafusion::prelude::{cast, col, lit};
        let frame = engine
            .context()
            .read_table(provider)
            .unwrap()
            .filter(col("host").not_eq(lit("c")).and(col("value").gt(lit(100.0))))
            .unwrap()
            .select(vec![
                col("host"),
                (cast(col("timestamp"), datafusion::arrow::datatypes::DataType::Int64) / lit(1_000_000i64)).alias("ts"),
                col("value"),
            ])
            .unwrap();
        let plan = |frame: DataFrame| async move {
            let plan = frame.create_physical_plan().await.unwrap();
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string()
        };
        let one = engine.one_stream(frame.clone());
        let text = plan(one.clone()).await;
        assert!(!text.contains("RoundRobinBatch"), "{text}");
        if engine.context().state().config().target_partitions() > 1 {
            let text = plan(frame.clone()).await;
            assert!(text.contains("RoundRobinBatch"), "the shared session spreads one file's batches: {text}");
        }
        let rows = |batches: Vec<RecordBatch>| batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        assert_eq!(rows(one.collect().await.unwrap()), 2 * 99);
        assert_eq!(rows(frame.collect().await.unwrap()), 2 * 99);
    }

    #[tokio::test]
    async fn information_schema_lists_the_fixed_tables() {
        let (engine, _dir) = engine().await;
        let result = engine
            .sql("SELECT count(DISTINCT table_name) FROM information_schema.columns WHERE table_schema = 'public'")
            .await
            .unwrap();
        let count = result.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(count, vigil_storage::schema::FixedTable::ALL.len() as i64);
    }
}
