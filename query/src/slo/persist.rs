//! The evaluator's state on disk, so a restart resumes instead of backfilling every SLO.
//!
//! One Parquet file, `<data_dir>/slo/state.parquet`, rewritten whole (to a temporary file,
//! then renamed) at an interval and at shutdown. Each SLO's rows carry a fingerprint of its
//! definition: a changed definition finds no state and is recomputed alone. The file's
//! `vigil.slo_state.version` says its layout; another version is ignored (and recomputed),
//! never misread.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt8Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt8Type, UInt64Type};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::metadata::KeyValue;
use datafusion::parquet::file::properties::WriterProperties;

use super::model::SloDefinition;
use super::rollup::RollupParts;
use super::sources::GroupKey;

pub const STATE_VERSION: &str = "1";
const VERSION_KEY: &str = "vigil.slo_state.version";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("SLO state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("SLO state {path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// What one SLO's evaluation left, as saved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SavedSlo {
    pub fingerprint: u64,
    pub committed_ms: i64,
    /// Per group: the events rollup and, for time-slice budgeting, the slices one.
    pub groups: BTreeMap<GroupKey, (RollupParts, Option<RollupParts>)>,
    /// The counters' last committed samples: (role, series) → (ms, value).
    pub counters: Vec<((u8, String), (i64, f64))>,
}

/// Identifies a definition's content (its debug form, hashed): any change to what it
/// computes changes it.
pub fn fingerprint(definition: &SloDefinition) -> u64 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(format!("{definition:?}").as_bytes());
    hasher.finish()
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("slo").join("state.parquet")
}

// Row kinds.
const COMMIT: u8 = 0;
const GROUP: u8 = 1;
const COUNTER: u8 = 2;
/// Rollup rows: base + 0 minutes start, + 1 minute, + 2 hours start, + 3 hour.
const EVENTS: u8 = 10;
const SLICES: u8 = 20;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("slo", DataType::Utf8, false),
        Field::new("fingerprint", DataType::UInt64, false),
        Field::new("kind", DataType::UInt8, false),
        Field::new("group", DataType::Utf8, true),
        Field::new("series", DataType::Utf8, true),
        Field::new("role", DataType::UInt8, true),
        Field::new("at", DataType::Int64, false),
        Field::new("good", DataType::Float64, false),
        Field::new("total", DataType::Float64, false),
    ]))
}

/// Rows of one SLO, built column by column.
#[derive(Default)]
struct Rows {
    kind: Vec<u8>,
    group: Vec<Option<String>>,
    series: Vec<Option<String>>,
    role: Vec<Option<u8>>,
    at: Vec<i64>,
    good: Vec<f64>,
    total: Vec<f64>,
}

impl Rows {
    fn push(&mut self, kind: u8, group: Option<&str>, at: i64, value: (f64, f64)) {
        self.kind.push(kind);
        self.group.push(group.map(str::to_string));
        self.series.push(None);
        self.role.push(None);
        self.at.push(at);
        self.good.push(value.0);
        self.total.push(value.1);
    }

    fn push_rollup(&mut self, base: u8, group: &str, parts: &RollupParts) {
        if let Some(start) = parts.minutes_start {
            self.push(base, Some(group), start, (0.0, 0.0));
        }
        for (minute, value) in &parts.minutes {
            self.push(base + 1, Some(group), *minute, *value);
        }
        if let Some(start) = parts.hours_start {
            self.push(base + 2, Some(group), start, (0.0, 0.0));
        }
        for (hour, value) in &parts.hours {
            self.push(base + 3, Some(group), *hour, *value);
        }
    }

    fn batch(self, name: &str, fingerprint: u64) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let rows = self.kind.len();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![name; rows])),
                Arc::new(UInt64Array::from(vec![fingerprint; rows])),
                Arc::new(UInt8Array::from(self.kind)),
                Arc::new(StringArray::from(self.group)),
                Arc::new(StringArray::from(self.series)),
                Arc::new(UInt8Array::from(self.role)),
                Arc::new(Int64Array::from(self.at)),
                Arc::new(Float64Array::from(self.good)),
                Arc::new(Float64Array::from(self.total)),
            ],
        )
    }
}

fn group_text(group: &GroupKey) -> String {
    serde_json::to_string(group).unwrap_or_default()
}

/// Writes the file a [`StateWriter`] builds SLO by SLO, replacing the previous one only
/// once it is whole.
pub struct StateWriter {
    path: PathBuf,
    temporary: PathBuf,
    writer: ArrowWriter<std::fs::File>,
    slos: usize,
}

impl StateWriter {
    pub fn create(path: &Path) -> Result<Self, PersistError> {
        let io = |source| PersistError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let temporary = path.with_extension("parquet.tmp");
        let file = std::fs::File::create(&temporary).map_err(io)?;
        let properties = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), STATE_VERSION.to_string())]))
            .build();
        let writer = ArrowWriter::try_new(file, schema(), Some(properties))
            .map_err(|e| PersistError::Format { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(StateWriter { path: path.to_path_buf(), temporary, writer, slos: 0 })
    }

    pub fn write(&mut self, name: &str, saved: &SavedSlo) -> Result<(), PersistError> {
        let format = |message: String| PersistError::Format { path: self.path.clone(), message };
        let mut rows = Rows::default();
        rows.push(COMMIT, None, saved.committed_ms, (0.0, 0.0));
        for (group, (events, slices)) in &saved.groups {
            let text = group_text(group);
            rows.push(GROUP, Some(&text), 0, (0.0, 0.0));
            rows.push_rollup(EVENTS, &text, events);
            if let Some(slices) = slices {
                rows.push_rollup(SLICES, &text, slices);
            }
        }
        for ((role, series), (at, value)) in &saved.counters {
            rows.kind.push(COUNTER);
            rows.group.push(None);
            rows.series.push(Some(series.clone()));
            rows.role.push(Some(*role));
            rows.at.push(*at);
            rows.good.push(*value);
            rows.total.push(0.0);
        }
        let batch = rows.batch(name, saved.fingerprint).map_err(|e| format(e.to_string()))?;
        self.writer.write(&batch).map_err(|e| format(e.to_string()))?;
        self.slos += 1;
        Ok(())
    }

    /// Completes the file and puts it in place; returns the SLOs written.
    pub fn finish(self) -> Result<usize, PersistError> {
        let path = self.path.clone();
        let file = self
            .writer
            .into_inner()
            .map_err(|e| PersistError::Format { path: path.clone(), message: e.to_string() })?;
        let io = |source| PersistError::Io { path: path.clone(), source };
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.temporary, &self.path).map_err(io)?;
        Ok(self.slos)
    }
}

/// Reads the saved state, per SLO name. No file: nothing saved yet.
pub fn load(path: &Path) -> Result<HashMap<String, SavedSlo>, PersistError> {
    let format = |message: String| PersistError::Format { path: path.to_path_buf(), message };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => return Err(PersistError::Io { path: path.to_path_buf(), source }),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| format(e.to_string()))?;
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|kv| kv.key == VERSION_KEY))
        .and_then(|kv| kv.value.clone());
    if version.as_deref() != Some(STATE_VERSION) {
        return Err(format(format!("layout version {version:?}, this build reads {STATE_VERSION}")));
    }
    if builder.schema().fields() != schema().fields() {
        return Err(format("unexpected columns".into()));
    }
    let mut slos: HashMap<String, SavedSlo> = HashMap::new();
    for batch in builder.build().map_err(|e| format(e.to_string()))? {
        let batch = batch.map_err(|e| format(e.to_string()))?;
        let name = batch.column(0).as_string::<i32>();
        let fingerprint = batch.column(1).as_primitive::<UInt64Type>();
        let kind = batch.column(2).as_primitive::<UInt8Type>();
        let group = batch.column(3).as_string::<i32>();
        let series = batch.column(4).as_string::<i32>();
        let role = batch.column(5).as_primitive::<UInt8Type>();
        let at = batch.column(6).as_primitive::<Int64Type>();
        let good = batch.column(7).as_primitive::<Float64Type>();
        let total = batch.column(8).as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let slo = slos.entry(name.value(row).to_string()).or_default();
            slo.fingerprint = fingerprint.value(row);
            let (at, value) = (at.value(row), (good.value(row), total.value(row)));
            let group_key = || -> Result<GroupKey, PersistError> {
                if group.is_null(row) {
                    return Err(format("a rollup row without its group".into()));
                }
                serde_json::from_str(group.value(row)).map_err(|e| format(e.to_string()))
            };
            match kind.value(row) {
                COMMIT => slo.committed_ms = at,
                GROUP => {
                    slo.groups.entry(group_key()?).or_default();
                }
                COUNTER if !series.is_null(row) && !role.is_null(row) => {
                    slo.counters.push(((role.value(row), series.value(row).to_string()), (at, value.0)));
                }
                kind @ (EVENTS..=13 | SLICES..=23) => {
                    let entry = slo.groups.entry(group_key()?).or_default();
                    let parts =
                        if kind < SLICES { &mut entry.0 } else { entry.1.get_or_insert_with(RollupParts::default) };
                    match kind % 10 {
                        0 => parts.minutes_start = Some(at),
                        1 => parts.minutes.push((at, value)),
                        2 => parts.hours_start = Some(at),
                        _ => parts.hours.push((at, value)),
                    }
                }
                other => return Err(format(format!("unknown row kind {other}"))),
            }
        }
    }
    Ok(slos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_other_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        let group: GroupKey = vec![("route".into(), "/pay".into())];
        let saved = SavedSlo {
            fingerprint: 42,
            committed_ms: 1_000_000,
            groups: BTreeMap::from([
                (
                    group.clone(),
                    (
                        RollupParts {
                            minutes_start: Some(60_000),
                            minutes: vec![(120_000, (1.0, 2.0))],
                            hours_start: Some(0),
                            hours: vec![(0, (1.0, 2.0))],
                        },
                        Some(RollupParts {
                            minutes_start: Some(60_000),
                            minutes: vec![(60_000, (0.0, 1.0))],
                            hours_start: None,
                            hours: vec![],
                        }),
                    ),
                ),
                (Vec::new(), (RollupParts::default(), None)),
            ]),
            counters: vec![((2, "{\"job\": \"a\"}".into()), (999, 17.5))],
        };
        let mut writer = StateWriter::create(&path).unwrap();
        writer.write("pay", &saved).unwrap();
        writer.write("other", &SavedSlo { fingerprint: 7, committed_ms: 5, ..Default::default() }).unwrap();
        assert_eq!(writer.finish().unwrap(), 2);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded["pay"], saved);
        assert_eq!(loaded["other"].committed_ms, 5);
        assert!(!path.with_extension("parquet.tmp").exists());

        // A file of another layout is not read as this one.
        let props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![KeyValue::new(VERSION_KEY.to_string(), "0".to_string())]))
            .build();
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema(), Some(props)).unwrap();
        writer.write(&Rows::default().batch("x", 1).unwrap()).unwrap();
        writer.close().unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("layout version"), "{error}");
        assert!(load(&dir.path().join("none.parquet")).unwrap().is_empty());
    }
}
