//! Drift data read back from storage — references, a window's current data, stored scores —
//! through the shared [`QueryEngine`], so the query timeout and memory limit apply to drift
//! as to every other reader.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, TimestampNanosecondType, UInt64Type};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::scalar::ScalarValue;
use vigil_storage::schema::FixedTable;

use crate::DriftError;
use crate::engine::DriftEngine;
use crate::evaluate::WindowData;
use crate::model::{DriftStatus, FeatureKey, WindowOutcome, statistic_name};
use crate::reference::Reference;
use crate::rows::strings;

/// Rows of one feature (dictionary columns compared as text).
fn feature_filter(key: &FeatureKey) -> datafusion::logical_expr::Expr {
    let text = |c: &str| cast(col(c), DataType::Utf8);
    text("model")
        .eq(lit(key.model.as_str()))
        .and(text("version").eq(lit(key.version.as_str())))
        .and(text("feature").eq(lit(key.feature.as_str())))
}

fn ts_literal(ns: i64) -> datafusion::logical_expr::Expr {
    lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())))
}

impl DriftEngine {
    /// The newest stored reference of every feature.
    pub(crate) async fn stored_references(&self) -> Result<BTreeMap<FeatureKey, Arc<Reference>>, DriftError> {
        let mut loaded = BTreeMap::new();
        // Most stores never take a reference: nothing to plan a query for at start.
        if !self.storage().has_rows(FixedTable::DriftReferences.name()) {
            return Ok(loaded);
        }
        let frame = self.inner.query.context().table(FixedTable::DriftReferences.name()).await?;
        for batch in &self.inner.query.read(frame).await? {
            for reference in Reference::from_batch(batch)? {
                let newer =
                    loaded.get(&reference.key).is_none_or(|r: &Arc<Reference>| r.created_ns <= reference.created_ns);
                if newer {
                    loaded.insert(reference.key.clone(), Arc::new(reference));
                }
            }
        }
        Ok(loaded)
    }

    /// The current data of `key` in `[from, to)`.
    pub(crate) async fn window_data(&self, key: &FeatureKey, from: i64, to: i64) -> Result<WindowData, DriftError> {
        let text = |c: &str| cast(col(c), DataType::Utf8);
        let filter =
            feature_filter(key).and(col("timestamp").gt_eq(ts_literal(from))).and(col("timestamp").lt(ts_literal(to)));
        let frame =
            self.inner.query.context().table(FixedTable::DriftValues.name()).await?.filter(filter)?.select(vec![
                col("value"),
                text("category").alias("category"),
                col("reference_id"),
                col("counts"),
            ])?;
        let mut data = WindowData::default();
        for batch in self.inner.query.read(frame).await? {
            let values = batch.column(0).as_primitive::<Float64Type>();
            let categories = strings(batch.column(1).as_ref())?;
            let ids = strings(batch.column(2).as_ref())?;
            let counts = batch.column(3).as_list::<i32>();
            for row in 0..batch.num_rows() {
                if !values.is_null(row) {
                    data.values.push(values.value(row));
                } else if let Some(category) = &categories[row] {
                    data.categories.push(category.clone());
                } else if let (Some(id), false) = (&ids[row], counts.is_null(row)) {
                    data.binned.push((id.clone(), counts.value(row).as_primitive::<UInt64Type>().values().to_vec()));
                }
            }
        }
        Ok(data)
    }

    /// Stored scores of one feature per window in `[from, to)`, the newest row of each
    /// statistic per window.
    pub async fn history(&self, key: &FeatureKey, from: i64, to: i64) -> Result<Vec<WindowOutcome>, DriftError> {
        let text = |c: &str| cast(col(c), DataType::Utf8);
        let filter = feature_filter(key)
            .and(col("window_end").gt(ts_literal(from)))
            .and(col("window_end").lt_eq(ts_literal(to.saturating_add(self.window_ns()))));
        let frame =
            self.inner.query.context().table(FixedTable::DriftScores.name()).await?.filter(filter)?.select(vec![
                col("timestamp"),
                col("window_end"),
                text("statistic").alias("statistic"),
                col("value"),
                col("reference_count"),
                col("current_count"),
                col("reference_id"),
            ])?;
        let mut windows: BTreeMap<i64, StoredWindow> = BTreeMap::new();
        for batch in self.inner.query.read(frame).await? {
            let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
            let ends = batch.column(1).as_primitive::<TimestampNanosecondType>();
            let statistics = strings(batch.column(2).as_ref())?;
            let values = batch.column(3).as_primitive::<Float64Type>();
            let reference_counts = batch.column(4).as_primitive::<UInt64Type>();
            let current_counts = batch.column(5).as_primitive::<UInt64Type>();
            let ids = strings(batch.column(6).as_ref())?;
            for row in 0..batch.num_rows() {
                let (Some(statistic), false) = (&statistics[row], values.is_null(row)) else { continue };
                let time = times.value(row);
                let entry = windows
                    .entry(ends.value(row))
                    .or_insert_with(|| StoredWindow { newest: i64::MIN, ..StoredWindow::default() });
                let newer = entry.scores.get(statistic).is_none_or(|(t, _)| *t <= time);
                if newer {
                    entry.scores.insert(statistic.clone(), (time, values.value(row)));
                }
                if time >= entry.newest {
                    entry.reference_count = reference_counts.value(row);
                    entry.current_count = current_counts.value(row);
                    entry.reference_id = ids[row].clone();
                    entry.newest = time;
                }
            }
        }
        let window = self.window_ns();
        Ok(windows
            .into_iter()
            .filter(|(end, _)| *end - window < to)
            .map(|(end, stored)| {
                let mut outcome = WindowOutcome::new(key.clone(), end - window, window, DriftStatus::Ok);
                outcome.reference_id = stored.reference_id;
                outcome.reference_count = stored.reference_count;
                outcome.current_count = stored.current_count;
                outcome.scores =
                    stored.scores.into_iter().filter_map(|(s, (_, v))| statistic_name(&s).map(|n| (n, v))).collect();
                outcome
            })
            .collect())
    }
}

/// One window's newest stored scores, read back from `drift_scores`.
#[derive(Default)]
struct StoredWindow {
    /// Statistic → (row time, value) of its newest row.
    scores: BTreeMap<String, (i64, f64)>,
    reference_count: u64,
    current_count: u64,
    reference_id: Option<String>,
    /// Time of the newest row, whose counts and reference are kept.
    newest: i64,
}
