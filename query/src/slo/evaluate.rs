//! SLO evaluation: each call reads what arrived since the last one, updates the rollups and
//! computes SLI, error budget, burn rates and state for every SLO (and group).
//!
//! Buckets from the commit point on are recomputed each time (so data arriving up to
//! `OVERLAP` late still counts); older ones are final. A new SLO is backfilled from stored
//! data on its first evaluation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Datelike, TimeZone};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringDictionaryBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::Int32Type;
use serde::Serialize;
use vigil_storage::schema::FixedTable;
use vigil_storage::{LabelSet, MetricSeries, Sample, TableRows, WriteBatch};

use super::correction::{self, Correction, Exclusions};
use super::correction_book::{CorrectionBook, CorrectionError};
use super::model::{BURN_WINDOWS, Budgeting, CalendarUnit, Severity, SloDefinition, Window};
use super::persist::{self, PersistError, SavedSlo};
use super::rollup::{HOUR_MS, MINUTE_MS, Rollup, minute_of};
use super::scans::Scans;
use super::sources::{self, GroupKey, SourceState};
use crate::QueryEngine;

/// Buckets this recent are recomputed every cycle; older ones only when the change feed
/// says a write touched them.
pub const OVERLAP_MS: i64 = 5 * MINUTE_MS;
/// Read before a late recompute's first minute, for the counters' previous samples.
const LATE_LOOKBACK_MS: i64 = 15 * MINUTE_MS;
/// Minute buckets kept: the longest burn window and one slice more.
const MINUTE_SPAN_MS: i64 = 3 * 24 * HOUR_MS + 2 * HOUR_MS;

/// One condition of an SLO's multiwindow alerting, with its current burn rates.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ConditionStatus {
    pub severity: &'static str,
    pub burn_rate_threshold: f64,
    pub long_window: String,
    pub short_window: String,
    pub long_burn_rate: Option<f64>,
    pub short_burn_rate: Option<f64>,
    /// Events (or slices) in the long window, for the minimum-traffic guard.
    pub long_window_events: f64,
    pub active: bool,
}

/// Where an SLO stands after an evaluation, serialised as `ok`, `burning`, `exhausted`,
/// `no_data`, `backfilling` or `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloState {
    Ok,
    /// A burn-rate condition is active.
    Burning,
    /// No error budget left.
    Exhausted,
    /// No events in the window.
    NoData,
    /// The history is still being read (after a start or a definition change).
    Backfilling,
    /// The SLI could not be evaluated (see `error`).
    Error,
}

impl SloState {
    pub fn as_str(self) -> &'static str {
        match self {
            SloState::Ok => "ok",
            SloState::Burning => "burning",
            SloState::Exhausted => "exhausted",
            SloState::NoData => "no_data",
            SloState::Backfilling => "backfilling",
            SloState::Error => "error",
        }
    }
}

/// Compares with the state's name as the API writes it.
impl PartialEq<&str> for SloState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for SloState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one SLO (one group of a grouped SLO) after an evaluation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SloStatus {
    pub name: String,
    /// Values of the grouping labels, for grouped SLOs.
    pub group: BTreeMap<String, String>,
    pub service: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub objective: f64,
    pub window: String,
    pub sli: Option<f64>,
    pub good: f64,
    pub total: f64,
    pub error_budget_remaining: Option<f64>,
    pub burn_rates: BTreeMap<String, Option<f64>>,
    pub time_to_exhaustion_seconds: Option<f64>,
    pub state: SloState,
    /// For `backfilling`: the share of the history read so far (0 to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfill_progress: Option<f64>,
    pub error: Option<String>,
    pub conditions: Vec<ConditionStatus>,
    pub evaluated_at_ms: i64,
}

impl SloStatus {
    /// `name` or `name{group…}`: unique per instance.
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.name.clone()
        } else {
            let labels: Vec<String> = self.group.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{}{{{}}}", self.name, labels.join(","))
        }
    }
}

/// Rollups of one group: events, and for time-slice budgeting the slice outcomes.
pub(super) struct GroupState {
    events: Rollup,
    slices: Option<Rollup>,
}

/// What is kept for one SLO between evaluations.
pub(super) struct SloRuntime {
    definition: Arc<SloDefinition>,
    pub(super) groups: BTreeMap<GroupKey, GroupState>,
    source: SourceState,
    /// Buckets before this are final unless a late write touches them; the source state
    /// is at this point.
    pub(super) committed_ms: Option<i64>,
    /// Where writes can change this SLO's counts.
    tables: sources::TablesRead,
    /// The oldest change a failed evaluation could not take in yet (ms).
    pending_change_ms: Option<i64>,
    /// Of the definition and the corrections excluding its events: saved state is used only
    /// by the definition and corrections it came from.
    fingerprint: u64,
    /// Kept beyond the spans a status needs at the commit point: a replay computes statuses
    /// up to this far behind the point it has read to.
    pub(super) lag_ms: i64,
}

/// The corrections in force, shared with backfill tasks.
pub type CorrectionSet = Arc<Vec<Arc<Correction>>>;

fn runtime_fingerprint(definition: &SloDefinition, corrections: &[Arc<Correction>]) -> u64 {
    persist::fingerprint(definition) ^ correction::fingerprint(corrections, definition)
}

impl SloRuntime {
    pub(super) fn definition(&self) -> Arc<SloDefinition> {
        self.definition.clone()
    }

    pub(super) fn new(definition: SloDefinition, corrections: &[Arc<Correction>]) -> Self {
        SloRuntime {
            tables: sources::tables_read(&definition.sli),
            fingerprint: runtime_fingerprint(&definition, corrections),
            definition: Arc::new(definition),
            groups: BTreeMap::new(),
            source: SourceState::default(),
            committed_ms: None,
            pending_change_ms: None,
            lag_ms: 0,
        }
    }
}

/// An SLO in the evaluator: evaluated every cycle, or being backfilled in the background.
enum Slot {
    Ready(SloRuntime),
    Backfilling(Backfill),
}

struct Backfill {
    definition: Arc<SloDefinition>,
    tables: sources::TablesRead,
    /// Share of the history read, as `f64` bits.
    progress: Arc<AtomicU64>,
    /// The oldest change (ms) written while the backfill ran: taken in once it is done.
    changed_since: Option<i64>,
    /// The backfilled runtime, once done. Dropping it (the SLO was replaced or removed)
    /// tells the cohort to stop reading for this SLO.
    done: tokio::sync::oneshot::Receiver<SloRuntime>,
}

/// One SLO of a backfill cohort: SLOs that start backfilling in the same cycle are read
/// together, a day at a time, sharing each day's scans.
struct CohortMember {
    runtime: SloRuntime,
    /// Where its history starts.
    start: i64,
    progress: Arc<AtomicU64>,
    done: tokio::sync::oneshot::Sender<SloRuntime>,
}

impl Slot {
    fn definition(&self) -> &Arc<SloDefinition> {
        match self {
            Slot::Ready(runtime) => &runtime.definition,
            Slot::Backfilling(backfill) => &backfill.definition,
        }
    }

    fn tables(&self) -> &sources::TablesRead {
        match self {
            Slot::Ready(runtime) => &runtime.tables,
            Slot::Backfilling(backfill) => &backfill.tables,
        }
    }
}

/// Backfill tasks running at once (a cohort is split into this many by the tables its SLOs
/// read, so both cores work and SLOs on one table still share its scans).
const BACKFILL_PARALLELISM: usize = 2;
/// History one backfill step reads: a day, so memory stays that of a day of samples.
const BACKFILL_STEP_MS: i64 = 24 * HOUR_MS;

pub struct SloEvaluator {
    engine: QueryEngine,
    runtimes: tokio::sync::Mutex<Vec<Slot>>,
    latest: parking_lot::RwLock<Vec<SloStatus>>,
    backfill_permits: Arc<tokio::sync::Semaphore>,
    /// Woken when new or edited SLOs wait for their first evaluation: the schedule runs a
    /// cycle then instead of at its next tick (which may be an `evaluation_interval` away).
    pub(super) defined: tokio::sync::Notify,
    /// The corrections in force (see [`correction`]), and where they come from.
    corrections: parking_lot::RwLock<CorrectionSet>,
    book: parking_lot::Mutex<CorrectionBook>,
}

fn format_duration(ms: i64) -> String {
    promql_parser::util::duration::display_duration(&std::time::Duration::from_millis(ms.max(0) as u64))
}

/// Start of the SLO window ending at `now` (exclusive).
pub fn window_start(window: &Window, now_ms: i64) -> i64 {
    match window {
        Window::Rolling(d) => now_ms - d.as_millis() as i64,
        Window::Calendar { unit, time_zone } => {
            let Some(now) = chrono::DateTime::from_timestamp_millis(now_ms) else { return now_ms };
            let local = now.with_timezone(time_zone);
            let date = match unit {
                CalendarUnit::Month => local.date_naive().with_day(1),
                CalendarUnit::Week => {
                    Some(local.date_naive() - chrono::Duration::days(local.weekday().num_days_from_monday() as i64))
                }
            };
            date.and_then(|d| d.and_hms_opt(0, 0, 0))
                .and_then(|midnight| time_zone.from_local_datetime(&midnight).earliest())
                .map_or(now_ms, |start| start.timestamp_millis())
        }
    }
}

/// How long hour buckets are kept: the SLO's history (its window, at least the longest burn
/// window) and two hours more; a calendar window its longest period, since it grows.
fn hour_span(definition: &SloDefinition, now_ms: i64) -> i64 {
    let longest = match definition.window {
        Window::Rolling(d) => d.as_millis() as i64,
        Window::Calendar { unit: CalendarUnit::Month, .. } => 31 * 24 * HOUR_MS,
        Window::Calendar { unit: CalendarUnit::Week, .. } => 7 * 24 * HOUR_MS,
    };
    (now_ms - history_start(definition, now_ms)).max(longest) + 2 * HOUR_MS
}

/// Where an SLO's history starts: its window, and at least the longest burn window.
pub(super) fn history_start(definition: &SloDefinition, now_ms: i64) -> i64 {
    window_start(&definition.window, now_ms).min(now_ms - 3 * 24 * HOUR_MS)
}

fn window_label(window: &Window) -> String {
    match window {
        Window::Rolling(d) => format_duration(d.as_millis() as i64),
        Window::Calendar { unit: CalendarUnit::Month, time_zone } => format!("calendar month ({time_zone})"),
        Window::Calendar { unit: CalendarUnit::Week, time_zone } => format!("calendar week ({time_zone})"),
    }
}

impl SloEvaluator {
    pub fn new(engine: QueryEngine) -> Self {
        SloEvaluator {
            engine,
            runtimes: tokio::sync::Mutex::new(Vec::new()),
            latest: parking_lot::RwLock::new(Vec::new()),
            backfill_permits: Arc::new(tokio::sync::Semaphore::new(BACKFILL_PARALLELISM)),
            defined: tokio::sync::Notify::new(),
            corrections: parking_lot::RwLock::new(Arc::new(Vec::new())),
            book: parking_lot::Mutex::new(CorrectionBook::default()),
        }
    }

    /// Replaces the set of SLOs; unchanged definitions keep their state (or their running
    /// backfill), new and edited ones are backfilled from their next evaluation. Until then
    /// they are listed as backfilling, not evaluated yet (`evaluated_at_ms` 0): an SLO added
    /// by a reload shows at once, and an edited one no longer shows the old definition's numbers;
    /// the schedule evaluates them at once (see [`SloEvaluator::run`]).
    pub async fn set_definitions(&self, definitions: Vec<SloDefinition>) {
        let mut runtimes = self.runtimes.lock().await;
        let mut previous: HashMap<String, Slot> =
            runtimes.drain(..).map(|s| (s.definition().name.clone(), s)).collect();
        let mut fresh = Vec::new();
        for definition in definitions {
            match previous.remove(&definition.name) {
                Some(slot) if **slot.definition() == definition => runtimes.push(slot),
                _ => {
                    fresh.push(backfilling_status(&definition, 0, 0.0));
                    runtimes.push(Slot::Ready(SloRuntime::new(definition, &self.corrections.read())));
                }
            }
        }
        let names: Vec<String> = runtimes.iter().map(|s| s.definition().name.clone()).collect();
        let waiting = !fresh.is_empty();
        {
            let mut latest = self.latest.write();
            latest.retain(|s| names.contains(&s.name) && !fresh.iter().any(|f| f.name == s.name));
            latest.extend(fresh);
        }
        if waiting {
            self.defined.notify_one();
        }
    }

    /// Writes every evaluated SLO's state to `path` (see [`persist`]); returns how many.
    /// The file is written while the evaluation lock is held, between two cycles.
    pub async fn save(&self, path: &std::path::Path) -> Result<usize, PersistError> {
        let started = std::time::Instant::now();
        let runtimes = self.runtimes.lock().await;
        let mut writer = persist::StateWriter::create(path)?;
        for slot in runtimes.iter() {
            let Slot::Ready(runtime) = slot else { continue };
            let Some(committed_ms) = runtime.committed_ms else { continue };
            let saved = SavedSlo {
                fingerprint: runtime.fingerprint,
                committed_ms,
                groups: runtime
                    .groups
                    .iter()
                    .map(|(group, state)| {
                        (group.clone(), (state.events.parts(), state.slices.as_ref().map(Rollup::parts)))
                    })
                    .collect(),
                counters: runtime.source.counters(),
            };
            writer.write(&runtime.definition.name, &saved)?;
        }
        let saved = writer.finish()?;
        metrics::histogram!("vigil_slo_state_save_seconds").record(started.elapsed().as_secs_f64());
        Ok(saved)
    }

    /// Takes up the state saved at `path` for every SLO whose definition is unchanged and
    /// that has no state yet; returns how many resumed. The others backfill as new ones.
    pub async fn restore(&self, path: &std::path::Path, now_ms: i64) -> Result<usize, PersistError> {
        let mut saved = persist::load(path)?;
        let mut runtimes = self.runtimes.lock().await;
        let mut restored = 0;
        let fresh = runtimes.iter_mut().filter_map(|slot| match slot {
            Slot::Ready(runtime) if runtime.committed_ms.is_none() => Some(runtime),
            _ => None,
        });
        for runtime in fresh {
            let Some(state) = saved.remove(&runtime.definition.name).filter(|s| s.fingerprint == runtime.fingerprint)
            else {
                continue;
            };
            let hour_span = hour_span(&runtime.definition, now_ms);
            runtime.groups = state
                .groups
                .iter()
                .map(|(group, (events, slices))| {
                    let state = GroupState {
                        events: Rollup::from_parts(MINUTE_SPAN_MS, hour_span, events, now_ms),
                        slices: slices.as_ref().map(|s| Rollup::from_parts(MINUTE_SPAN_MS, hour_span, s, now_ms)),
                    };
                    (group.clone(), state)
                })
                .collect();
            runtime.source = SourceState::from_counters(state.counters);
            runtime.committed_ms = Some(state.committed_ms);
            restored += 1;
        }
        metrics::gauge!("vigil_slo_resumed").set(restored as f64);
        Ok(restored)
    }

    /// The corrections in force.
    pub fn corrections(&self) -> CorrectionSet {
        self.corrections.read().clone()
    }

    /// Takes up the API's corrections stored at `path` (and stores them there from now on).
    pub async fn open_corrections(&self, path: &std::path::Path, now_ms: i64) -> Result<usize, CorrectionError> {
        let opened = self.book.lock().open(path)?;
        self.apply_corrections(now_ms).await;
        Ok(opened)
    }

    /// Replaces the corrections the definition files hold (at each reload).
    pub async fn set_file_corrections(&self, corrections: Vec<Correction>, now_ms: i64) {
        self.book.lock().set_from_files(corrections);
        self.apply_corrections(now_ms).await;
    }

    /// Adds a correction made through the API, from its document (see
    /// [`super::correction_book::parse_document`]).
    pub async fn add_correction(
        &self,
        text: &str,
        created_by: &str,
        now_ms: i64,
    ) -> Result<Arc<Correction>, CorrectionError> {
        let known = self.names().await;
        let parsed = super::correction_book::parse_document(text, created_by, now_ms, Some(&known))?;
        let added = self.book.lock().add(parsed)?;
        self.apply_corrections(now_ms).await;
        Ok(added)
    }

    /// Removes a correction made through the API; the SLOs it excluded events from recompute.
    pub async fn remove_correction(&self, name: &str, now_ms: i64) -> Result<Arc<Correction>, CorrectionError> {
        let removed = self.book.lock().remove(name)?;
        self.apply_corrections(now_ms).await;
        Ok(removed)
    }

    async fn names(&self) -> std::collections::BTreeSet<String> {
        self.runtimes.lock().await.iter().map(|s| s.definition().name.clone()).collect()
    }

    /// Puts the book's corrections in force: every SLO whose excluded minutes changed within
    /// its history recomputes from the first changed minute (like a late write there).
    async fn apply_corrections(&self, now_ms: i64) {
        let mut runtimes = self.runtimes.lock().await;
        let new: CorrectionSet = Arc::new(self.book.lock().all());
        let old = std::mem::replace(&mut *self.corrections.write(), new.clone());
        let mut recomputing = 0;
        for slot in runtimes.iter_mut() {
            let definition = slot.definition().clone();
            let start = history_start(&definition, now_ms);
            let before = Exclusions::of(old.iter().map(|c| &**c), &definition, start, now_ms + MINUTE_MS);
            let after = Exclusions::of(new.iter().map(|c| &**c), &definition, start, now_ms + MINUTE_MS);
            let changed = before.first_difference(&after);
            recomputing += usize::from(changed.is_some());
            match slot {
                Slot::Ready(runtime) => {
                    runtime.fingerprint = runtime_fingerprint(&definition, &new);
                    if runtime.committed_ms.is_some() {
                        runtime.pending_change_ms = earliest(runtime.pending_change_ms, changed);
                    }
                }
                Slot::Backfilling(backfill) => backfill.changed_since = earliest(backfill.changed_since, changed),
            }
        }
        metrics::gauge!("vigil_slo_corrections").set(new.len() as f64);
        if recomputing > 0 {
            tracing::info!(slos = recomputing, "corrections changed: recomputing the SLOs they touch");
            self.defined.notify_one();
        }
    }

    pub async fn definitions(&self) -> Vec<Arc<SloDefinition>> {
        self.runtimes.lock().await.iter().map(|s| s.definition().clone()).collect()
    }

    /// The statuses of the last evaluation.
    pub fn statuses(&self) -> Vec<SloStatus> {
        self.latest.read().clone()
    }

    /// Evaluates every SLO at `now_ms`, stores the results, and returns them. SLOs without
    /// state start a backfill in the background and answer `backfilling` until it is done.
    pub async fn evaluate(&self, now_ms: i64) -> Vec<SloStatus> {
        let started = std::time::Instant::now();
        let mut runtimes = self.runtimes.lock().await;
        // Drained under the lock: a write after this is in the next cycle's changes.
        let changes = self.engine.storage().drain_changes();
        let late_samples: u64 = changes
            .late_samples
            .iter()
            .filter(|(table, _)| runtimes.iter().any(|slot| slot.tables().reads(table)))
            .map(|(_, n)| n)
            .sum();
        metrics::counter!("vigil_slo_late_samples_total").increment(late_samples);
        let mut statuses = Vec::new();
        let mut rollup_bytes = 0usize;
        let mut pending = 0;
        let scans = Scans::new();
        let mut cohort = Vec::new();
        let corrections = self.corrections();
        for slot in std::mem::take(&mut *runtimes) {
            let mut runtime = match slot {
                Slot::Ready(runtime) => runtime,
                Slot::Backfilling(mut backfill) => {
                    let changed = backfill.tables.changed_since(&changes);
                    backfill.changed_since = earliest(backfill.changed_since, changed);
                    match backfill.done.try_recv() {
                        Ok(mut runtime) => {
                            runtime.pending_change_ms = earliest(runtime.pending_change_ms, backfill.changed_since);
                            runtime.fingerprint = runtime_fingerprint(&runtime.definition, &corrections);
                            runtime
                        }
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                            let progress = f64::from_bits(backfill.progress.load(Ordering::Relaxed));
                            statuses.push(backfilling_status(&backfill.definition, now_ms, progress));
                            pending += 1;
                            runtimes.push(Slot::Backfilling(backfill));
                            continue;
                        }
                        Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                            tracing::warn!(slo = %backfill.definition.name, "SLO backfill failed; it starts again");
                            SloRuntime::new((*backfill.definition).clone(), &corrections)
                        }
                    }
                }
            };
            if runtime.committed_ms.is_none() {
                let (done, receiver) = tokio::sync::oneshot::channel();
                let progress = Arc::new(AtomicU64::new(0f64.to_bits()));
                let backfill = Backfill {
                    definition: runtime.definition.clone(),
                    tables: runtime.tables.clone(),
                    progress: progress.clone(),
                    changed_since: None,
                    done: receiver,
                };
                statuses.push(backfilling_status(&backfill.definition, now_ms, 0.0));
                pending += 1;
                runtimes.push(Slot::Backfilling(backfill));
                let start = minute_of(history_start(&runtime.definition, now_ms));
                runtime.committed_ms = Some(start);
                cohort.push(CohortMember { runtime, start, progress, done });
                continue;
            }
            let changed_since = runtime.tables.changed_since(&changes);
            statuses.extend(advance(&self.engine, &scans, &mut runtime, now_ms, changed_since, &corrections).await);
            rollup_bytes += runtime
                .groups
                .values()
                .map(|g| g.events.heap_bytes() + g.slices.as_ref().map_or(0, Rollup::heap_bytes))
                .sum::<usize>();
            runtimes.push(Slot::Ready(runtime));
        }
        metrics::gauge!("vigil_memory_bytes", "component" => "slo_rollups").set(rollup_bytes as f64);
        self.start_backfills(cohort, now_ms, corrections);
        drop(runtimes);
        let stored: Vec<SloStatus> = statuses.iter().filter(|s| s.state != SloState::Backfilling).cloned().collect();
        if let Err(e) = self.engine.storage().write(status_batch(&stored, now_ms)).await {
            tracing::warn!(error = %e, "storing SLO results failed");
        }
        metrics::histogram!("vigil_slo_evaluation_seconds").record(started.elapsed().as_secs_f64());
        metrics::gauge!("vigil_slos").set(statuses.len() as f64);
        metrics::gauge!("vigil_slo_backfill_pending").set(pending as f64);
        metrics::gauge!("vigil_slo_evaluation_lag_seconds").set(((unix_now_ms() - now_ms).max(0) as f64) / 1000.0);
        *self.latest.write() = statuses.clone();
        statuses
    }

    /// Waits until no backfill is running (tests, and tools that want complete numbers).
    pub async fn settle(&self, now_ms: i64) -> Vec<SloStatus> {
        loop {
            let statuses = self.evaluate(now_ms).await;
            if statuses.iter().all(|s| s.state != SloState::Backfilling) {
                return statuses;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Backfills a cycle's new SLOs: split by the tables they read into at most
    /// `BACKFILL_PARALLELISM` tasks, each reading its SLOs' history together.
    fn start_backfills(&self, cohort: Vec<CohortMember>, now_ms: i64, corrections: CorrectionSet) {
        if cohort.is_empty() {
            return;
        }
        let mut by_tables: BTreeMap<String, Vec<CohortMember>> = BTreeMap::new();
        for member in cohort {
            by_tables.entry(format!("{:?}", member.runtime.tables)).or_default().push(member);
        }
        let mut groups: Vec<Vec<CohortMember>> = by_tables.into_values().collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
        let mut tasks: Vec<Vec<CohortMember>> =
            (0..BACKFILL_PARALLELISM.min(groups.len())).map(|_| Vec::new()).collect();
        for group in groups {
            // The largest groups first, each to the task with the fewest SLOs so far.
            if let Some(task) = tasks.iter_mut().min_by_key(|t| t.len()) {
                task.extend(group);
            }
        }
        for members in tasks {
            tokio::spawn(backfill(
                self.engine.clone(),
                members,
                now_ms,
                self.backfill_permits.clone(),
                corrections.clone(),
            ));
        }
    }
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Reads the history of a cohort's SLOs up to `now_ms` a day at a time, under one of the
/// backfill permits; each day's scans are shared by the SLOs that read that day.
async fn backfill(
    engine: QueryEngine,
    mut members: Vec<CohortMember>,
    now_ms: i64,
    permits: Arc<tokio::sync::Semaphore>,
    corrections: CorrectionSet,
) {
    let Ok(_permit) = permits.acquire_owned().await else { return };
    let started = std::time::Instant::now();
    members.retain(|m| !m.done.is_closed());
    metrics::counter!("vigil_slo_backfills_total").increment(members.len() as u64);
    let Some(first) = members.iter().map(|m| m.start).min() else { return };
    let mut at = first;
    while at < now_ms && !members.is_empty() {
        at = (at + BACKFILL_STEP_MS).min(now_ms);
        let scans = Scans::new();
        for member in &mut members {
            if member.runtime.committed_ms.is_some_and(|c| c < at) {
                advance(&engine, &scans, &mut member.runtime, at, None, &corrections).await;
                let share = (at - member.start) as f64 / (now_ms - member.start).max(1) as f64;
                member.progress.store(share.to_bits(), Ordering::Relaxed);
            }
        }
        // A replaced or removed SLO is read no further.
        members.retain(|m| !m.done.is_closed());
    }
    metrics::histogram!("vigil_slo_backfill_seconds").record(started.elapsed().as_secs_f64());
    for member in members {
        let _ = member.done.send(member.runtime); // a receiver gone meanwhile needs nothing
    }
}

/// Brings one SLO up to `now_ms`: from its commit point, or — when writes since the last
/// cycle (`changed_since`, ms) reached further back — from the oldest minute they touched,
/// however late they came (within the SLO window).
pub(super) async fn advance(
    engine: &QueryEngine,
    scans: &Scans,
    runtime: &mut SloRuntime,
    now_ms: i64,
    changed_since: Option<i64>,
    corrections: &[Arc<Correction>],
) -> Vec<SloStatus> {
    let definition = runtime.definition.clone();
    let changed_since = earliest(changed_since, runtime.pending_change_ms.take());
    let history_start = history_start(&definition, now_ms);
    // Forget what `now_ms` no longer needs before adding to it: a backfill day then
    // replaces a day instead of growing the rollups by one.
    for state in runtime.groups.values_mut() {
        state.events.trim(now_ms);
        if let Some(slices) = &mut state.slices {
            slices.trim(now_ms);
        }
    }
    let mut from = runtime.committed_ms.unwrap_or_else(|| minute_of(history_start));
    let mut read_from = from;
    if let (Some(committed), Some(changed)) = (runtime.committed_ms, changed_since) {
        let mut late = minute_of(changed.max(history_start + 1));
        if late < committed {
            // Minutes no longer kept one by one are recomputed by whole hours.
            let floor = runtime.groups.values().filter_map(|g| g.events.minutes_floor()).max();
            if floor.is_some_and(|floor| late < floor) {
                late = late.div_euclid(HOUR_MS) * HOUR_MS;
            }
            metrics::counter!("vigil_slo_late_recomputes_total").increment(1);
            metrics::counter!("vigil_slo_late_minutes_total").increment(((committed - late) / MINUTE_MS) as u64);
            from = late;
            // Counters restart from stored samples: read a lookback before `from` so
            // the first increase after it is not lost.
            runtime.source = SourceState::default();
            read_from = from - LATE_LOOKBACK_MS;
        }
    }
    let commit = minute_of(now_ms - OVERLAP_MS).max(from);
    let scan = std::time::Instant::now();
    let fetched = sources::fetch(engine, scans, &definition, read_from, now_ms, commit, &mut runtime.source).await;
    metrics::histogram!("vigil_slo_phase_seconds", "phase" => "scan").record(scan.elapsed().as_secs_f64());
    let counts = match fetched {
        Ok(counts) => counts,
        Err(error) => {
            runtime.pending_change_ms = changed_since;
            let message = error.to_string();
            if runtime.groups.is_empty() {
                return vec![error_status(&definition, now_ms, message)];
            }
            let mut statuses: Vec<SloStatus> =
                runtime.groups.iter().map(|(group, state)| status(&definition, group, state, now_ms)).collect();
            for s in &mut statuses {
                s.state = SloState::Error;
                s.error = Some(message.clone());
            }
            return statuses;
        }
    };
    let rollup = std::time::Instant::now();
    let hour_span = hour_span(&definition, now_ms) + runtime.lag_ms;
    let minute_span = MINUTE_SPAN_MS + runtime.lag_ms;
    // Corrected minutes count nothing, in their minute and in their hour.
    let exclusions = Exclusions::of(corrections.iter().map(|c| &**c), &definition, from, now_ms + MINUTE_MS);
    for (group, mut minutes) in counts {
        if !exclusions.is_empty() {
            minutes.retain(|minute, _| !exclusions.excludes(*minute));
        }
        let state = runtime.groups.entry(group).or_insert_with(|| GroupState {
            events: Rollup::new(minute_span, hour_span),
            slices: match definition.budgeting {
                Budgeting::Occurrences => None,
                _ => Some(Rollup::new(minute_span, hour_span)),
            },
        });
        let mut minute = from;
        while minute <= minute_of(now_ms) {
            let (good, total) = minutes.get(&minute).copied().unwrap_or((0.0, 0.0));
            state.events.set(minute, good, total);
            minute += MINUTE_MS;
        }
        // Hours whose minutes are gone are set whole from the recomputed minutes.
        if let Some(kept_from) = state.events.minutes_floor().filter(|floor| from < *floor) {
            let mut hour = from.div_euclid(HOUR_MS) * HOUR_MS;
            while hour < kept_from {
                let old = minutes
                    .range(hour..kept_from.min(hour + HOUR_MS))
                    .fold((0.0, 0.0), |sum, (_, c)| (sum.0 + c.0, sum.1 + c.1));
                state.events.set_old_hour(hour, old);
                hour += HOUR_MS;
            }
        }
    }
    // Trimmed again: groups first seen in this pass were not trimmed before it.
    for state in runtime.groups.values_mut() {
        if let Some(slices) = &mut state.slices {
            update_slices(&definition.budgeting, &state.events, slices, from, now_ms);
            slices.trim(now_ms);
        }
        state.events.trim(now_ms);
    }
    runtime.committed_ms = Some(commit);
    metrics::histogram!("vigil_slo_phase_seconds", "phase" => "rollup").record(rollup.elapsed().as_secs_f64());
    let statuses = std::time::Instant::now();
    let computed = runtime.groups.iter().map(|(group, state)| status(&definition, group, state, now_ms)).collect();
    metrics::histogram!("vigil_slo_phase_seconds", "phase" => "status").record(statuses.elapsed().as_secs_f64());
    computed
}

/// Recomputes the outcomes of the slices touching `[from, now]`: one event per slice, good
/// when the slice meets its target (Timeslices) or weighted by its ratio (RatioTimeslices).
/// The open slice counts provisionally at the current minute.
fn update_slices(budgeting: &Budgeting, events: &Rollup, slices: &mut Rollup, from: i64, now_ms: i64) {
    let slice_ms = match budgeting {
        Budgeting::Timeslices { slice, .. } | Budgeting::RatioTimeslices { slice } => {
            (slice.as_millis() as i64).max(MINUTE_MS)
        }
        Budgeting::Occurrences => return,
    };
    let mut start = from.div_euclid(slice_ms) * slice_ms;
    while start <= now_ms {
        let end = start + slice_ms;
        let (good, total) = events.recent(start, end.min(now_ms));
        let outcome = if total <= 0.0 {
            (0.0, 0.0)
        } else {
            match budgeting {
                Budgeting::Timeslices { target, .. } => (if good / total >= *target { 1.0 } else { 0.0 }, 1.0),
                _ => (good / total, 1.0),
            }
        };
        let at = if end <= now_ms { minute_of(end) } else { minute_of(now_ms) };
        let mut minute = start;
        while minute < end {
            if minute == at {
                slices.set(minute, outcome.0, outcome.1);
            } else if slices.get(minute) != (0.0, 0.0) {
                slices.set(minute, 0.0, 0.0);
            }
            minute += MINUTE_MS;
        }
        start = end;
    }
}

fn burn(good: f64, total: f64, objective: f64) -> Option<f64> {
    (total > 0.0).then(|| (1.0 - good / total) / (1.0 - objective))
}

/// The status of an SLO whose history is still being read: no numbers yet, never made-up.
fn backfilling_status(definition: &SloDefinition, now_ms: i64, progress: f64) -> SloStatus {
    SloStatus {
        state: SloState::Backfilling,
        error: None,
        backfill_progress: Some(progress),
        ..error_status(definition, now_ms, String::new())
    }
}

fn error_status(definition: &SloDefinition, now_ms: i64, message: String) -> SloStatus {
    SloStatus {
        backfill_progress: None,
        name: definition.name.clone(),
        group: BTreeMap::new(),
        service: definition.service.clone(),
        description: definition.description.clone(),
        labels: definition.labels.clone(),
        objective: definition.objective,
        window: window_label(&definition.window),
        sli: None,
        good: 0.0,
        total: 0.0,
        error_budget_remaining: None,
        burn_rates: BURN_WINDOWS.iter().map(|(w, _)| (w.to_string(), None)).collect(),
        time_to_exhaustion_seconds: None,
        state: SloState::Error,
        error: Some(message),
        conditions: Vec::new(),
        evaluated_at_ms: now_ms,
    }
}

pub(super) fn status(definition: &SloDefinition, group: &GroupKey, state: &GroupState, now_ms: i64) -> SloStatus {
    let rollup = state.slices.as_ref().unwrap_or(&state.events);
    let objective = definition.objective;
    let start = window_start(&definition.window, now_ms);
    let (good, total) = rollup.window(start, now_ms);
    let sli = (total > 0.0).then(|| good / total);
    let remaining = sli.map(|s| 1.0 - (1.0 - s) / (1.0 - objective));
    let rate_over = |ms: i64| {
        let (g, t) = rollup.recent(now_ms - ms, now_ms);
        burn(g, t, objective)
    };
    let burn_rates: BTreeMap<String, Option<f64>> =
        BURN_WINDOWS.iter().map(|(w, secs)| (w.to_string(), rate_over(*secs as i64 * 1000))).collect();
    let conditions: Vec<ConditionStatus> = definition
        .alerting
        .conditions
        .iter()
        .filter(|c| match c.severity {
            Severity::Page => !definition.alerting.page.disabled,
            Severity::Ticket => !definition.alerting.ticket.disabled,
        })
        .map(|c| {
            let long_ms = c.long_window.as_millis() as i64;
            let long = rate_over(long_ms);
            let short = rate_over(c.short_window.as_millis() as i64);
            ConditionStatus {
                severity: c.severity.as_str(),
                burn_rate_threshold: c.burn_rate,
                long_window: format_duration(c.long_window.as_millis() as i64),
                short_window: format_duration(c.short_window.as_millis() as i64),
                long_burn_rate: long,
                short_burn_rate: short,
                long_window_events: rollup.recent(now_ms - long_ms, now_ms).1,
                active: matches!((long, short), (Some(l), Some(s)) if l >= c.burn_rate && s >= c.burn_rate),
            }
        })
        .collect();
    // Time left at the last hour's burn rate, as a share of the window.
    let time_to_exhaustion = match (remaining, burn_rates.get("1h").copied().flatten()) {
        (Some(r), _) if r <= 0.0 => Some(0.0),
        (Some(r), Some(b)) if b > 0.0 => Some(r * definition.window.period().as_secs_f64() / b),
        _ => None,
    };
    let state_name = match remaining {
        None => SloState::NoData,
        Some(r) if r <= 0.0 => SloState::Exhausted,
        _ if conditions.iter().any(|c| c.active) => SloState::Burning,
        _ => SloState::Ok,
    };
    SloStatus {
        name: definition.name.clone(),
        group: group.iter().cloned().collect(),
        service: definition.service.clone(),
        description: definition.description.clone(),
        labels: definition.labels.clone(),
        objective,
        window: window_label(&definition.window),
        sli,
        good,
        total,
        error_budget_remaining: remaining,
        burn_rates,
        time_to_exhaustion_seconds: time_to_exhaustion,
        state: state_name,
        backfill_progress: None,
        error: None,
        conditions,
        evaluated_at_ms: now_ms,
    }
}

/// `slo_status` rows and `vigil_slo_*` series for one evaluation.
fn status_batch(statuses: &[SloStatus], now_ms: i64) -> WriteBatch {
    let now_ns = now_ms * 1_000_000;
    let mut metrics = Vec::new();
    for status in statuses {
        let mut labels: Vec<(String, String)> = status.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.extend(status.group.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.retain(|(k, _)| k != "slo" && k != "service" && k != "window");
        labels.push(("slo".into(), status.name.clone()));
        labels.push(("service".into(), status.service.clone()));
        let Ok(base) = LabelSet::new(labels.clone()) else { continue };
        let mut push = |metric: &str, labels: LabelSet, value: Option<f64>| {
            if let Some(value) = value {
                metrics.push(MetricSeries {
                    metric: metric.into(),
                    labels,
                    samples: vec![Sample { timestamp_ns: now_ns, value }],
                });
            }
        };
        push("vigil_slo_objective", base.clone(), Some(status.objective));
        push("vigil_slo_sli", base.clone(), status.sli);
        push("vigil_slo_error_budget_remaining", base.clone(), status.error_budget_remaining);
        for (window, rate) in &status.burn_rates {
            let mut with_window = labels.clone();
            with_window.push(("window".into(), window.clone()));
            if let Ok(set) = LabelSet::new(with_window) {
                push("vigil_slo_burn_rate", set, *rate);
            }
        }
    }
    let mut rows = Vec::new();
    if !statuses.is_empty()
        && let Ok(batch) = slo_status_rows(statuses, now_ns)
    {
        rows.push(TableRows { table: FixedTable::SloStatus, batch });
    }
    WriteBatch { metrics, rows }
}

fn slo_status_rows(statuses: &[SloStatus], now_ns: i64) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let dictionary = |values: Vec<Option<String>>| -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        for value in values {
            builder.append_option(value);
        }
        Arc::new(builder.finish())
    };
    let floats = |f: &dyn Fn(&SloStatus) -> Option<f64>| -> ArrayRef {
        Arc::new(statuses.iter().map(f).collect::<Float64Array>())
    };
    let rate = |window: &'static str| move |s: &SloStatus| s.burn_rates.get(window).copied().flatten();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampNanosecondArray::from(vec![now_ns; statuses.len()]).with_timezone("UTC")),
        dictionary(statuses.iter().map(|s| Some(s.id())).collect()),
        dictionary(statuses.iter().map(|s| Some(s.service.clone())).collect()),
        Arc::new(statuses.iter().map(|s| Some(s.objective)).collect::<Float64Array>()),
        floats(&|s| s.sli),
        floats(&|s| Some(s.good)),
        floats(&|s| Some(s.total)),
        floats(&|s| s.error_budget_remaining),
        floats(&rate("5m")),
        floats(&rate("30m")),
        floats(&rate("1h")),
        floats(&rate("2h")),
        floats(&rate("6h")),
        floats(&rate("1d")),
        floats(&rate("3d")),
        dictionary(statuses.iter().map(|s| Some(s.state.to_string())).collect()),
    ];
    RecordBatch::try_new(FixedTable::SloStatus.schema(), columns)
}
