//! The step sweep: evaluates a range function (or the instant lookup) at every step of a
//! query over a selector's samples, one time chunk at a time.
//!
//! A selector's samples arrive as rows of (labels, `#ts`, `#value`), in chunks of time that
//! follow the storage partitions (each chunk is its own scan, so it reads only that
//! partition's segments). Rows of one series come in runs (segments are sorted by series,
//! then time), so a series is looked up once per run, not per row. When a chunk has been
//! read, every step whose window ends inside it is evaluated and the samples no later
//! window needs are dropped: a query holds O(series × (window + chunk)) samples, never a
//! series' whole range, and what it holds is reserved from the query's memory pool, so a
//! query too big for `query.max_memory` is refused instead of growing the process.
//!
//! Prometheus's `Engine.rangeEval` walks steps and keeps per-series iterators the same way;
//! this keeps its semantics exactly (lookback, stale markers, the last of duplicate
//! timestamps wins) and hands the per-step rows to DataFusion for what follows.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Float64Builder, Int32Array, Int64Builder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;

use super::chunk_scan::{ChunkRows, ChunkScan};
use super::compile::{TS, VALUE};
use super::kernels::{self, RangeFunction, Window, is_stale};
use super::udf::{SampleBudget, Steps, nanos_to_ms};

/// Rows per output batch (DataFusion's default batch size).
const OUTPUT_BATCH_ROWS: usize = 8192;
/// Most chunks one selector is read in: past this, a chunk spans several partitions.
const MAX_CHUNKS: i64 = 512;

/// The rows of a selector whose samples lie in one span of time ending at `high_ms`, after
/// the previous chunk's.
#[derive(Clone)]
pub struct SweepChunk {
    pub high_ms: i64,
    pub scan: ChunkScan,
    /// The rows of the window before this chunk (`[low - window, low)`), when a lane of the
    /// sweep starts here: a lane reads them first, so its first steps see whole windows.
    pub lead_in: Option<ChunkScan>,
}

impl std::fmt::Debug for SweepChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepChunk").field("high_ms", &self.high_ms).finish()
    }
}

/// Splits `[low_ms, high_ms]` at the storage partition boundaries (`partition_ms` long,
/// from the epoch), merging partitions when there would be more than [`MAX_CHUNKS`].
pub fn chunk_bounds(low_ms: i64, high_ms: i64, partition_ms: i64) -> Vec<(i64, i64)> {
    if high_ms < low_ms {
        return Vec::new();
    }
    let partition = i128::from(partition_ms.max(1));
    let span = i128::from(high_ms) - i128::from(low_ms) + 1;
    let per_chunk = (span / partition / i128::from(MAX_CHUNKS) + 1) * partition;
    let mut bounds = Vec::new();
    let mut low = i128::from(low_ms);
    while low <= i128::from(high_ms) {
        let end = (low.div_euclid(per_chunk) + 1) * per_chunk - 1;
        let high = end.min(i128::from(high_ms));
        // Both fit in i64: they lie within [low_ms, high_ms].
        bounds.push((low as i64, high as i64));
        low = high + 1;
    }
    bounds
}

/// Joins neighbouring chunks that one of `spans` (inclusive; a segment that merged several
/// partitions) reaches into both: such a segment is read once for all of its time the
/// query needs, not once per partition.
pub fn join_chunks_within(bounds: Vec<(i64, i64)>, spans: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut joined: Vec<(i64, i64)> = Vec::with_capacity(bounds.len());
    for (low, high) in bounds {
        match joined.last_mut() {
            Some(last) if spans.iter().any(|&(first, end)| first <= last.1 && end >= low) => last.1 = high,
            _ => joined.push((low, high)),
        }
    }
    joined
}

/// Where lanes of a sweep over `chunks` (their time bounds, in order) start (chunk indices,
/// the first lane's 0 left out): up to `lanes` runs of consecutive chunks of about equal time
/// each, swept on their own (in parallel) after reading the window before their first chunk
/// again. Time, not chunks: a merged day is one chunk of twelve partitions' rows, and lanes of
/// equal chunk counts left one lane most of a week's rows. The lead-in costs a re-read of the
/// partition before, so a sweep of fewer than three chunks stays one lane.
pub fn lane_starts(chunks: &[(i64, i64)], lanes: usize) -> Vec<usize> {
    if chunks.len() < 3 || lanes < 2 {
        return Vec::new();
    }
    let lanes = lanes.min(chunks.len() / 2);
    // Time before each chunk boundary: ends[j] is the time of chunks 0..j.
    let mut ends = Vec::with_capacity(chunks.len() + 1);
    ends.push(0i128);
    for &(low, high) in chunks {
        let last = ends[ends.len() - 1];
        ends.push(last + (i128::from(high) - i128::from(low) + 1));
    }
    let total = ends[chunks.len()];
    let mut starts: Vec<usize> = Vec::with_capacity(lanes - 1);
    for lane in 1..lanes {
        let target = total * lane as i128 / lanes as i128;
        let after = starts.last().map_or(1, |&start| start + 1);
        let nearest = (after..chunks.len()).min_by_key(|&j| (ends[j] - target).abs());
        if let Some(start) = nearest {
            starts.push(start);
        }
    }
    starts
}

/// What to evaluate at every step.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub function: RangeFunction,
    pub steps: Steps,
    /// Window length: the range of a range vector, or the lookback for an instant lookup.
    pub range_ms: i64,
    pub offset_ms: i64,
    /// `@` modifier: evaluate every step at this time instead.
    pub at_ms: Option<i64>,
    /// φ for `quantile_over_time`, seconds for `predict_linear`, the smoothing and trend
    /// factors for `holt_winters`.
    pub params: [f64; 2],
    /// Samples the query may still load (the series' samples) and produce (points).
    pub budget: SampleBudget,
    /// Aggregate each step's values by the output labels instead of returning them.
    pub fold: Option<Fold>,
    /// Threads the whole sweep may use (the query's workers): lanes run in parallel, and a
    /// sweep of fewer lanes than workers evaluates each chunk's series on the rest.
    pub workers: usize,
}

/// An aggregation folded into the sweep (`sum by (job) (rate(x[5m]))`): each step's values
/// go straight into their group, so the per-series rows are never built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
}

/// One group's accumulator at one step.
#[derive(Clone, Copy, Default)]
struct Accumulator {
    value: f64,
    count: u64,
}

impl Accumulator {
    fn add(&mut self, fold: Fold, value: f64) {
        self.count += 1;
        if self.count == 1 {
            self.value = value;
            return;
        }
        match fold {
            Fold::Sum => self.value += value,
            // Prometheus 2.42's running mean: each side divided by the count, so values near
            // f64::MAX average without overflowing; an infinite mean stays unless a value
            // of the other sign (or NaN) comes.
            Fold::Avg => {
                if self.value.is_infinite()
                    && (value.is_infinite() && (self.value > 0.0) == (value > 0.0)
                        || !value.is_infinite() && !value.is_nan())
                {
                    return;
                }
                let n = self.count as f64;
                self.value += value / n - self.value / n;
            }
            // NaN loses to any number, as in Prometheus; all NaN gives NaN.
            Fold::Min => {
                if value < self.value || self.value.is_nan() {
                    self.value = value;
                }
            }
            Fold::Max => {
                if value > self.value || self.value.is_nan() {
                    self.value = value;
                }
            }
            Fold::Count | Fold::Group => {}
        }
    }

    fn result(&self, fold: Fold) -> f64 {
        match fold {
            Fold::Sum | Fold::Min | Fold::Max => self.value,
            Fold::Avg => self.value,
            Fold::Count => self.count as f64,
            Fold::Group => 1.0,
        }
    }
}

impl SweepSpec {
    fn is_instant(&self) -> bool {
        matches!(self.function, RangeFunction::Instant | RangeFunction::InstantTimestamp)
    }

    /// The sample time a step's window ends at.
    fn eval_time(&self, step: i64) -> i64 {
        self.at_ms.unwrap_or(step) - self.offset_ms
    }
}

/// One sweep: `input_labels` are the label columns of the chunks' rows (a series is one
/// combination of them), `output_labels` the ones kept. It is read as one DataFusion stream
/// per lane (see [`lane_starts`]); lanes evaluate disjoint steps, so their rows never meet.
#[derive(Debug)]
pub struct Sweep {
    spec: SweepSpec,
    /// The label columns of the rows read.
    input_labels: Vec<String>,
    /// Values of the labels every series has but its rows do not carry (a one-table
    /// selector's metric name), after `input_labels` in a series' labels.
    constants: Vec<Option<String>>,
    /// Indices into a series' labels (`input_labels`, then the constants) of the output label
    /// columns.
    kept: Vec<usize>,
    schema: SchemaRef,
}

impl Sweep {
    /// The sweep's schema and its lanes, as the partitions of a `StreamingTable`: a lane
    /// starts at the first chunk and at every chunk with a lead-in. `series_labels` are every
    /// series' labels: the chunks' label columns, then as many as `constants` has values,
    /// which the rows leave out (see `MatrixPlan`).
    pub fn lanes(
        spec: SweepSpec,
        chunks: Vec<SweepChunk>,
        mut series_labels: Vec<String>,
        constants: Vec<Option<String>>,
        output_labels: Vec<String>,
    ) -> (SchemaRef, SweepLanes) {
        let mut fields: Vec<Field> = output_labels.iter().map(|l| Field::new(l, DataType::Utf8, true)).collect();
        fields.push(Field::new(TS, DataType::Int64, true));
        fields.push(Field::new(VALUE, DataType::Float64, true));
        let kept = output_labels.iter().filter_map(|l| series_labels.iter().position(|i| i == l)).collect();
        // What the rows carry: the labels before the constants.
        series_labels.truncate(series_labels.len().saturating_sub(constants.len()));
        let schema = Arc::new(Schema::new(fields));
        let sweep = Arc::new(Sweep { spec, input_labels: series_labels, constants, kept, schema: schema.clone() });
        let mut lanes: Vec<Vec<SweepChunk>> = Vec::new();
        for chunk in chunks {
            match lanes.last_mut() {
                Some(lane) if chunk.lead_in.is_none() => lane.push(chunk),
                _ => lanes.push(vec![chunk]),
            }
        }
        if lanes.is_empty() {
            lanes.push(Vec::new());
        }
        let count = lanes.len();
        let threads = (sweep.spec.workers / count).max(1);
        let mut after_ms = None;
        let mut partitions = Vec::with_capacity(count);
        for (index, chunks) in lanes.into_iter().enumerate() {
            let end_ms = match chunks.last() {
                Some(last) if index + 1 < count => last.high_ms,
                _ => i64::MAX,
            };
            partitions.push(Arc::new(SweepLane { sweep: sweep.clone(), chunks, after_ms, end_ms, threads }));
            after_ms = Some(end_ms);
        }
        (schema, SweepLanes(partitions))
    }
}

/// A sweep's lanes: read as DataFusion partitions (rows of labels, step and value) by a plan
/// that goes on with them, or as series by a query whose answer they are.
#[derive(Clone, Debug)]
pub struct SweepLanes(Vec<Arc<SweepLane>>);

/// One output series (or group) of a sweep: its output label values and its points,
/// time-ordered.
pub type SweptSeries = (Vec<Option<String>>, Vec<(i64, f64)>);

impl SweepLanes {
    /// The lanes as the partitions of a `StreamingTable`.
    pub fn partitions(&self) -> Vec<Arc<dyn PartitionStream>> {
        self.0.iter().map(|lane| lane.clone() as Arc<dyn PartitionStream>).collect()
    }

    /// Every lane's series, the lanes run in parallel. A query whose answer is the sweep's
    /// output takes its points this way: one vector per series instead of a row with every
    /// label value per step, regrouped by label values afterwards (a third of a 1 h
    /// `max_over_time`'s time). A series evaluated by two lanes comes once from each.
    pub async fn series(&self, ctx: Arc<TaskContext>) -> DfResult<Vec<SweptSeries>> {
        let runs: Vec<SpawnedTask<DfResult<Vec<SweptSeries>>>> = self
            .0
            .iter()
            .map(|lane| {
                let run = lane.start(&ctx, true);
                SpawnedTask::spawn(run.into_series())
            })
            .collect();
        let mut out = Vec::new();
        for run in runs {
            out.extend(run.join().await.map_err(|e| DataFusionError::Execution(format!("sweep lane: {e}")))??);
        }
        Ok(out)
    }
}

/// One lane of a sweep: its chunks, and the steps it evaluates (those whose window ends
/// after `after_ms`, up to `end_ms`).
#[derive(Debug)]
struct SweepLane {
    sweep: Arc<Sweep>,
    chunks: Vec<SweepChunk>,
    after_ms: Option<i64>,
    end_ms: i64,
    /// Threads evaluating a chunk's series (see [`for_each_value`]).
    threads: usize,
}

impl PartitionStream for SweepLane {
    fn schema(&self) -> &SchemaRef {
        &self.sweep.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let run = self.start(&ctx, false);
        let stream = futures::stream::unfold(run, |mut run| async move {
            if run.failed {
                return None;
            }
            match run.next_batch().await {
                Ok(Some(batch)) => Some((Ok(batch), run)),
                Ok(None) => None,
                Err(error) => {
                    run.failed = true;
                    Some((Err(error), run))
                }
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.sweep.schema.clone(), stream))
    }
}

impl SweepLane {
    /// The lane's run, producing rows, or with `as_series` points per series (see
    /// [`SweepLanes::series`]).
    fn start(&self, ctx: &TaskContext, as_series: bool) -> SweepRun {
        let reservation = MemoryConsumer::new("PromQL step sweep").register(ctx.memory_pool());
        let spec = &self.sweep.spec;
        let next_step =
            self.after_ms.map_or(0, |after| spec.steps.iter().take_while(|&s| spec.eval_time(s) <= after).count());
        // A lane's reads in order: its lead-in (no step is due after it), then its chunks.
        let mut reads = VecDeque::new();
        for (index, chunk) in self.chunks.iter().enumerate() {
            if let Some(lead_in) = &chunk.lead_in {
                reads.push_back(Read { scan: lead_in.clone(), finishes: None });
            }
            let last = index + 1 == self.chunks.len();
            let finishes = if last { self.end_ms } else { chunk.high_ms };
            reads.push_back(Read { scan: chunk.scan.clone(), finishes: Some(finishes) });
        }
        SweepRun {
            spec: spec.clone(),
            reads,
            input_labels: self.sweep.input_labels.clone(),
            kept: self.sweep.kept.clone(),
            schema: self.sweep.schema.clone(),
            series: {
                let series = SeriesSet::new(spec.is_instant()).with_constants(self.sweep.constants.clone());
                if spec.is_instant() {
                    let mut lookups: Vec<i64> = spec.steps.iter().map(|step| spec.eval_time(step)).collect();
                    lookups.sort_unstable();
                    lookups.dedup();
                    series.with_lookups(lookups.into())
                } else {
                    series
                }
            },
            input: None,
            prefetched: None,
            finishes: None,
            next_step,
            threads: self.threads,
            out: VecDeque::new(),
            reservation,
            charged: 0,
            failed: false,
            groups: HashMap::new(),
            group_labels: Vec::new(),
            series_group: Vec::new(),
            points: as_series.then(Vec::new),
            early: EarlyValues::default(),
        }
    }
}

/// One scan a lane reads, and the time up to which every step is due once it is read
/// (`None` for a lead-in; `i64::MAX` for the sweep's last chunk).
struct Read {
    scan: ChunkScan,
    finishes: Option<i64>,
}

struct SweepRun {
    spec: SweepSpec,
    reads: VecDeque<Read>,
    input_labels: Vec<String>,
    /// Indices into `input_labels` of the output label columns.
    kept: Vec<usize>,
    schema: SchemaRef,
    series: SeriesSet,
    input: Option<SendableRecordBatchStream>,
    /// The next scan, planned (and started) while this one is swept: planning a chunk's scan
    /// is a fixed cost a query of many chunks would otherwise pay in series. Aborted if the
    /// query is dropped.
    prefetched: Option<SpawnedTask<DfResult<ChunkRows>>>,
    /// What the scan being read finishes (see [`Read`]).
    finishes: Option<i64>,
    /// Index of the first step not evaluated yet.
    next_step: usize,
    /// Threads evaluating a chunk's series.
    threads: usize,
    out: VecDeque<RecordBatch>,
    reservation: MemoryReservation,
    /// Samples held, as charged to the sample budget.
    charged: usize,
    failed: bool,
    /// With a fold: groups by their label values, and each series' group.
    groups: HashMap<Vec<Option<String>>, usize>,
    group_labels: Vec<Vec<Option<String>>>,
    series_group: Vec<usize>,
    /// With points per series instead of rows: each series' points, by its slot in `series`.
    points: Option<Vec<Vec<(i64, f64)>>>,
    early: EarlyValues,
}

/// A chunk's step values, evaluated series by series as soon as a series' run has ended,
/// while its samples are still in the cache they were just copied through. Evaluated once
/// the whole chunk had been read, a chunk's series (megabytes) were loaded from memory
/// again: half of the evaluation's time was waiting for them. Where a series' values go
/// depends on what the sweep makes of them (see [`Taken`]): with a fold they are folded into
/// the chunk's group accumulators at once, gathering series they are pushed to the series'
/// points, and only rows wait here to be emitted in series order at the chunk's end. (Held
/// for the chunk, a value a series and step, 16 bytes each: a 1 h panel at a 15 s step held
/// 240 of them for each of its series, more than its samples, and reallocating them as they
/// grew made them a 1 h `rate`'s peak memory.) A series whose samples keep coming after its
/// run ended (rows of several segments, interleaved) has its values taken back (a fold's
/// are all taken back, the accumulators starting over: a sum cannot be undone) and is
/// evaluated at the chunk's end, and early evaluation stops for the rest of the chunk; so
/// does all of it when a chunk's series are evaluated on several threads (see
/// [`parallel_split`]). The samples stay held until the chunk's end either way.
#[derive(Default)]
struct EarlyValues {
    /// The steps the scan being read finishes, when its series are evaluated early.
    steps: Option<Vec<i64>>,
    /// Whether the scan being read comes one run per series, so a series evaluated early
    /// drops the samples no later step needs at once (see [`ChunkRows::runs_once`]).
    runs_once: bool,
    /// Where the window of the step after them starts: a series evaluated early has the
    /// samples before it found then, for the chunk's trim (see [`Early::cut`]).
    keep_from: Option<i64>,
    /// (index into `steps`, value) of the series whose values wait as rows; each series'
    /// are a range.
    points: Vec<(usize, f64)>,
    /// With a fold: the chunk's accumulators, a row of `steps` per group (group-major),
    /// holding the values of the series folded so far; rows of groups seen since are added
    /// at the chunk's end.
    folded: Vec<Accumulator>,
}

impl EarlyValues {
    fn bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<(usize, f64)>()
            + self.folded.capacity() * std::mem::size_of::<Accumulator>()
    }
}

impl SweepRun {
    /// Runs the lane to its end, gathering points per series (per group, with a fold).
    async fn into_series(mut self) -> DfResult<Vec<SweptSeries>> {
        while self.next_batch().await?.is_some() {}
        let points = self.points.take().unwrap_or_default();
        let labels: Vec<Vec<Option<String>>> = match self.spec.fold {
            Some(_) => std::mem::take(&mut self.group_labels),
            None => self
                .series
                .series
                .iter()
                .map(|series| self.kept.iter().map(|&i| series.labels[i].clone()).collect())
                .collect(),
        };
        Ok(labels.into_iter().zip(points).filter(|(_, points)| !points.is_empty()).collect())
    }

    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.out.pop_front() {
                return Ok(Some(batch));
            }
            if let Some(input) = &mut self.input {
                match input.next().await {
                    Some(batch) => {
                        self.ingest(&batch?)?;
                    }
                    None => {
                        self.input = None;
                        if let Some(high_ms) = self.finishes {
                            self.finish_chunk(high_ms)?;
                        }
                    }
                }
                continue;
            }
            let Some(read) = self.reads.pop_front() else {
                self.reservation.free();
                self.spec.budget.give_back(std::mem::take(&mut self.charged));
                return Ok(None);
            };
            let rows = match self.prefetched.take() {
                Some(task) => {
                    task.join().await.map_err(|e| DataFusionError::Execution(format!("chunk scan: {e}")))??
                }
                None => read.scan.rows().await?,
            };
            self.begin_read(read.finishes, rows.runs_once);
            if let Some(next) = self.reads.front() {
                let scan = next.scan.clone();
                self.prefetched = Some(SpawnedTask::spawn(scan.rows()));
            }
            self.input = Some(rows.stream);
        }
    }

    /// Starts reading a scan that finishes the steps up to `finishes` (see [`Read`]), whose
    /// rows may be known to come one run per series (see [`ChunkRows::runs_once`]).
    fn begin_read(&mut self, finishes: Option<i64>, runs_once: bool) {
        self.finishes = finishes;
        self.early.runs_once = runs_once;
        self.series.begin_read();
        // Early evaluation is for the one-thread evaluation (see `parallel_split`).
        let one_thread = self.threads < 2 || self.spec.is_instant();
        self.early.steps =
            finishes.filter(|_| one_thread).map(|high_ms| self.due_steps(high_ms)).filter(|s| !s.is_empty());
        if let Some(steps) = &self.early.steps {
            self.early.keep_from = self.keep_from(self.next_step + steps.len());
        }
    }

    /// Where the window of step `next` starts: the samples before it are needed by no step
    /// from there on (all of them, when there is no such step).
    fn keep_from(&self, next: usize) -> Option<i64> {
        self.spec.steps.iter().nth(next).map(|s| self.spec.eval_time(s) - self.spec.range_ms)
    }

    /// Takes a batch of the scan's rows.
    fn ingest(&mut self, batch: &RecordBatch) -> DfResult<()> {
        self.series.ingest(batch, &self.input_labels)?;
        self.evaluate_ended()?;
        self.charge_held()?;
        self.reservation.try_resize(self.series.held_bytes() + self.early.bytes())?;
        Ok(())
    }

    /// The steps not evaluated yet whose window ends at or before `high_ms`.
    fn due_steps(&self, high_ms: i64) -> Vec<i64> {
        self.spec.steps.iter().skip(self.next_step).take_while(|&s| self.spec.eval_time(s) <= high_ms).collect()
    }

    /// Evaluates the series whose run has ended, when the scan's series are evaluated early
    /// (see [`EarlyValues`]).
    fn evaluate_ended(&mut self) -> DfResult<()> {
        let (ended, reopened) = self.series.take_ended();
        if self.early.runs_once && !reopened.is_empty() {
            // Their samples are gone: evaluating them again would be wrong.
            return Err(DataFusionError::Internal(format!(
                "a scan said to hold one run per series had {} series come again",
                reopened.len()
            )));
        }
        if !reopened.is_empty() {
            self.early.steps = None;
            self.take_back(reopened);
        }
        if let Some(steps) = self.early.steps.take() {
            for &slot in &ended {
                let series = &self.series.series[slot];
                if series.early.is_some() || !series.fresh.is_empty() {
                    continue;
                }
                let taken = self.evaluate_early(slot, &steps)?;
                let series = &mut self.series.series[slot];
                let cut = self
                    .early
                    .keep_from
                    .map_or(series.timestamps.len(), |keep_from| series.timestamps.partition_point(|&t| t < keep_from));
                if self.early.runs_once {
                    // No more of its rows in this scan: what no later step needs goes now,
                    // not at the chunk's end (a merged day's samples of every series at once),
                    // and the room its run took serves the next series' run.
                    self.series.drop_front_giving_room(slot, cut);
                    self.series.series[slot].early = Some(Early { taken, cut: 0 });
                } else {
                    series.early = Some(Early { taken, cut });
                }
            }
            self.early.steps = Some(steps);
        }
        self.series.give_back_ended(ended);
        Ok(())
    }

    /// Evaluates `slot`'s series at `steps` (the chunk's), its run having ended: folded into
    /// its group's accumulators, pushed to its points or held as rows.
    fn evaluate_early(&mut self, slot: usize, steps: &[i64]) -> DfResult<Taken> {
        if let Some(fold) = self.spec.fold {
            let group = self.group_of(slot);
            let folded = &mut self.early.folded;
            if folded.len() < (group + 1) * steps.len() {
                folded.resize((group + 1) * steps.len(), Accumulator::default());
            }
            let row = &mut folded[group * steps.len()..][..steps.len()];
            let mut evaluated = 0;
            for (at, value) in step_values(&self.spec, &self.series.series[slot], steps) {
                row[at].add(fold, value);
                evaluated += 1;
            }
            // A series' points exist for a moment before they are folded, as at the end.
            self.spec.budget.pass(evaluated)?;
            return Ok(Taken::Folded);
        }
        let series = &self.series.series[slot];
        if let Some(points) = &mut self.points {
            if points.len() <= slot {
                points.resize_with(slot + 1, Vec::new);
            }
            let points = &mut points[slot];
            let from = points.len();
            points.reserve(steps.len());
            points.extend(step_values(&self.spec, series, steps).map(|(at, value)| (steps[at], value)));
            self.spec.budget.take(points.len() - from)?;
            return Ok(Taken::Emitted(from));
        }
        let from = self.early.points.len();
        self.early.points.extend(step_values(&self.spec, series, steps));
        Ok(Taken::Held(from..self.early.points.len()))
    }

    /// Takes back the values of series evaluated early that have had more samples since
    /// (they are evaluated at the chunk's end instead): points pushed are dropped; values
    /// folded cannot be taken out of a sum, so the chunk's accumulators start over and every
    /// series folded so far waits for the end too.
    fn take_back(&mut self, reopened: Vec<(usize, Early)>) {
        let mut unfold = false;
        for (slot, early) in reopened {
            match early.taken {
                Taken::Held(_) => {}
                Taken::Folded => unfold = true,
                Taken::Emitted(from) => {
                    if let Some(points) = self.points.as_mut().and_then(|points| points.get_mut(slot)) {
                        self.spec.budget.give_back(points.len().saturating_sub(from));
                        points.truncate(from);
                    }
                }
            }
        }
        if unfold {
            self.early.folded.clear();
            for series in &mut self.series.series {
                if matches!(series.early, Some(Early { taken: Taken::Folded, .. })) {
                    series.early = None;
                }
            }
        }
    }

    /// Evaluates every step whose window ends at or before `high_ms` and drops the samples
    /// no later step needs.
    fn finish_chunk(&mut self, high_ms: i64) -> DfResult<()> {
        self.series.settle();
        let steps = self.due_steps(high_ms);
        // What a parallel evaluation's points wait in is the query's too.
        let waiting = parallel_bytes(&self.spec, self.series.series.len(), steps.len(), self.threads);
        self.reservation.try_resize(self.series.held_bytes() + self.early.bytes() + waiting)?;
        match self.spec.fold {
            _ if steps.is_empty() => {}
            None => self.emit_series(&steps)?,
            Some(fold) => self.emit_groups(fold, &steps)?,
        }
        self.early.steps = None;
        self.early.points.clear();
        self.early.folded.clear();
        self.next_step += steps.len();
        // The next window starts here (or nothing more is evaluated).
        self.series.trim(self.keep_from(self.next_step));
        self.charge_held()?;
        self.reservation.try_resize(self.series.held_bytes())?;
        Ok(())
    }

    /// Charges the samples held to the query's sample budget, or gives back those dropped:
    /// like Prometheus's `query.max-samples`, the budget bounds what a query holds at once,
    /// so a long range of few series is not refused for the samples it has already let go.
    fn charge_held(&mut self) -> DfResult<()> {
        let held = self.series.held_samples;
        if held > self.charged {
            self.spec.budget.take(held - self.charged)?;
        } else {
            self.spec.budget.give_back(self.charged - held);
        }
        self.charged = held;
        Ok(())
    }

    /// One row per series and step with a value (or one point, gathering series).
    fn emit_series(&mut self, steps: &[i64]) -> DfResult<()> {
        let (spec, series) = (&self.spec, &self.series.series);
        if let Some(points) = &mut self.points {
            points.resize_with(series.len(), Vec::new);
            // At most one point a step: growing by an unknown length reallocated and copied
            // each series' points several times a chunk. (Those evaluated early have theirs.)
            for (points, series) in points.iter_mut().zip(series) {
                if series.early.is_none() {
                    points.reserve(steps.len());
                }
            }
            // Charged a series at a time, so a query past its budget stops early.
            let (mut current, mut pending) = (0, 0);
            for_each_value(spec, series, &self.early.points, steps, self.threads, |index, at, value| {
                if index != current {
                    spec.budget.take(std::mem::take(&mut pending))?;
                    current = index;
                }
                points[index].push((steps[at], value));
                pending += 1;
                Ok(())
            })?;
            return spec.budget.take(pending);
        }
        let (kept, out) = (&self.kept, &mut self.out);
        let mut output = OutputBuilder::new(self.schema.clone(), kept.len());
        let mut current = 0;
        for_each_value(spec, series, &self.early.points, steps, self.threads, |index, at, value| {
            // Batches end between series.
            if index != current && output.rows >= OUTPUT_BATCH_ROWS {
                spec.budget.take(output.rows)?;
                out.push_back(output.finish()?);
            }
            current = index;
            output.push(&series[index].labels, kept, steps[at], value);
            Ok(())
        })?;
        if output.rows > 0 {
            spec.budget.take(output.rows)?;
            out.push_back(output.finish()?);
        }
        Ok(())
    }

    /// The group of the series at `slot`, groups being numbered as their first series come.
    fn group_of(&mut self, slot: usize) -> usize {
        while self.series_group.len() <= slot {
            let series = &self.series.series[self.series_group.len()];
            let key: Vec<Option<String>> = self.kept.iter().map(|&i| series.labels[i].clone()).collect();
            let group = match self.groups.get(&key) {
                Some(&group) => group,
                None => {
                    self.group_labels.push(key.clone());
                    self.groups.insert(key, self.group_labels.len() - 1);
                    self.group_labels.len() - 1
                }
            };
            self.series_group.push(group);
        }
        self.series_group[slot]
    }

    /// One row per group and step with a value: the fold of its series' values.
    fn emit_groups(&mut self, fold: Fold, steps: &[i64]) -> DfResult<()> {
        if let Some(last) = self.series.series.len().checked_sub(1) {
            self.group_of(last);
        }
        // The series folded early are in already (see [`EarlyValues`]).
        let mut accumulators = std::mem::take(&mut self.early.folded);
        accumulators.resize(self.group_labels.len() * steps.len(), Accumulator::default());
        let mut evaluated = 0;
        let series_group = &self.series_group;
        // Series are visited in order whatever the threads, so sums fold in the same order
        // (after those folded early, in the order their runs ended: the same for the same
        // segments).
        let (spec, series, early) = (&self.spec, &self.series.series, &self.early.points);
        for_each_value(spec, series, early, steps, self.threads, |index, at, value| {
            accumulators[series_group[index] * steps.len() + at].add(fold, value);
            evaluated += 1;
            Ok(())
        })?;
        // A chunk's points exist for a moment before they are folded, as without the fold.
        self.spec.budget.pass(evaluated)?;
        if let Some(points) = &mut self.points {
            points.resize_with(self.group_labels.len(), Vec::new);
            for (row, points) in accumulators.chunks(steps.len()).zip(points.iter_mut()) {
                let before = points.len();
                points.extend(folded_values(row, steps, fold));
                self.spec.budget.take(points.len() - before)?;
            }
            return Ok(());
        }
        let all: Vec<usize> = (0..self.kept.len()).collect();
        let mut output = OutputBuilder::new(self.schema.clone(), self.kept.len());
        for (row, labels) in accumulators.chunks(steps.len()).zip(&self.group_labels) {
            for (step, value) in folded_values(row, steps, fold) {
                output.push(labels, &all, step, value);
            }
            if output.rows >= OUTPUT_BATCH_ROWS {
                self.out.push_back(output.finish()?);
            }
        }
        if output.rows > 0 {
            self.out.push_back(output.finish()?);
        }
        Ok(())
    }
}

/// Evaluations in one part of a chunk's series evaluated in parallel: enough to outweigh
/// handing the part to the pool (a few µs), few enough that a 1 h panel's chunk (180 series
/// × 241 steps) spreads evenly over the threads (32,768 made it one part of 135 series and
/// one of 45) and that the points waiting to be visited stay small (16 bytes each, 128 KiB a
/// part). Parts of 4 MiB, one per thread and chunk, were each new memory to the allocator
/// query after query (a buffer that large is placed anew, and the one freed stays resident
/// until purged): five 1 h panels in a row grew RSS by ~35 MiB.
const PART_EVALUATIONS: usize = 8_192;

/// Parts a parallel evaluation hands out ahead of the one it visits, per thread (see
/// [`for_each_value`]): a thread finishing a part finds the next one waiting, and the
/// points evaluated but not yet visited stay a few parts a thread.
const PARTS_PER_THREAD: usize = 3;

/// How `series` are split when evaluated on up to `threads` (see [`for_each_value`]): the
/// series a thread takes at a time, and the threads that have a part; `None` when they are
/// evaluated on one. The instant lookup stays on one: its per-step work is a search too
/// cheap to spread (measured: no gain, more CPU).
fn parallel_split(spec: &SweepSpec, series: usize, steps: usize, threads: usize) -> Option<(usize, usize)> {
    let part = (PART_EVALUATIONS / steps.max(1)).max(1);
    let threads = threads.min(series.div_ceil(part));
    (threads > 1 && !spec.is_instant() && u32::try_from(steps).is_ok()).then_some((part, threads))
}

/// Memory the points of a parallel evaluation wait in, at most.
fn parallel_bytes(spec: &SweepSpec, series: usize, steps: usize, threads: usize) -> usize {
    parallel_split(spec, series, steps, threads)
        .map_or(0, |(part, threads)| threads * PARTS_PER_THREAD * part * steps * 16)
}

/// Calls `visit(series index, step index, value)` for every step of `steps` at which a
/// series of `series` has a value, series by series in order; a series evaluated early
/// (see [`EarlyValues`]) has its values taken from `early` when they wait there as rows,
/// and none when they were folded or pushed already. With `threads` > 1 and more
/// than one part's work (see [`parallel_split`]), parts of series are evaluated on that
/// many threads (the kernels are most of a sweep's time) and their points visited part by
/// part in series order: what `visit` sees, and so every sum it folds, is exactly what one
/// thread would give. The lane's own thread evaluates its share of the parts and visits every
/// part as it comes back from the sweep's pool (scoped jobs: they borrow the chunk's samples).
fn for_each_value(
    spec: &SweepSpec,
    series: &[SeriesSamples],
    early: &[(usize, f64)],
    steps: &[i64],
    threads: usize,
    mut visit: impl FnMut(usize, usize, f64) -> DfResult<()>,
) -> DfResult<()> {
    let Some((part, threads)) = parallel_split(spec, series.len(), steps.len(), threads) else {
        for (index, one) in series.iter().enumerate() {
            match &one.early {
                Some(Early { taken: Taken::Held(points), .. }) => {
                    for &(at, value) in &early[points.clone()] {
                        visit(index, at, value)?;
                    }
                    continue;
                }
                // Folded or pushed to its points already.
                Some(_) => continue,
                None => {}
            }
            for (at, value) in step_values(spec, one, steps) {
                visit(index, at, value)?;
            }
        }
        return Ok(());
    };
    let Some(pool) = sweep_pool() else {
        return for_each_value(spec, series, early, steps, 1, visit);
    };
    let parts: Vec<&[SeriesSamples]> = series.chunks(part).collect();
    let visit_part =
        |number: usize, points: &[(u32, u32, f64)], visit: &mut dyn FnMut(usize, usize, f64) -> DfResult<()>| {
            let part_start = number * part;
            points.iter().try_for_each(|&(index, at, value)| visit(part_start + index as usize, at as usize, value))
        };
    // This thread takes parts 0, threads, 2 threads, ... itself and hands the others to the
    // pool, at most `ahead` parts past the one it visits, so what waits to be visited stays
    // PARTS_PER_THREAD parts a thread whatever the chunk's size; buffers visited are handed
    // out again. A part comes back tagged with its number (parts finish out of order) and
    // waits in its slot until its turn. The pool's jobs never wait on this thread, so
    // queries sharing the pool cannot hold each other's parts up for good.
    let ahead = threads * PARTS_PER_THREAD;
    pool.in_place_scope(|scope| {
        let (done, arrived) = std::sync::mpsc::channel::<(usize, std::thread::Result<Points>)>();
        let mut slots: Vec<Option<Points>> = (0..ahead).map(|_| None).collect();
        let (mut spare, mut own, mut handed) = (Vec::<Points>::new(), Points::new(), 0);
        for (number, &slice) in parts.iter().enumerate() {
            let upto = parts.len().min(number + ahead);
            for (at, &part) in parts.iter().enumerate().take(upto).skip(handed) {
                if at % threads == 0 {
                    continue;
                }
                let (done, mut points) = (done.clone(), spare.pop().unwrap_or_default());
                scope.spawn(move |_| {
                    // A kernel's panic is the caller's, as without the pool.
                    let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        points.clear();
                        evaluate_part(spec, part, steps, &mut points);
                        points
                    }));
                    // The caller stopped (an error): nothing more is wanted.
                    let _ = done.send((at, evaluated));
                });
            }
            handed = upto;
            if number % threads == 0 {
                own.clear();
                evaluate_part(spec, slice, steps, &mut own);
                visit_part(number, &own, &mut visit)?;
                continue;
            }
            let points = loop {
                if let Some(points) = slots[number % ahead].take() {
                    break points;
                }
                // This thread holds a sender, and every part handed out sends once: a part
                // lost is a bug, and an answer without its points would be wrong.
                let Ok((at, evaluated)) = arrived.recv() else {
                    return Err(DataFusionError::Internal(format!("sweep part {number} was never evaluated")));
                };
                match evaluated {
                    Ok(points) => slots[at % ahead] = Some(points),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            };
            visit_part(number, &points, &mut visit)?;
            spare.push(points);
        }
        Ok(())
    })
}

/// One part's points: (series index in the part, step index, value).
type Points = Vec<(u32, u32, f64)>;

/// The threads parallel evaluations hand their parts to (see [`for_each_value`]): started
/// on first use and kept, one fewer than the CPUs, as the lane's own thread evaluates its
/// share too. `None` when they could not start (a process limit): evaluations stay on one.
fn sweep_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        rayon::ThreadPoolBuilder::new()
            .num_threads(cpus.saturating_sub(1).max(1))
            .thread_name(|index| format!("vigil-sweep-{index}"))
            .build()
            .inspect_err(|error| tracing::warn!(%error, "sweep threads did not start; evaluating on one"))
            .ok()
    })
    .as_ref()
}

fn evaluate_part(spec: &SweepSpec, series: &[SeriesSamples], steps: &[i64], points: &mut Points) {
    // Room for a value at every step up front (a part's at most, reserved in the query's
    // memory): grown as the values came, the buffer was copied at each doubling and ended
    // up to twice as large (a 1 h panel's rise in memory over five runs: 94-103 MiB with
    // it, 81 without).
    points.reserve(series.len() * steps.len());
    for (index, one) in series.iter().enumerate() {
        // Both fit: a part has at most PART_EVALUATIONS series, and steps were checked.
        points.extend(step_values(spec, one, steps).map(|(at, value)| (index as u32, at as u32, value)));
    }
}

/// The steps of `steps` at which `series` has a value: (index into `steps`, value).
fn step_values<'a>(
    spec: &'a SweepSpec,
    series: &'a SeriesSamples,
    steps: &'a [i64],
) -> impl Iterator<Item = (usize, f64)> + 'a {
    // A series with nothing held has no value anywhere: its steps are not walked.
    let steps = if series.timestamps.is_empty() { &steps[..0] } else { steps };
    let mut cursor = StepCursor::default();
    steps.iter().enumerate().filter_map(move |(at, &step)| {
        evaluate_step(spec, &series.timestamps, &series.values, step, &mut cursor).map(|value| (at, value))
    })
}

/// One group's folded points: its accumulators at `steps` that took a value.
fn folded_values<'a>(row: &'a [Accumulator], steps: &'a [i64], fold: Fold) -> impl Iterator<Item = (i64, f64)> + 'a {
    row.iter()
        .zip(steps)
        .filter(|(accumulator, _)| accumulator.count > 0)
        .map(move |(accumulator, &step)| (step, accumulator.result(fold)))
}

/// Where a series' steps stand: the previous step's window (its first sample and its
/// length), so the next window's bounds are sought where the previous advance puts them.
#[derive(Clone, Copy, Debug, Default)]
struct StepCursor {
    from: usize,
    advance: usize,
    width: usize,
    kept: kernels::InTurn,
}

/// The value at one step of one series with samples `timestamps`/`values` (time-ordered,
/// stale markers kept only for the instant lookup). Steps are evaluated in order, so their
/// windows never start earlier: `cursor` holds the previous step's window, and this one's
/// bounds are sought from there.
fn evaluate_step(
    spec: &SweepSpec,
    timestamps: &[i64],
    values: &[f64],
    step: i64,
    cursor: &mut StepCursor,
) -> Option<f64> {
    let eval = spec.eval_time(step);
    // Samples at a steady interval move a window by as many as the step before did.
    let from = seek_near(timestamps, cursor.from, cursor.from + cursor.advance, |t| t < eval - spec.range_ms);
    let to = seek_near(timestamps, from, from + cursor.width, |t| t <= eval);
    (cursor.from, cursor.advance, cursor.width) = (from, from - cursor.from, to - from);
    if from >= to || (spec.is_instant() && is_stale(values[to - 1])) {
        return None;
    }
    let window = Window {
        timestamps: &timestamps[from..to],
        values: &values[from..to],
        range_start: eval - spec.range_ms,
        range_end: eval,
        eval_time: step,
    };
    kernels::apply_in_turn(spec.function, &window, spec.params, &mut cursor.kept)
}

/// The first index at or after `from` whose time fails `before` (which holds for a prefix
/// of `timestamps`), tried first at `guess`: two probes when it is right, which it is for a
/// series scraped at a steady interval (a gallop from `from` took a dozen dependent ones),
/// three when it is one off, as it is every few steps when steps are shorter than the
/// interval (a window moves by 0, 0, 0, 1 samples at 15 s steps over 60 s scrapes).
fn seek_near(timestamps: &[i64], from: usize, guess: usize, before: impl Fn(i64) -> bool) -> usize {
    let guess = guess.clamp(from, timestamps.len());
    if guess > from && !before(timestamps[guess - 1]) {
        let back = guess - 1;
        if back == from || before(timestamps[back - 1]) {
            return back;
        }
        return seek(timestamps, from, before);
    }
    if guess == timestamps.len() || !before(timestamps[guess]) {
        return guess;
    }
    let on = guess + 1;
    if on == timestamps.len() || !before(timestamps[on]) {
        return on;
    }
    seek(timestamps, on, before)
}

/// The first index at or after `from` whose time fails `before` (which holds for a prefix
/// of `timestamps`): a gallop, since a step's window bound is usually a few samples on.
fn seek(timestamps: &[i64], from: usize, before: impl Fn(i64) -> bool) -> usize {
    let mut low = from;
    let mut span = 1;
    while low + span <= timestamps.len() && before(timestamps[low + span - 1]) {
        low += span;
        span *= 2;
    }
    let high = (low + span).min(timestamps.len());
    low + timestamps[low..high].partition_point(|&t| before(t))
}

/// Output rows being gathered into one batch.
struct OutputBuilder {
    schema: SchemaRef,
    labels: Vec<StringBuilder>,
    timestamps: Int64Builder,
    values: Float64Builder,
    rows: usize,
}

impl OutputBuilder {
    fn new(schema: SchemaRef, labels: usize) -> Self {
        OutputBuilder {
            schema,
            labels: (0..labels).map(|_| StringBuilder::new()).collect(),
            timestamps: Int64Builder::new(),
            values: Float64Builder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, labels: &[Option<String>], kept: &[usize], step: i64, value: f64) {
        for (builder, &index) in self.labels.iter_mut().zip(kept) {
            builder.append_option(labels[index].as_deref());
        }
        self.timestamps.append_value(step);
        self.values.append_value(value);
        self.rows += 1;
    }

    fn finish(&mut self) -> DfResult<RecordBatch> {
        let mut columns: Vec<Arc<dyn Array>> =
            self.labels.iter_mut().map(|b| Arc::new(b.finish()) as Arc<dyn Array>).collect();
        columns.push(Arc::new(self.timestamps.finish()));
        columns.push(Arc::new(self.values.finish()));
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// One series' samples: time-ordered without duplicates, and those of the chunk being read
/// that arrived out of order (in arrival order, until the chunk is settled).
#[derive(Debug, Default)]
pub struct SeriesSamples {
    pub labels: Vec<Option<String>>,
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    fresh: Vec<(i64, f64)>,
    /// Where the samples this chunk appended in order begin, and the chunk (see
    /// [`SeriesSet::chunk`]): an out-of-order run moves them back among the fresh ones.
    appended_from: usize,
    appended_in: u64,
    /// The next series whose label values hash alike (see [`SeriesSet::index`]).
    same_hash: Option<usize>,
    /// Its label values in [`SeriesSet::packed_labels`].
    packed: std::ops::Range<usize>,
    /// The series whose run followed this one's the last time one did: the guess for the
    /// next run (see [`SeriesSet::run_series`]).
    next_run: Option<usize>,
    /// This chunk's step values, evaluated as soon as the series' run ended. Cleared when
    /// more of its samples arrive, and at the trim.
    early: Option<Early>,
}

impl SeriesSamples {
    /// Drops the first `cut` samples.
    fn drop_front(&mut self, cut: usize) {
        if cut == 0 {
            return;
        }
        self.timestamps.drain(..cut);
        self.values.drain(..cut);
        self.appended_from = self.appended_from.saturating_sub(cut);
        // What a chunk appended, the next appends again: a series keeps that room (shrinking
        // it and growing it back was two reallocations per series per chunk and vector, ~4 %
        // of a 24 h query), unless it is large and mostly empty.
        if self.timestamps.capacity() > (4 * self.timestamps.len()).max(KEPT_CAPACITY) {
            self.timestamps.shrink_to_fit();
            self.values.shrink_to_fit();
        }
    }

    /// Notes that `chunk` appends in order from `held` on, unless it did already.
    fn appending_in(&mut self, chunk: u64, held: usize) {
        if self.appended_in != chunk {
            self.appended_in = chunk;
            self.appended_from = held;
        }
    }
}

/// A series' values evaluated early (see [`EarlyValues`]).
#[derive(Debug)]
struct Early {
    taken: Taken,
    /// How many of its samples the chunk's trim drops, found while they were at hand: a
    /// search of every series' times at the trim waited on memory (5 % of a 7 d `rate`).
    cut: usize,
}

/// Where a series' values evaluated early went.
#[derive(Debug)]
enum Taken {
    /// Waiting as rows: their range in [`EarlyValues::points`].
    Held(std::ops::Range<usize>),
    /// Folded into the chunk's accumulators ([`EarlyValues::folded`]).
    Folded,
    /// Pushed to the series' points, from this index of them.
    Emitted(usize),
}

/// Series by their label values, in the order first seen.
#[derive(Debug)]
pub struct SeriesSet {
    /// Series by the hash of their label values (a run is looked up from the batch's own
    /// strings, without building a key): the first with that hash, the others chained
    /// through [`SeriesSamples::same_hash`] (a vector per entry cost each lookup a cache miss).
    index: HashMap<u64, usize>,
    /// foldhash: SipHash over every run's label values was 3 % of a 24 h `rate` by job.
    hasher: foldhash::fast::RandomState,
    pub series: Vec<SeriesSamples>,
    held_samples: usize,
    /// Room the series' vectors kept at the last trim, in bytes (see [`Self::trim`]).
    spare_bytes: usize,
    label_bytes: usize,
    /// Stale markers are kept (the instant lookup must see them to stop at one; range
    /// functions never do).
    keep_stale: bool,
    /// Counts settled chunks, starting at 1 (a series' `appended_in` of 0 is no chunk).
    chunk: u64,
    /// Label values every series has after those its rows carry (see [`Sweep::lanes`]).
    constants: Vec<Option<String>>,
    /// Whether the last run (`last_run`) was taken in the scan being read, so its next run
    /// may still come in the next batch, and a run of another series ends it.
    run_open: bool,
    /// Series whose run ended (another series' began) since [`Self::take_ended`].
    ended: Vec<usize>,
    /// Series evaluated early that have had more samples since, with the values they had
    /// (see [`EarlyValues`]).
    reopened: Vec<(usize, Early)>,
    /// Every series' label values as its rows carry them, packed one series after another
    /// in the order first seen (see [`pack_value`]): a run's series is checked against
    /// these, read in order as the runs come, not against each series' strings scattered
    /// over the heap, each of which waited on memory (a third of the time a 7 d `rate` took
    /// its rows).
    packed_labels: Vec<u8>,
    /// The series of the last run taken, across chunks (see [`SeriesSamples::next_run`]).
    last_run: Option<usize>,
    /// An instant lookup's evaluation times (ms, ascending): of a run that rises, only the
    /// samples a lookup takes are kept (see [`lookup_samples`]).
    lookups: Option<Arc<[i64]>>,
    /// The rows of the run being taken that are kept (see [`Self::lookups`]).
    kept_rows: Vec<usize>,
    /// Room for runs, lent to the series whose run does not fit its own vectors and given
    /// back when the run was evaluated early and dropped (see [`Rooms`]).
    rooms: Rooms,
}

/// Vectors (times, values) the runs of a scan read one run per series pass through, handed
/// from series to series: a run that does not fit its series' vectors is taken in a large
/// pair given back by a run before (see [`Rooms::lend`]), and once evaluated early the samples
/// its window keeps move to a small pair, its large pair going back (see
/// [`Rooms::give_back`]). Between chunks a series so keeps only its window's samples. Each
/// kept the room its chunk's run had taken instead (2 h at 15 s: 480 samples in up to 1,024
/// of room, 16 KiB a series): 50-60 MiB of a 6 h `rate` over 2,000 series in two lanes; and
/// a merged day's run, shrunk at every trim, was grown again by reallocations at the next.
/// A batch's runs are all taken before its ended series are evaluated, so as many pairs are
/// in flight as a batch has runs.
#[derive(Debug, Default)]
struct Rooms {
    /// Large pairs given back, to be lent.
    large: Vec<(Vec<i64>, Vec<f64>)>,
    /// Small pairs the large ones were lent for, to take the samples runs given back leave.
    small: Vec<(Vec<i64>, Vec<f64>)>,
    /// What the pairs of both hold, in bytes (counted as the sweep's memory).
    bytes: usize,
}

impl Rooms {
    /// Pairs of each kind kept at most (a batch of 8,192 rows has at most 128 runs of
    /// [`MIN_ROOM`] samples); more are freed.
    const MAX_PAIRS: usize = 256;

    fn pair_bytes(pair: &(Vec<i64>, Vec<f64>)) -> usize {
        (pair.0.capacity() + pair.1.capacity()) * 8
    }

    /// Keeps `pair` among the large or the small pairs (freed when they are full).
    fn keep(&mut self, large: bool, pair: (Vec<i64>, Vec<f64>)) {
        let pairs = if large { &mut self.large } else { &mut self.small };
        if pairs.len() < Self::MAX_PAIRS {
            self.bytes += Self::pair_bytes(&pair);
            pairs.push(pair);
        }
    }

    /// The last large or small pair kept, if any.
    fn take(&mut self, large: bool) -> Option<(Vec<i64>, Vec<f64>)> {
        let pair = if large { self.large.pop() } else { self.small.pop() }?;
        self.bytes -= Self::pair_bytes(&pair);
        Some(pair)
    }

    /// Moves `series`' samples to a large pair when `rows` more do not fit its own vectors
    /// and a pair given back is larger: the run goes on after them without growing a vector.
    fn lend(&mut self, series: &mut SeriesSamples, rows: usize) {
        let room = series.timestamps.capacity();
        if room - series.timestamps.len() >= rows || self.large.last().is_none_or(|pair| pair.0.capacity() <= room) {
            return;
        }
        let Some(mut pair) = self.take(true) else { return };
        Self::exchange(series, 0, &mut pair);
        self.keep(false, pair);
    }

    /// Drops `series`' first `cut` samples by moving the others to a small pair and keeping
    /// its vectors as a large pair, when they hold much more room than the samples left need;
    /// `false` (nothing done) otherwise.
    fn give_back(&mut self, series: &mut SeriesSamples, cut: usize) -> bool {
        let left = series.timestamps.len() - cut;
        if series.timestamps.capacity() < (2 * left).max(MIN_ROOM) {
            return false;
        }
        let mut pair = self.take(false).unwrap_or_default();
        Self::exchange(series, cut, &mut pair);
        self.keep(true, pair);
        true
    }

    /// Copies `series`' samples from `from` on into `pair`'s vectors (reusing their room) and
    /// exchanges the two: the series holds them there, `pair` its vectors.
    fn exchange(series: &mut SeriesSamples, from: usize, pair: &mut (Vec<i64>, Vec<f64>)) {
        series.timestamps[from..].clone_into(&mut pair.0);
        series.values[from..].clone_into(&mut pair.1);
        std::mem::swap(&mut series.timestamps, &mut pair.0);
        std::mem::swap(&mut series.values, &mut pair.1);
    }
}

impl SeriesSet {
    pub fn new(keep_stale: bool) -> SeriesSet {
        SeriesSet {
            index: HashMap::new(),
            hasher: foldhash::fast::RandomState::default(),
            series: Vec::new(),
            held_samples: 0,
            spare_bytes: 0,
            label_bytes: 0,
            keep_stale,
            chunk: 1,
            constants: Vec::new(),
            run_open: false,
            ended: Vec::new(),
            reopened: Vec::new(),
            packed_labels: Vec::new(),
            last_run: None,
            lookups: None,
            kept_rows: Vec::new(),
            rooms: Rooms::default(),
        }
    }

    /// Keeps of each run only the samples an instant lookup at `times` (ms, ascending)
    /// takes: a 7 d panel at 10 min steps over samples every minute looks at one in ten, and
    /// holding (and converting, copying, searching) the other nine cost a tenth of its CPU.
    pub fn with_lookups(mut self, times: Arc<[i64]>) -> SeriesSet {
        self.lookups = Some(times);
        self
    }

    /// Gives every series `values` after the labels its rows carry.
    pub fn with_constants(mut self, values: Vec<Option<String>>) -> SeriesSet {
        self.constants = values;
        self
    }

    /// Starts reading another scan: its first run ends no run before it.
    fn begin_read(&mut self) {
        self.run_open = false;
        self.ended.clear();
    }

    /// Adds a batch of (labels, `#ts`, `#value`) rows; returns the rows taken (null time or
    /// value rows are skipped). `#ts` is in milliseconds, or the tables' nanoseconds.
    pub fn ingest(&mut self, batch: &RecordBatch, labels: &[String]) -> DfResult<usize> {
        let schema = batch.schema();
        let column = |name: &str| -> DfResult<Arc<dyn Array>> { Ok(batch.column(schema.index_of(name)?).clone()) };
        let columns: Vec<LabelColumn> =
            labels.iter().map(|name| LabelColumn::new(&column(name)?)).collect::<DfResult<_>>()?;
        let timestamps = column(TS)?;
        let (stamps, nanos): (&[i64], bool) = match timestamps.data_type() {
            DataType::Int64 => (timestamps.as_primitive::<Int64Type>().values(), false),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                (timestamps.as_primitive::<TimestampNanosecondType>().values(), true)
            }
            other => return Err(DataFusionError::Internal(format!("#ts is {other}"))),
        };
        let values = column(VALUE)?;
        let values = values
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| DataFusionError::Internal("#value is not Float64".into()))?;
        let rows = batch.num_rows();
        let mut taken = 0;
        let starts = run_starts(&columns, rows);
        let mut run_start = 0;
        while run_start < rows {
            // A run: rows whose label values equal the first's.
            let run_end = next_start(&starts, run_start + 1);
            let slot = self.run_series(&columns, run_start);
            let (stamps, vals) = (&stamps[run_start..run_end], &values.values()[run_start..run_end]);
            if timestamps.null_count() == 0 && values.null_count() == 0 {
                let times = if nanos { RunTimes::Nanos(stamps) } else { RunTimes::Millis(stamps) };
                self.append(slot, times, vals);
                taken += run_end - run_start;
            } else {
                let fresh = &mut self.series[slot].fresh;
                let before = fresh.len();
                for (offset, &stamp) in stamps.iter().enumerate() {
                    let row = run_start + offset;
                    if timestamps.is_valid(row) && values.is_valid(row) {
                        fresh.push((if nanos { nanos_to_ms(stamp) } else { stamp }, values.value(row)));
                    }
                }
                self.held_samples += fresh.len() - before;
                taken += fresh.len() - before;
            }
            run_start = run_end;
        }
        Ok(taken)
    }

    /// Adds a run of one series' samples. The usual run comes after everything the series
    /// holds, in order: its times go straight into the series' (converted to milliseconds
    /// on the way, when they are nanoseconds), its values are copied whole; any other run
    /// waits among the fresh samples, with what this chunk appended, for [`Self::settle`].
    fn append(&mut self, slot: usize, times: RunTimes<'_>, vals: &[f64]) {
        let (chunk, keep_stale) = (self.chunk, self.keep_stale);
        let series = &mut self.series[slot];
        let held = series.timestamps.len();
        if let Some(lookups) = &self.lookups
            && series.fresh.is_empty()
            && lookup_samples(times, series.timestamps.last().copied(), lookups, &mut self.kept_rows)
        {
            series.appending_in(chunk, held);
            // Stale markers stay: the lookup stops at one (`keep_stale` holds for it).
            series.timestamps.extend(self.kept_rows.iter().map(|&row| times.ms(row)));
            series.values.extend(self.kept_rows.iter().map(|&row| vals[row]));
            self.held_samples += self.kept_rows.len();
            return;
        }
        self.rooms.lend(series, vals.len());
        let rising = times.extend_rising(&mut series.timestamps);
        let in_order = rising && series.fresh.is_empty();
        if !in_order {
            // What this chunk appended, then the run (its times converted already), go to
            // the fresh samples in the order they came.
            let from = if series.appended_in == chunk { series.appended_from } else { held };
            series.appended_in = 0;
            let values = series.values.drain(from..).chain(vals.iter().copied());
            series.fresh.extend(series.timestamps.drain(from..).zip(values));
            self.held_samples += vals.len();
            return;
        }
        series.appending_in(chunk, held);
        // Stale markers (nearly no run has one) looked for without stopping at the first,
        // which compiles to vector compares.
        if keep_stale || !vals.iter().fold(false, |stale, &v| stale | is_stale(v)) {
            series.values.extend_from_slice(vals);
        } else {
            let mut kept = held;
            for (offset, &v) in vals.iter().enumerate() {
                if !is_stale(v) {
                    series.timestamps[kept] = series.timestamps[held + offset];
                    series.values.push(v);
                    kept += 1;
                }
            }
            series.timestamps.truncate(kept);
        }
        self.held_samples += series.timestamps.len() - held;
    }

    /// Notes that a run of `slot` begins after `last_run`'s: that run, of another series and
    /// of this scan, has ended, and values evaluated early for `slot` no longer hold.
    fn open(&mut self, slot: usize) {
        match self.last_run.replace(slot) {
            Some(previous) if self.run_open && previous != slot => self.ended.push(previous),
            _ => {}
        }
        self.run_open = true;
        if let Some(early) = self.series[slot].early.take() {
            self.reopened.push((slot, early));
        }
    }

    /// The series whose run ended since the last call (see [`EarlyValues`]), to be given
    /// back with [`Self::give_back_ended`]; and the series evaluated early that have had
    /// more samples since, which says the rows do not come one run per series.
    fn take_ended(&mut self) -> (Vec<usize>, Vec<(usize, Early)>) {
        (std::mem::take(&mut self.ended), std::mem::take(&mut self.reopened))
    }

    fn give_back_ended(&mut self, mut ended: Vec<usize>) {
        ended.clear();
        self.ended = ended;
    }

    fn row_hash(&self, columns: &[LabelColumn], row: usize) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        for column in columns {
            column.value(row).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The series of the run starting at `row`, its run opened (see [`Self::open`]): first
    /// the one whose run followed the last run's series the time before (segments keep their
    /// series in one order, so a chunk's runs come as the chunk before's did), then by the
    /// hash of its label values.
    fn run_series(&mut self, columns: &[LabelColumn], row: usize) -> usize {
        let guess = self.last_run.and_then(|last| self.series[last].next_run);
        let slot = match guess {
            Some(guess) if self.carries(guess, columns, row) => guess,
            _ => {
                let slot = self.slot(columns, row);
                if let Some(last) = self.last_run {
                    self.series[last].next_run = Some(slot);
                }
                slot
            }
        };
        self.open(slot);
        slot
    }

    /// Whether the series at `slot` has the label values of `row`.
    fn carries(&self, slot: usize, columns: &[LabelColumn], row: usize) -> bool {
        let mut packed = &self.packed_labels[self.series[slot].packed.clone()];
        columns.iter().all(|column| {
            let value = column.value(row);
            let length = value.map_or(1, |v| 9 + v.len());
            match packed.split_at_checked(length) {
                Some((this, rest)) if unpacked_is(this, value) => {
                    packed = rest;
                    true
                }
                _ => false,
            }
        })
    }

    fn slot(&mut self, columns: &[LabelColumn], row: usize) -> usize {
        let hash = self.row_hash(columns, row);
        let mut candidate = self.index.get(&hash).copied();
        while let Some(slot) = candidate {
            if self.carries(slot, columns, row) {
                return slot;
            }
            candidate = self.series[slot].same_hash;
        }
        let labels: Vec<Option<String>> =
            columns.iter().map(|c| c.value(row).map(str::to_string)).chain(self.constants.iter().cloned()).collect();
        let packed_from = self.packed_labels.len();
        for column in columns {
            pack_value(&mut self.packed_labels, column.value(row));
        }
        let packed = packed_from..self.packed_labels.len();
        self.label_bytes +=
            labels.iter().map(|v| v.as_ref().map_or(0, String::len) + 24).sum::<usize>() + 64 + packed.len();
        let slot = self.series.len();
        let same_hash = self.index.insert(hash, slot);
        self.series.push(SeriesSamples { labels, same_hash, packed, ..Default::default() });
        slot
    }

    /// Ends a chunk: moves each series' fresh samples behind its kept ones, time-ordered,
    /// the last of equal timestamps winning, stale markers dropped unless kept.
    pub fn settle(&mut self) {
        let keep_stale = self.keep_stale;
        self.chunk += 1;
        self.begin_read();
        self.reopened.clear();
        for series in &mut self.series {
            if series.fresh.is_empty() {
                continue;
            }
            let mut fresh = std::mem::take(&mut series.fresh);
            let arrived = fresh.len();
            if fresh.windows(2).any(|w| w[0].0 >= w[1].0) {
                fresh.sort_by_key(|s| s.0); // stable: arrival order among equal timestamps
                fresh.reverse();
                fresh.dedup_by_key(|s| s.0); // keeps the first of a run: the last to arrive
                fresh.reverse();
            }
            // Chunks are disjoint in time, but a subquery's single chunk may repeat a kept
            // timestamp: a later sample replaces it.
            if let (Some(&last), Some(first)) = (series.timestamps.last(), fresh.first())
                && first.0 <= last
            {
                let cut = series.timestamps.partition_point(|&t| t < first.0);
                self.held_samples -= series.timestamps.len() - cut;
                series.timestamps.truncate(cut);
                series.values.truncate(cut);
            }
            let before = series.timestamps.len();
            for (t, v) in &fresh {
                if keep_stale || !is_stale(*v) {
                    series.timestamps.push(*t);
                    series.values.push(*v);
                }
            }
            // Fresh samples were counted as held; duplicates and stale markers dropped here.
            self.held_samples -= arrived - (series.timestamps.len() - before);
        }
    }

    /// Drops `slot`'s first `cut` samples (see [`SeriesSamples::drop_front`]).
    fn drop_front(&mut self, slot: usize, cut: usize) {
        self.series[slot].drop_front(cut);
        self.held_samples -= cut;
    }

    /// Drops `slot`'s first `cut` samples, giving its vectors back as room for the runs
    /// after it where they hold much more than the samples left (see [`Rooms::give_back`]).
    fn drop_front_giving_room(&mut self, slot: usize, cut: usize) {
        let series = &mut self.series[slot];
        if !self.rooms.give_back(series, cut) {
            return self.drop_front(slot, cut);
        }
        series.appended_from = series.appended_from.saturating_sub(cut);
        self.held_samples -= cut;
    }

    /// Drops samples before `from` (all of them when `None`), keeping each series' label set.
    fn trim(&mut self, from: Option<i64>) {
        let mut spare = 0;
        for series in &mut self.series {
            // Values evaluated early were the chunk's, now visited; their cut is `from`'s.
            let cut = match series.early.take() {
                Some(early) => early.cut,
                None => from.map_or(series.timestamps.len(), |from| series.timestamps.partition_point(|&t| t < from)),
            };
            series.drop_front(cut);
            self.held_samples -= cut;
            spare += (series.timestamps.capacity() - series.timestamps.len()) * 8
                + (series.values.capacity() - series.values.len()) * 8;
        }
        self.spare_bytes = spare;
    }

    /// Memory held, roughly: samples at 16 bytes (two vectors with headroom), the room kept
    /// since the last trim and the rooms for runs, plus labels.
    fn held_bytes(&self) -> usize {
        self.held_samples * 16 * 2
            + self.spare_bytes
            + self.rooms.bytes
            + self.label_bytes
            + self.series.len() * std::mem::size_of::<SeriesSamples>()
    }
}

/// Appends a label value to packed label values: a null as one 0 byte, a value as a 1, its
/// length (8 bytes) and its bytes, so no two sequences of values pack alike.
fn pack_value(packed: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => packed.push(0),
        Some(value) => {
            packed.push(1);
            packed.extend_from_slice(&(value.len() as u64).to_le_bytes());
            packed.extend_from_slice(value.as_bytes());
        }
    }
}

/// Whether `packed` is exactly `value` as [`pack_value`] packs it.
fn unpacked_is(packed: &[u8], value: Option<&str>) -> bool {
    match (packed.split_first(), value) {
        (Some((0, rest)), None) => rest.is_empty(),
        (Some((1, rest)), Some(value)) => rest
            .split_at_checked(8)
            .is_some_and(|(length, bytes)| length == (value.len() as u64).to_le_bytes() && bytes == value.as_bytes()),
        _ => false,
    }
}

/// Samples a series' vectors keep room for between chunks, whatever they hold (16 KiB).
const KEPT_CAPACITY: usize = 1024;

/// Fewest samples' room a series gives back to the set's rooms for the runs after it (see
/// [`Rooms::give_back`]): below it, moving the samples left costs more than the room saves.
const MIN_ROOM: usize = 64;

/// Which rows start a run of one series (row 0 does): a row whose label values differ from
/// the row before's. Dictionary keys are compared column by column in one tight loop (equal
/// keys are equal values; a value repeated under two keys only splits a run in two, which
/// find the same series).
fn run_starts(columns: &[LabelColumn], rows: usize) -> Vec<bool> {
    let mut starts = vec![false; rows];
    let Some(first) = starts.first_mut() else { return starts };
    *first = true;
    // Columns may share one array of keys (a scan labelled by the series index): it is
    // compared once.
    let mut compared: Vec<&[i32]> = Vec::new();
    for column in columns {
        match column {
            LabelColumn::Dictionary { keys, .. } if keys.null_count() == 0 => {
                let keys: &[i32] = keys.values();
                if compared.iter().any(|seen| std::ptr::eq(*seen, keys)) {
                    continue;
                }
                compared.push(keys);
                for (start, pair) in starts[1..].iter_mut().zip(keys.windows(2)) {
                    *start |= pair[0] != pair[1];
                }
            }
            _ => {
                for (row, start) in starts.iter_mut().enumerate().skip(1) {
                    *start |= !column.same_value(row - 1, row);
                }
            }
        }
    }
    starts
}

/// The first row at or after `from` that starts a run (`starts.len()` when none does),
/// sought eight flags at a time: a run is a series' samples of a chunk, a hundred rows or so.
fn next_start(starts: &[bool], from: usize) -> usize {
    let rest = starts.get(from..).unwrap_or_default();
    let mut words = rest.chunks_exact(8);
    let mut at = from;
    for word in &mut words {
        if word.iter().fold(false, |any, &start| any | start) {
            return at + word.iter().take_while(|&&start| !start).count();
        }
        at += 8;
    }
    words.remainder().iter().position(|&start| start).map_or(starts.len(), |offset| at + offset)
}

/// A run's times as its rows carry them.
#[derive(Clone, Copy)]
enum RunTimes<'a> {
    Millis(&'a [i64]),
    /// Nanoseconds (the tables' timestamps), to be converted with [`nanos_to_ms`].
    Nanos(&'a [i64]),
}

impl RunTimes<'_> {
    /// The time of `row`, in milliseconds.
    fn ms(&self, row: usize) -> i64 {
        match self {
            RunTimes::Millis(times) => times[row],
            RunTimes::Nanos(times) => nanos_to_ms(times[row]),
        }
    }

    /// Appends the times to `held` in milliseconds; whether they rise, each after the one
    /// before it (and the first after what `held` ended with). Converted and checked in one
    /// pass, into the series' own times: through a buffer of the run's, they were copied
    /// once more.
    fn extend_rising(self, held: &mut Vec<i64>) -> bool {
        let mut previous = held.last().copied().unwrap_or(i64::MIN);
        match self {
            RunTimes::Millis(times) => {
                let rising = times.first().is_none_or(|&first| first > previous)
                    && times.iter().zip(times.iter().skip(1)).fold(true, |rising, (a, b)| rising & (a < b));
                held.extend_from_slice(times);
                rising
            }
            RunTimes::Nanos(times) => {
                let mut rising = true;
                held.extend(times.iter().map(|&t| {
                    let ms = nanos_to_ms(t);
                    rising &= ms > previous;
                    previous = ms;
                    ms
                }));
                rising
            }
        }
    }
}

/// The rows of a run an instant lookup at `lookups` (ms, ascending) can take, into `kept`:
/// for each lookup within the run, the last sample at or before it; and the run's last
/// sample, which lookups after the run take unless a later run holds a sample before them.
/// No lookup takes any other sample, whatever comes before or after the run (of samples in
/// one millisecond, the later, as [`SeriesSet::settle`] keeps). `false` (and the run taken
/// whole, as any other) unless its times rise, after `after` (the series' last time held,
/// ms), and are not before 1970 (where a nanosecond's millisecond is not its floor).
fn lookup_samples(times: RunTimes<'_>, after: Option<i64>, lookups: &[i64], kept: &mut Vec<usize>) -> bool {
    kept.clear();
    let (raw, unit) = match times {
        RunTimes::Millis(times) => (times, 1),
        RunTimes::Nanos(times) => (times, 1_000_000),
    };
    let Some(&first) = raw.first() else { return false };
    let first_ms = times.ms(0);
    if first < 0 || after.is_some_and(|after| first_ms <= after) {
        return false;
    }
    // The times a lookup's samples come before: (lookup + 1) ms, in the run's unit.
    let bound = |lookup: i64| lookup.saturating_add(1).saturating_mul(unit);
    let mut next = lookups.partition_point(|&lookup| lookup < first_ms);
    let mut before = lookups.get(next).map_or(i64::MAX, |&lookup| bound(lookup));
    // One pass, in order: a search per lookup waited on a load at each probe (a run of two
    // hours holds a dozen lookups of a 7 d panel and 120 samples).
    let mut rises = true;
    for row in 1..raw.len() {
        rises &= raw[row - 1] < raw[row];
        if raw[row] >= before {
            kept.push(row - 1);
            while before <= raw[row] {
                next += 1;
                let Some(&lookup) = lookups.get(next) else {
                    before = i64::MAX;
                    break;
                };
                before = bound(lookup);
            }
        }
    }
    kept.push(raw.len() - 1);
    rises
}

/// A label column of a batch: plain strings, or dictionary keys into its values (how the
/// tables store labels: a run of one series is then a run of equal keys).
enum LabelColumn {
    Plain(StringArray),
    Dictionary { keys: Int32Array, values: StringArray },
}

impl LabelColumn {
    fn new(array: &Arc<dyn Array>) -> DfResult<LabelColumn> {
        if let Some(dictionary) = array.as_dictionary_opt::<Int32Type>()
            && let Some(values) = dictionary.values().as_string_opt::<i32>()
        {
            return Ok(LabelColumn::Dictionary { keys: dictionary.keys().clone(), values: values.clone() });
        }
        let plain = if array.data_type() == &DataType::Utf8 {
            array.clone()
        } else {
            datafusion::arrow::compute::cast(array, &DataType::Utf8)?
        };
        Ok(LabelColumn::Plain(plain.as_string::<i32>().clone()))
    }

    fn value(&self, row: usize) -> Option<&str> {
        match self {
            LabelColumn::Plain(strings) => (!strings.is_null(row)).then(|| strings.value(row)),
            LabelColumn::Dictionary { keys, values } => {
                if keys.is_null(row) {
                    return None;
                }
                let key = usize::try_from(keys.value(row)).ok()?;
                (key < values.len() && !values.is_null(key)).then(|| values.value(key))
            }
        }
    }

    fn same_value(&self, a: usize, b: usize) -> bool {
        if let LabelColumn::Dictionary { keys, .. } = self
            && keys.is_valid(a)
            && keys.is_valid(b)
            && keys.value(a) == keys.value(b)
        {
            return true;
        }
        self.value(a) == self.value(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(function: RangeFunction, steps: Steps, range_ms: i64) -> SweepSpec {
        SweepSpec {
            function,
            steps,
            range_ms,
            offset_ms: 0,
            at_ms: None,
            params: [0.0; 2],
            budget: SampleBudget::new(1_000),
            fold: None,
            workers: 1,
        }
    }

    fn rows(samples: &[(&str, i64, f64)]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("job", DataType::Utf8, true),
            Field::new(TS, DataType::Int64, true),
            Field::new(VALUE, DataType::Float64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(samples.iter().map(|s| s.0).collect::<Vec<_>>())),
                Arc::new(datafusion::arrow::array::Int64Array::from(samples.iter().map(|s| s.1).collect::<Vec<_>>())),
                Arc::new(datafusion::arrow::array::Float64Array::from(samples.iter().map(|s| s.2).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    /// Rows of (job, time, value) with times in nanoseconds, as the tables keep them.
    fn nanosecond_rows(jobs: Vec<&str>, times: Vec<Option<i64>>, values: Vec<f64>) -> RecordBatch {
        use datafusion::arrow::array::{Float64Array, TimestampNanosecondArray};
        let schema = Schema::new(vec![
            Field::new("job", DataType::Utf8, true),
            Field::new(TS, DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())), true),
            Field::new(VALUE, DataType::Float64, true),
        ]);
        let times = TimestampNanosecondArray::from(times).with_timezone("UTC");
        let columns: Vec<Arc<dyn Array>> =
            vec![Arc::new(StringArray::from(jobs)), Arc::new(times), Arc::new(Float64Array::from(values))];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    #[test]
    fn the_instant_lookup_picks_the_latest_sample_and_stops_at_stale_markers() {
        let spec = spec(RangeFunction::Instant, Steps { start: 10, end: 40, step: 10 }, 15);
        let stale = f64::from_bits(kernels::STALE_NAN_BITS);
        let mut set = SeriesSet::new(true);
        // Out of order on purpose; t=30 is a stale marker.
        set.ingest(&rows(&[("a", 20, 2.0), ("a", 5, 1.0), ("a", 30, stale)]), &["job".to_string()]).unwrap();
        set.settle();
        let series = &set.series[0];
        let points: Vec<(i64, f64)> = spec
            .steps
            .iter()
            .filter_map(|step| {
                evaluate_step(&spec, &series.timestamps, &series.values, step, &mut StepCursor::default())
                    .map(|v| (step, v))
            })
            .collect();
        // t=10 sees 5 (within 15 ms); t=20 sees 20; t=30 is stale; t=40's lookback reaches 30: stale.
        assert_eq!(points, vec![(10, 1.0), (20, 2.0)]);
    }

    #[test]
    fn the_instant_lookup_finds_what_a_scan_of_its_window_finds() {
        // Irregular samples with gaps and stale markers, looked up at steps closer and wider
        // than their spacing, against the latest sample a plain scan finds.
        let stale = f64::from_bits(kernels::STALE_NAN_BITS);
        let mut timestamps = Vec::new();
        let mut t = 0;
        for n in 0..400i64 {
            t += [3, 7, 1, 40, 11][n as usize % 5];
            timestamps.push(t);
        }
        let values: Vec<f64> = (0..400).map(|n| if n % 13 == 5 { stale } else { n as f64 }).collect();
        for (step, lookback) in [(2, 10), (5, 10), (17, 10), (50, 30), (9, 1)] {
            for function in [RangeFunction::Instant, RangeFunction::InstantTimestamp] {
                let spec = spec(function, Steps { start: -20, end: t + 40, step }, lookback);
                let mut cursor = StepCursor::default();
                for eval in spec.steps.iter() {
                    let latest =
                        timestamps.iter().rposition(|&at| at <= eval).filter(|&i| timestamps[i] >= eval - lookback);
                    let expected = latest.filter(|&i| !is_stale(values[i])).map(|i| match function {
                        RangeFunction::Instant => values[i],
                        _ => timestamps[i] as f64 / 1000.0,
                    });
                    let found = evaluate_step(&spec, &timestamps, &values, eval, &mut cursor);
                    assert_eq!(found, expected, "step {step}, lookback {lookback}, at {eval}");
                }
            }
        }
    }

    #[test]
    fn series_whose_label_values_hash_alike_stay_apart() {
        let job = ["job".to_string()];
        let mut set = SeriesSet::new(false);
        set.ingest(&rows(&[("a", 1, 1.0)]), &job).unwrap();
        let hash_of = |set: &SeriesSet, name: &str| {
            let batch = rows(&[(name, 0, 0.0)]);
            set.row_hash(&[LabelColumn::new(batch.column(0)).unwrap()], 0)
        };
        // "b" collides with "a": its hash names a's series first.
        let (hash_a, hash_b) = (hash_of(&set, "a"), hash_of(&set, "b"));
        set.index.insert(hash_b, 0);
        set.ingest(&rows(&[("b", 2, 2.0)]), &job).unwrap();
        // And "a"'s hash now names b's series, which chains to a's.
        set.index.insert(hash_a, 1);
        set.ingest(&rows(&[("a", 3, 3.0), ("b", 4, 4.0), ("a", 5, 5.0)]), &job).unwrap();
        set.settle();
        let held: Vec<(Option<&str>, &[i64])> =
            set.series.iter().map(|s| (s.labels[0].as_deref(), s.timestamps.as_slice())).collect();
        assert_eq!(held, vec![(Some("a"), &[1, 3, 5][..]), (Some("b"), &[2, 4][..])]);
    }

    #[test]
    fn a_window_bound_sought_near_a_guess_is_where_a_search_finds_it() {
        // Steady, irregular and repeated times; every start and every guess, right or wrong.
        for timestamps in [vec![10, 20, 30, 40, 50, 60], vec![1, 2, 9, 9, 9, 30, 31, 70], vec![5], vec![]] {
            let end = timestamps.last().copied().unwrap_or(0) + 2;
            for bound in -1..=end {
                let before = |t: i64| t < bound;
                let expected = timestamps.partition_point(|&t| before(t));
                for from in 0..=expected {
                    for guess in 0..=timestamps.len() + 3 {
                        assert_eq!(seek_near(&timestamps, from, guess, before), expected, "{timestamps:?} < {bound}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_next_run_is_found_within_and_across_words_of_flags() {
        for rows in [0, 1, 7, 8, 9, 16, 17, 40] {
            for pattern in [0u64, 1, 0b1001_0000_0001, 1 << 8, 1 << 15, 1 << 16, (1 << 39) | (1 << 7), u64::MAX] {
                let starts: Vec<bool> = (0..rows).map(|row| pattern >> row & 1 == 1).collect();
                for from in 0..=rows {
                    let naive = starts[from..].iter().position(|&start| start).map_or(rows, |at| from + at);
                    assert_eq!(next_start(&starts, from), naive, "{rows} rows, {pattern:b}, from {from}");
                }
            }
        }
    }

    #[test]
    fn runs_of_every_length_land_in_their_series_in_time_order() {
        // Runs of 1 to 19 rows of four series, each run later than the series' last but one
        // that falls within itself, one that starts before the series' last sample, and one
        // with a stale marker, which a range sweep drops.
        let stale = f64::from_bits(kernels::STALE_NAN_BITS);
        let names = ["j0", "j1", "j2", "j3"];
        let mut samples: Vec<(&str, i64, f64)> = Vec::new();
        let mut expected: std::collections::BTreeMap<&str, Vec<(i64, f64)>> = Default::default();
        for (run, rows) in [1i64, 7, 8, 9, 16, 17, 3, 19, 1, 8].into_iter().enumerate() {
            let job = names[run % 4];
            let base = if run == 8 { 5 } else { run as i64 * 100 };
            for row in 0..rows {
                let time = if run == 6 { base + rows - 1 - row } else { base + row };
                let value = if run == 3 && row == 4 { stale } else { time as f64 };
                samples.push((job, time, value));
                if !is_stale(value) {
                    expected.entry(job).or_default().push((time, value));
                }
            }
        }
        let mut set = SeriesSet::new(false);
        let taken = set.ingest(&rows(&samples), &["job".to_string()]).unwrap();
        assert_eq!(taken, samples.len());
        set.settle();
        for series in &set.series {
            let job = series.labels[0].as_deref().unwrap();
            let mut want = expected[job].clone();
            want.sort_by_key(|sample| sample.0);
            let got: Vec<(i64, f64)> = series.timestamps.iter().copied().zip(series.values.iter().copied()).collect();
            assert_eq!(got, want, "{job}");
        }
        assert_eq!(set.series.len(), 4);
    }

    #[test]
    fn a_series_keeps_the_room_a_chunk_used_and_counts_it_as_held() {
        let job = ["job".to_string()];
        let samples =
            |count: i64, from: i64| rows(&(from..from + count).map(|t| ("a", t, t as f64)).collect::<Vec<_>>());
        let spare = |set: &SeriesSet| {
            set.series.iter().map(|s| (s.timestamps.capacity() + s.values.capacity()) * 8).sum::<usize>()
                - set.held_samples * 16
        };
        // A chunk of 200 samples, then the window's last 5 kept: the room stays, and counts.
        let mut set = SeriesSet::new(false);
        set.ingest(&samples(200, 0), &job).unwrap();
        set.settle();
        set.trim(Some(195));
        let series = &set.series[0];
        assert_eq!(series.timestamps.len(), 5);
        assert!(series.timestamps.capacity() >= 200 && series.values.capacity() >= 200);
        assert!(set.spare_bytes > 0 && set.spare_bytes == spare(&set));
        assert!(set.held_bytes() >= set.held_samples * 32 + set.spare_bytes);
        // The next chunk's samples fit that room: no reallocation moves them.
        let before = set.series[0].timestamps.as_ptr();
        set.ingest(&samples(190, 200), &job).unwrap();
        assert_eq!(set.series[0].timestamps.as_ptr(), before);
        assert_eq!(set.series[0].timestamps.len(), 195);
        // A large room left mostly empty is given back.
        let mut set = SeriesSet::new(false);
        set.ingest(&samples(10_000, 0), &job).unwrap();
        set.settle();
        set.trim(Some(9_995));
        assert_eq!(set.series[0].timestamps.len(), 5);
        assert!(set.series[0].timestamps.capacity() < KEPT_CAPACITY, "{}", set.series[0].timestamps.capacity());
        assert_eq!(set.spare_bytes, spare(&set));
    }

    #[test]
    fn runs_evaluated_early_hand_their_room_to_the_next_series() {
        let job = ["job".to_string()];
        // Runs of `count` samples from `from` of each of `jobs`, one after another in a batch.
        let runs = |jobs: &[&'static str], count: i64, from: i64| {
            let rows_of = |job| (from..from + count).map(move |t| (job, t, t as f64));
            rows(&jobs.iter().flat_map(|&job| rows_of(job)).collect::<Vec<_>>())
        };
        let mut set = SeriesSet::new(false);
        // A batch's three runs are taken before any is evaluated: each grows its own vectors.
        set.ingest(&runs(&["a", "b", "c"], 500, 0), &job).unwrap();
        let large: Vec<_> = set.series.iter().map(|s| s.timestamps.as_ptr()).collect();
        // Evaluated and dropped but for their window's last 5 samples: these move to small
        // vectors, the large ones are kept as room, and count as held.
        for slot in 0..3 {
            set.drop_front_giving_room(slot, 495);
        }
        for series in &set.series {
            assert_eq!(series.timestamps, (495..500).collect::<Vec<_>>());
            assert_eq!(series.values, (495..500).map(|t| t as f64).collect::<Vec<_>>());
            assert!(series.timestamps.capacity() < MIN_ROOM && series.values.capacity() < MIN_ROOM);
        }
        assert_eq!(set.held_samples, 15);
        assert!(set.held_bytes() >= 3 * 500 * 16, "the rooms count: {}", set.held_bytes());
        // The next batch's runs go into those rooms, after the samples left: no vector grows.
        set.ingest(&runs(&["a", "b", "c"], 480, 500), &job).unwrap();
        for series in &set.series {
            assert!(large.contains(&series.timestamps.as_ptr()));
            assert_eq!(series.timestamps, (495..980).collect::<Vec<_>>());
            assert_eq!(series.values, (495..980).map(|t| t as f64).collect::<Vec<_>>());
        }
        let small: Vec<_> = set.rooms.small.iter().map(|pair| pair.0.as_ptr()).collect();
        assert_eq!((set.rooms.large.len(), small.len()), (0, 3));
        // And back, into the small vectors the rooms were lent for.
        for slot in 0..3 {
            set.drop_front_giving_room(slot, 482);
        }
        for series in &set.series {
            assert!(small.contains(&series.timestamps.as_ptr()));
            assert_eq!(series.timestamps, vec![977, 978, 979]);
        }
        assert_eq!(set.held_samples, 9);
        // A run that fits its series' own vectors stays there; one that does not moves.
        let own = set.series[0].timestamps.as_ptr();
        set.ingest(&runs(&["a"], 1, 980), &job).unwrap();
        assert_eq!(set.series[0].timestamps.as_ptr(), own);
        set.ingest(&runs(&["a"], 100, 981), &job).unwrap();
        assert!(large.contains(&set.series[0].timestamps.as_ptr()));
        assert_eq!(set.series[0].timestamps, (977..1081).collect::<Vec<_>>());
        // A run too small to give its room back keeps its vectors.
        let mut set = SeriesSet::new(false);
        set.ingest(&runs(&["a"], 40, 0), &job).unwrap();
        let own = set.series[0].timestamps.as_ptr();
        set.drop_front_giving_room(0, 35);
        assert_eq!(set.series[0].timestamps.as_ptr(), own);
        assert_eq!(set.series[0].timestamps, (35..40).collect::<Vec<_>>());
        assert_eq!(set.held_samples, 5);
    }

    #[test]
    fn the_last_of_equal_timestamps_wins_and_runs_find_their_series() {
        let mut set = SeriesSet::new(false);
        let labels = ["job".to_string()];
        set.ingest(&rows(&[("a", 10, 1.0), ("b", 10, 5.0), ("a", 20, 2.0), ("a", 10, 3.0)]), &labels).unwrap();
        set.settle();
        assert_eq!(set.series.len(), 2);
        assert_eq!((set.series[0].timestamps.clone(), set.series[0].values.clone()), (vec![10, 20], vec![3.0, 2.0]));
        assert_eq!(set.series[1].values, vec![5.0]);
        assert_eq!(set.ingest(&rows(&[]), &labels).unwrap(), 0, "an empty batch");
        assert_eq!(set.held_samples, 3);
        set.trim(Some(15));
        assert_eq!(set.series[0].timestamps, vec![20]);
        assert_eq!(set.held_samples, 1);
    }

    /// Instant lookups over runs thinned to the samples they take (see [`lookup_samples`])
    /// find what they find over every sample: runs in nanoseconds and in milliseconds, split
    /// across batches, with stale markers, gaps, a piece that comes out of order (taken
    /// whole) and two samples in one millisecond (the later taken); steps shorter and longer than
    /// the spacing, the lookback shorter than it too. At steps of 10 min, fewer than a third
    /// of the samples are held (each piece keeps its last; the pieces taken whole keep all).
    #[test]
    fn an_instant_lookup_finds_in_the_samples_kept_what_it_finds_in_all() {
        let stale = f64::from_bits(kernels::STALE_NAN_BITS);
        let ns_batch = |rows: &[(&str, i64, f64)]| {
            nanosecond_rows(
                rows.iter().map(|r| r.0).collect(),
                rows.iter().map(|r| Some(r.1)).collect(),
                rows.iter().map(|r| r.2).collect(),
            )
        };
        const MINUTE: i64 = 60_000;
        let mut ns_rows: Vec<(&str, i64, f64)> = Vec::new();
        let mut ms_rows: Vec<(&str, i64, f64)> = Vec::new();
        for i in 0..600i64 {
            // a: every minute, a stale marker now and then, a gap of an hour.
            if !(200..260).contains(&i) {
                ns_rows.push(("a", (i * MINUTE + 7) * 1_000_000 + 123, if i % 97 == 5 { stale } else { i as f64 }));
            }
            // b: irregular; at 300 two samples in one millisecond.
            let t = i * 45_000 + (i * 7919) % 30_000;
            ns_rows.push(("b", t * 1_000_000, -(i as f64)));
            if i == 300 {
                ns_rows.push(("b", t * 1_000_000 + 500_000, 0.5));
            }
            ms_rows.push(("c", i * 15_000, i as f64 * 0.25));
        }
        // Series by series, as a segment holds them, then a piece of a that comes late.
        ns_rows.sort_by_key(|r| (r.0, r.1));
        let late = ns_rows.iter().position(|r| r.0 == "a" && r.1 > 100 * MINUTE * 1_000_000).unwrap();
        let late_piece: Vec<_> = ns_rows.drain(late..late + 5).collect();
        let mut batches: Vec<RecordBatch> = ns_rows.chunks(97).map(ns_batch).collect();
        batches.push(ns_batch(&late_piece));
        batches.extend(ms_rows.chunks(61).map(rows));
        let labels = ["job".to_string()];
        for (step, lookback) in
            [(15_000, 300_000), (600_000, 300_000), (3_600_000, 300_000), (7_000, 10_000), (600_000, 30_000)]
        {
            for function in [RangeFunction::Instant, RangeFunction::InstantTimestamp] {
                let spec = spec(function, Steps { start: -MINUTE, end: 620 * MINUTE, step }, lookback);
                let lookups: Vec<i64> = spec.steps.iter().map(|s| spec.eval_time(s)).collect();
                let (mut all, mut kept) = (SeriesSet::new(true), SeriesSet::new(true).with_lookups(lookups.into()));
                for batch in &batches {
                    assert_eq!(all.ingest(batch, &labels).unwrap(), kept.ingest(batch, &labels).unwrap());
                }
                all.settle();
                kept.settle();
                for (every, some) in all.series.iter().zip(&kept.series) {
                    assert_eq!(every.labels, some.labels);
                    let (mut every_cursor, mut some_cursor) = (StepCursor::default(), StepCursor::default());
                    for at in spec.steps.iter() {
                        let expected = evaluate_step(&spec, &every.timestamps, &every.values, at, &mut every_cursor);
                        let found = evaluate_step(&spec, &some.timestamps, &some.values, at, &mut some_cursor);
                        assert_eq!(
                            found.map(f64::to_bits),
                            expected.map(f64::to_bits),
                            "{:?} at {at}, step {step}",
                            every.labels
                        );
                    }
                }
                if step == 600_000 {
                    assert!(kept.held_samples * 3 < all.held_samples, "{} of {}", kept.held_samples, all.held_samples);
                }
            }
        }
    }

    #[test]
    fn nanosecond_times_are_read_as_milliseconds_and_constants_label_every_series() {
        // Times as the tables keep them: nanoseconds, two of series a in one millisecond
        // (a duplicate once converted: the later wins), one time missing.
        let batch = nanosecond_rows;
        let labels = ["job".to_string()];
        let mut set = SeriesSet::new(false).with_constants(vec![Some("up".to_string())]);
        let first = batch(
            vec!["a", "a", "a", "b"],
            vec![Some(5_000_000), Some(10_000_000), Some(10_900_000), Some(7_000_000)],
            vec![1.0, 2.0, 3.0, 4.0],
        );
        assert_eq!(set.ingest(&first, &labels).unwrap(), 4);
        let second = batch(vec!["b", "b", "a"], vec![Some(9_999_999), None, Some(20_000_001)], vec![5.0, 6.0, 7.0]);
        assert_eq!(set.ingest(&second, &labels).unwrap(), 2, "the row without a time is skipped");
        set.settle();
        let series: Vec<(Vec<Option<&str>>, Vec<i64>, Vec<f64>)> = set
            .series
            .iter()
            .map(|s| (s.labels.iter().map(Option::as_deref).collect(), s.timestamps.clone(), s.values.clone()))
            .collect();
        assert_eq!(
            series,
            vec![
                (vec![Some("a"), Some("up")], vec![5, 10, 20], vec![1.0, 3.0, 7.0]),
                (vec![Some("b"), Some("up")], vec![7, 9], vec![4.0, 5.0]),
            ]
        );
    }

    #[test]
    fn a_run_goes_to_the_series_its_labels_name_whatever_order_came_before() {
        // Runs of two label columns, the order changing between chunks: a series guessed from
        // the order before must have the run's labels, which may differ only in how the same
        // bytes split between the columns, or in a missing label against an empty one.
        let batch = |rows: &[(Option<&str>, Option<&str>, i64)]| {
            let schema = Schema::new(vec![
                Field::new("job", DataType::Utf8, true),
                Field::new("instance", DataType::Utf8, true),
                Field::new(TS, DataType::Int64, true),
                Field::new(VALUE, DataType::Float64, true),
            ]);
            RecordBatch::try_new(
                Arc::new(schema),
                vec![
                    Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                    Arc::new(datafusion::arrow::array::Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                    Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.0; rows.len()])),
                ],
            )
            .unwrap()
        };
        let chunks = [
            vec![
                (Some("ab"), Some("c"), 1),
                (Some("a"), Some("bc"), 1),
                (None, Some("x"), 1),
                (Some(""), Some("x"), 1),
            ],
            // The same order: every guess right.
            vec![
                (Some("ab"), Some("c"), 2),
                (Some("a"), Some("bc"), 2),
                (None, Some("x"), 2),
                (Some(""), Some("x"), 2),
            ],
            // Another order, a series missing and a new one: guesses wrong.
            vec![
                (Some("a"), Some("bc"), 3),
                (Some(""), Some("x"), 3),
                (Some("ab"), Some("c"), 3),
                (Some("a"), None, 3),
            ],
            vec![
                (Some("ab"), Some("c"), 4),
                (None, Some("x"), 4),
                (Some("a"), Some("bc"), 4),
                (Some(""), Some("x"), 4),
            ],
        ];
        let mut set = SeriesSet::new(false);
        for rows in &chunks {
            set.ingest(&batch(rows), &["job".to_string(), "instance".to_string()]).unwrap();
            set.settle();
        }
        let series: Vec<(Option<&str>, Option<&str>, &[i64])> = set
            .series
            .iter()
            .map(|s| (s.labels[0].as_deref(), s.labels[1].as_deref(), s.timestamps.as_slice()))
            .collect();
        let expected: [(Option<&str>, Option<&str>, &[i64]); 5] = [
            (Some("ab"), Some("c"), &[1, 2, 3, 4]),
            (Some("a"), Some("bc"), &[1, 2, 3, 4]),
            (None, Some("x"), &[1, 2, 4]),
            (Some(""), Some("x"), &[1, 2, 3, 4]),
            (Some("a"), None, &[3]),
        ];
        assert_eq!(series, expected);
    }

    #[test]
    fn dictionary_labels_find_the_same_series_as_plain_ones() {
        use datafusion::arrow::array::DictionaryArray;
        // Keys 0 and 2 name the same value: one series; a null key is the label missing.
        let jobs: DictionaryArray<Int32Type> = DictionaryArray::try_new(
            Int32Array::from(vec![Some(0), Some(0), Some(2), Some(1), None]),
            Arc::new(StringArray::from(vec!["api", "web", "api"])),
        )
        .unwrap();
        let schema = Schema::new(vec![
            Field::new("job", jobs.data_type().clone(), true),
            Field::new(TS, DataType::Int64, true),
            Field::new(VALUE, DataType::Float64, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(jobs),
                Arc::new(datafusion::arrow::array::Int64Array::from(vec![1, 2, 3, 1, 1])),
                Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0])),
            ],
        )
        .unwrap();
        let mut set = SeriesSet::new(false);
        assert_eq!(set.ingest(&batch, &["job".to_string()]).unwrap(), 5);
        set.settle();
        let series: Vec<(Option<&str>, Vec<f64>)> =
            set.series.iter().map(|s| (s.labels[0].as_deref(), s.values.clone())).collect();
        assert_eq!(series, vec![(Some("api"), vec![1.0, 2.0, 3.0]), (Some("web"), vec![4.0]), (None, vec![5.0])]);
    }

    #[test]
    fn series_evaluated_on_several_threads_are_visited_as_on_one() {
        // 12,000 series over 100 steps: 149 parts of 81 series (the last of 12), taken in
        // turn by three threads (two of them the pool's, which has fewer threads on a small
        // machine), buffers handed out again once visited (a buffer's points from an earlier
        // part must not be visited again).
        let steps = Steps { start: 0, end: 99_000, step: 1_000 };
        let spec = spec(RangeFunction::Rate, steps, 5_000);
        let steps: Vec<i64> = steps.iter().collect();
        let series: Vec<SeriesSamples> = (0..12_000i64)
            .map(|n| {
                // Every 7th series holds nothing; the others start at different times, with
                // a counter reset now and then.
                let first = if n % 7 == 0 { 200_000 } else { (n % 50) * 1_000 };
                let timestamps: Vec<i64> = (first..100_000).step_by(1_000 + (n % 3) as usize * 500).collect();
                let values = timestamps.iter().map(|t| ((t / 1_000 + n) % 40) as f64 * 1.5).collect();
                SeriesSamples { labels: vec![Some(n.to_string())], timestamps, values, ..Default::default() }
            })
            .collect();
        let visits = |threads: usize| {
            let mut seen = Vec::new();
            for_each_value(&spec, &series, &[], &steps, threads, |index, at, value| {
                seen.push((index, at, value.to_bits()));
                Ok(())
            })
            .unwrap();
            seen
        };
        assert_eq!(parallel_split(&spec, series.len(), steps.len(), 3), Some((81, 3)));
        let one = visits(1);
        assert!(one.len() > 400_000, "the series have values: {}", one.len());
        assert!(one.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)), "in series, then step order");
        assert_eq!(visits(2), one);
        assert_eq!(visits(3), one);
        // More threads than the pool has, and evaluations sharing it at once: its jobs never
        // wait on a caller, so none holds another's parts up.
        assert_eq!(visits(64), one);
        std::thread::scope(|scope| {
            let sharing: Vec<_> = (0..4).map(|_| scope.spawn(|| visits(16))).collect();
            for evaluation in sharing {
                assert!(evaluation.join().unwrap() == one, "an evaluation sharing the pool");
            }
        });
        // A visit's error stops the evaluation and is returned.
        let mut visited = 0;
        let stopped = for_each_value(&spec, &series, &[], &steps, 3, |_, _, _| {
            visited += 1;
            if visited == 10 { Err(DataFusionError::Execution("budget".into())) } else { Ok(()) }
        });
        assert!(stopped.is_err());
        assert_eq!(visited, 10);
        // The instant lookup, and a chunk of one part's work, stay on one thread.
        let lookup = super::tests::spec(RangeFunction::Instant, Steps { start: 0, end: 99_000, step: 1_000 }, 5_000);
        assert_eq!(parallel_split(&lookup, series.len(), steps.len(), 3), None);
        assert_eq!(parallel_split(&spec, 81, steps.len(), 3), None);
        assert_eq!(parallel_bytes(&spec, series.len(), steps.len(), 3), 3 * PARTS_PER_THREAD * 81 * 100 * 16);
        // Many workers take only the threads the series fill, and reserve for those.
        assert_eq!(parallel_split(&spec, 162, steps.len(), 256), Some((81, 2)));
        assert_eq!(parallel_bytes(&spec, 162, steps.len(), 256), 2 * PARTS_PER_THREAD * 81 * 100 * 16);
    }

    #[test]
    fn a_kernel_panic_on_a_sweep_thread_is_the_callers() {
        // 1,000 series over 100 steps: parts of 81 series, the fifth (series 324-404) handed
        // to the pool. Its series 400 holds times without values, so the kernel's window
        // slice panics there.
        let steps = Steps { start: 0, end: 99_000, step: 1_000 };
        let spec = spec(RangeFunction::Rate, steps, 5_000);
        let steps: Vec<i64> = steps.iter().collect();
        let series: Vec<SeriesSamples> = (0..1_000i64)
            .map(|n| {
                let timestamps: Vec<i64> = (0..100_000).step_by(1_000).collect();
                let values = if n == 400 { Vec::new() } else { timestamps.iter().map(|&t| t as f64).collect() };
                SeriesSamples { labels: vec![Some(n.to_string())], timestamps, values, ..Default::default() }
            })
            .collect();
        assert_eq!(parallel_split(&spec, series.len(), steps.len(), 3), Some((81, 3)));
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for_each_value(&spec, &series, &[], &steps, 3, |_, _, _| Ok(()))
        }))
        .expect_err("the kernel's panic reaches the caller");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("out of range"), "the kernel's own panic, not the scope's: {message:?}");
    }

    #[test]
    fn series_evaluated_as_their_runs_end_match_an_evaluation_of_all_their_samples() {
        // 40 series over 10 chunks, every chunk's rows cut into batches at random rows. A
        // chunk comes as one run per series (evaluated early, read as one segment is: their
        // samples let go of as their runs end), as two interleaved segments
        // (series whose samples keep coming), or with runs out of time order: each series'
        // points (or each step's fold, or rows) must be those of its samples evaluated all
        // at once.
        let mut next = {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            }
        };
        let stale = f64::from_bits(kernels::STALE_NAN_BITS);
        let names: Vec<String> = (0..40).map(|n| format!("s{n:02}")).collect();
        let mut all: Vec<Vec<(i64, f64)>> = Vec::new();
        for n in 0..40u64 {
            let (mut t, mut value, mut samples) = ((n % 4) as i64 * 300, 0.0, Vec::new());
            while t < 100_000 {
                value = if next() % 50 == 0 { 0.0 } else { value + (next() % 7) as f64 };
                samples.push((t, if next() % 97 == 0 { stale } else { value }));
                t += 700 + (next() % 600) as i64;
            }
            all.push(samples);
        }
        // Where the values evaluated early go: the series' points, a fold's accumulators
        // (the instant lookup's integer values sum exactly in any order), rows.
        let cases = [
            (RangeFunction::Rate, None, true),
            (RangeFunction::Instant, None, true),
            (RangeFunction::Instant, Some(Fold::Sum), true),
            (RangeFunction::Rate, Some(Fold::Max), true),
            (RangeFunction::Rate, Some(Fold::Count), false),
            (RangeFunction::Rate, None, false),
        ];
        for (function, fold, as_series) in cases {
            let case = format!("{function:?} {fold:?} as series {as_series}");
            let steps = Steps { start: 5_000, end: 99_000, step: 2_500 };
            let mut spec = spec(function, steps, 5_000);
            spec.fold = fold;
            let output: Vec<String> = if fold.is_some() { Vec::new() } else { vec!["job".into()] };
            let lanes = Sweep::lanes(spec.clone(), Vec::new(), vec!["job".into()], Vec::new(), output).1;
            let mut run = lanes.0[0].start(&TaskContext::default(), as_series);
            run.spec.budget = SampleBudget::new(usize::MAX);
            let (mut early_chunks, mut emitted) = (0, Vec::new());
            for chunk in 0..10i64 {
                let (low, high) = (chunk * 10_000, chunk * 10_000 + 9_999);
                let mut runs: Vec<Vec<(&str, i64, f64)>> = vec![Vec::new(), Vec::new()];
                for (name, samples) in names.iter().zip(&all) {
                    for (i, &(t, v)) in samples.iter().enumerate().filter(|(_, s)| (low..=high).contains(&s.0)) {
                        // Interleaved chunks split each series between two segments.
                        let segment = if chunk % 3 == 1 { i % 2 } else { 0 };
                        runs[segment].push((name, t, v));
                    }
                }
                if chunk % 3 == 2 {
                    // Out of time order: one series' run reversed.
                    let series: Vec<usize> = (0..runs[0].len()).filter(|&i| runs[0][i].0 == "s07").collect();
                    if let (Some(&a), Some(&b)) = (series.first(), series.last()) {
                        runs[0][a..=b].reverse();
                    }
                }
                // Chunks of one run per series are read as a single segment is.
                run.begin_read(Some(high), chunk % 3 == 0);
                let mut cuts: Vec<Vec<(&str, i64, f64)>> = Vec::new();
                for segment in &runs {
                    let mut at = 0;
                    while at < segment.len() {
                        let len = 1 + (next() % 150) as usize;
                        cuts.push(segment[at..(at + len).min(segment.len())].to_vec());
                        at += len;
                    }
                }
                // Two segments' batches arrive interleaved, as from two partitions of a scan
                // (a series' run cut between batches comes back after other series').
                let (first, second): (Vec<_>, Vec<_>) =
                    cuts.into_iter().enumerate().partition(|(i, _)| chunk % 3 != 1 || i % 2 == 0);
                for (_, batch) in first.into_iter().chain(second) {
                    run.ingest(&rows(&batch)).unwrap();
                }
                let early = run.series.series.iter().filter(|s| s.early.is_some()).count();
                if chunk % 3 == 0 && early > 0 {
                    early_chunks += 1;
                    // Those evaluated early have let go of what no later step needs already.
                    let keep_from = run.early.keep_from.unwrap_or(i64::MAX);
                    for series in run.series.series.iter().filter(|s| s.early.is_some()) {
                        assert!(series.timestamps.first().is_none_or(|&t| t >= keep_from), "{case}");
                    }
                }
                // Only rows wait in the chunk's values; a fold's wait in its accumulators.
                let rows_wait = !as_series && fold.is_none();
                assert!(rows_wait || run.early.points.is_empty(), "{case}");
                assert!(!rows_wait || early == 0 || !run.early.points.is_empty(), "{case}");
                assert_eq!(run.early.folded.is_empty(), fold.is_none() || early == 0, "{case}");
                run.finish_chunk(high).unwrap();
                emitted.extend(run.out.drain(..));
                // What the trim kept is what the next steps need, whichever way it was cut.
                if let Some(keep_from) = run.keep_from(run.next_step) {
                    for series in &run.series.series {
                        let n = names.iter().position(|name| Some(name.as_str()) == series.labels[0].as_deref());
                        let samples = &all[n.unwrap_or_default()];
                        let needed = samples.iter().filter(|s| (keep_from..=high).contains(&s.0)).count();
                        let stale =
                            samples.iter().filter(|s| (keep_from..=high).contains(&s.0) && is_stale(s.1)).count();
                        assert!(n.is_some() && series.timestamps.first().is_none_or(|&t| t >= keep_from));
                        if spec.is_instant() {
                            // Thinned to the samples the lookups take (see `lookup_samples`):
                            // none more than needed; the answers below say none was missed.
                            assert!(series.timestamps.len() <= needed, "{case}");
                        } else {
                            assert_eq!(series.timestamps.len(), needed - stale);
                        }
                    }
                }
            }
            assert!(early_chunks >= 3, "{case}: series were evaluated early in {early_chunks} chunks");
            // Every series' points evaluated from all its samples at once.
            let steps: Vec<i64> = steps.iter().collect();
            let mut expected: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
            for (name, samples) in names.iter().zip(&all) {
                let kept: Vec<(i64, f64)> =
                    samples.iter().copied().filter(|s| spec.is_instant() || !is_stale(s.1)).collect();
                let whole = SeriesSamples {
                    timestamps: kept.iter().map(|s| s.0).collect(),
                    values: kept.iter().map(|s| s.1).collect(),
                    ..Default::default()
                };
                let points = step_values(&spec, &whole, &steps).map(|(at, value)| (steps[at], value)).collect();
                expected.push((name.clone(), points));
            }
            let got: Vec<(String, Vec<(i64, f64)>)> = if as_series {
                let points = run.points.take().unwrap();
                match fold {
                    Some(_) => vec![(String::new(), points[0].clone())],
                    None => run.series.series.iter().map(|s| s.labels[0].clone().unwrap()).zip(points).collect(),
                }
            } else {
                let mut by_name: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
                for batch in &emitted {
                    let values = batch.column(batch.num_columns() - 1).as_primitive::<Float64Type>();
                    let times = batch.column(batch.num_columns() - 2).as_primitive::<Int64Type>();
                    for row in 0..batch.num_rows() {
                        let name = match fold {
                            Some(_) => String::new(),
                            None => batch.column(0).as_string::<i32>().value(row).to_string(),
                        };
                        by_name.entry(name).or_default().push((times.value(row), values.value(row)));
                    }
                }
                by_name.into_iter().collect()
            };
            let expected: Vec<(String, Vec<(i64, f64)>)> = match fold {
                None => expected,
                Some(fold) => {
                    let mut accumulators = vec![Accumulator::default(); steps.len()];
                    for (_, points) in &expected {
                        for &(step, value) in points {
                            accumulators[steps.iter().position(|&s| s == step).unwrap()].add(fold, value);
                        }
                    }
                    vec![(String::new(), folded_values(&accumulators, &steps, fold).collect())]
                }
            };
            let bits = |series: &[(String, Vec<(i64, f64)>)]| -> Vec<(String, Vec<(i64, u64)>)> {
                series.iter().map(|(n, p)| (n.clone(), p.iter().map(|&(t, v)| (t, v.to_bits())).collect())).collect()
            };
            assert!(expected.iter().all(|(_, points)| !points.is_empty()));
            let (mut got, expected) = (bits(&got), bits(&expected));
            got.sort();
            assert_eq!(got.len(), expected.len(), "{case}");
            for (got, expected) in got.iter().zip(&expected) {
                assert_eq!(got, expected, "{case}");
            }
        }
    }

    #[test]
    fn chunks_follow_partitions_and_cover_the_span_once() {
        assert_eq!(chunk_bounds(5, 24, 10), vec![(5, 9), (10, 19), (20, 24)]);
        // A segment spanning partitions 10..39 joins the chunks it reaches into; one inside a
        // single chunk, or none, joins nothing.
        let bounds = chunk_bounds(5, 54, 10);
        assert_eq!(join_chunks_within(bounds.clone(), &[(12, 35)]), vec![(5, 9), (10, 39), (40, 49), (50, 54)]);
        assert_eq!(
            join_chunks_within(bounds.clone(), &[(0, 12)]),
            vec![(5, 19), (20, 29), (30, 39), (40, 49), (50, 54)]
        );
        assert_eq!(join_chunks_within(bounds.clone(), &[(21, 28)]), bounds);
        assert_eq!(join_chunks_within(bounds.clone(), &[]), bounds);
        assert_eq!(join_chunks_within(bounds.clone(), &[(10, 19), (20, 29)]), bounds, "spans meeting, not crossing");
        assert_eq!(join_chunks_within(bounds, &[(0, 100)]), vec![(5, 54)]);
        // Lanes split the time, not the chunks: a long chunk is a lane's share on its own.
        let equal: Vec<(i64, i64)> = (0..8).map(|i| (i * 10, i * 10 + 9)).collect();
        assert_eq!(lane_starts(&equal, 2), vec![4]);
        assert_eq!(lane_starts(&equal, 4), vec![2, 4, 6]);
        let week = [(0, 599), (600, 609), (610, 619), (620, 629), (630, 639)];
        assert_eq!(lane_starts(&week, 2), vec![1], "the long chunk alone, then the rest");
        let late = [(0, 9), (10, 19), (20, 29), (30, 39), (40, 599)];
        assert_eq!(lane_starts(&late, 2), vec![4]);
        let longer_late = [(0, 9), (10, 19), (20, 29), (30, 39), (40, 49), (50, 599)];
        assert_eq!(lane_starts(&longer_late, 3), vec![5], "the long last chunk leaves no third lane");
        assert!(lane_starts(&equal[..2], 4).is_empty());
        assert!(lane_starts(&equal, 1).is_empty());
        assert_eq!(chunk_bounds(-15, -1, 10), vec![(-15, -11), (-10, -1)]);
        assert_eq!(chunk_bounds(3, 3, 10), vec![(3, 3)]);
        assert!(chunk_bounds(4, 3, 10).is_empty());
        // A long span is read in at most MAX_CHUNKS chunks, still whole partitions.
        let long = chunk_bounds(0, 10_000 * 10 - 1, 10);
        assert!(long.len() as i64 <= MAX_CHUNKS, "{}", long.len());
        assert!(long.windows(2).all(|w| w[0].1 + 1 == w[1].0 && (w[1].0 % 10) == 0));
        assert_eq!((long[0].0, long.last().unwrap().1), (0, 99_999));
        let extreme = chunk_bounds(i64::MIN, i64::MAX, 7_200_000);
        assert!(extreme.len() as i64 <= MAX_CHUNKS + 1 && extreme.last().unwrap().1 == i64::MAX);
    }
}
