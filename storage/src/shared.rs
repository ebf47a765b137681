//! Shared segments: the rows of every metric table of one time partition in one Parquet
//! file, so a flush writes O(partitions) files whatever the number of metric names.
//!
//! A shared file is sorted by (table, series, time); its first column, [`TABLE_COLUMN`],
//! names each row's table, and its label columns are the union of its tables' (a table's
//! rows are null in the others'). The manifest names each table's run of rows in the file
//! ([`SharedRows`]) with that run's own exact statistics, so a table's scan reads only its
//! rows (a Parquet row selection: the row groups and pages outside the run are skipped)
//! and `count(*)`/`min`/`max` are still answered from the manifest. This is the layout of
//! GreptimeDB's metric engine (one physical table, a logical table per metric) with
//! Vigil's own manifests.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Float64Array, Int32Array, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::manifest::{ColumnStats, SegmentMeta, StatValue};
use crate::schema::{TIMESTAMP_COLUMN, VALUE_COLUMN, dictionary_type, label_columns, metric_schema};

/// The column naming each row's table. Label names match `[a-zA-Z_][a-zA-Z0-9_]*` (see
/// `write::LabelSet`), so no label column can be spelled like it.
pub const TABLE_COLUMN: &str = "vigil:table";

/// Label columns one shared file holds at most: tables beyond it start another file, so a
/// sender inventing label names cannot make one file arbitrarily wide.
pub const MAX_LABEL_COLUMNS: usize = 256;

/// Where a table's rows are in a shared file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRows {
    /// The table's first row in the file.
    pub first_row: u64,
    /// Rows in the whole file (the selection must cover all of them).
    pub file_rows: u64,
}

/// Object path of a shared segment.
pub fn shared_path(node: &str, partition_start_ns: i64, id: u64) -> Path {
    Path::from_iter(["nodes", node, "segments", &partition_start_ns.to_string(), &format!("{id:016}.parquet")])
}

/// The directory of a partition's shared segments.
pub fn partition_dir(node: &str, partition_start_ns: i64) -> Path {
    Path::from_iter(["nodes", node, "segments", &partition_start_ns.to_string()])
}

/// Packs metric tables (each a sorted batch of one partition) into shared file batches, each
/// with the names of the tables it holds: tables in name order, a new file whenever the union
/// of label columns would pass [`MAX_LABEL_COLUMNS`].
pub fn pack(mut tables: Vec<(String, RecordBatch)>) -> Result<Vec<(Vec<String>, RecordBatch)>, ArrowError> {
    tables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut files = Vec::new();
    let mut group: Vec<(String, RecordBatch)> = Vec::new();
    let mut columns: BTreeSet<String> = BTreeSet::new();
    for (table, batch) in tables {
        if batch.num_rows() == 0 {
            continue;
        }
        let schema = batch.schema();
        let added = label_columns(&schema).filter(|c| !columns.contains(*c)).count();
        if !group.is_empty() && columns.len() + added > MAX_LABEL_COLUMNS {
            files.push(file_batch(std::mem::take(&mut group), &columns)?);
            columns.clear();
        }
        columns.extend(label_columns(&schema).map(str::to_string));
        group.push((table, batch));
    }
    if !group.is_empty() {
        files.push(file_batch(group, &columns)?);
    }
    Ok(files)
}

/// Schema of a shared file with these label columns: [`TABLE_COLUMN`], then the metric schema.
pub fn file_schema(columns: &BTreeSet<String>) -> SchemaRef {
    let metric = metric_schema(columns.iter().map(String::as_str));
    let mut fields = vec![Field::new(TABLE_COLUMN, dictionary_type(), false)];
    fields.extend(metric.fields().iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
}

fn file_batch(
    group: Vec<(String, RecordBatch)>,
    columns: &BTreeSet<String>,
) -> Result<(Vec<String>, RecordBatch), ArrowError> {
    let schema = file_schema(columns);
    let names = StringArray::from_iter_values(group.iter().map(|(table, _)| table.as_str()));
    let names: ArrayRef = Arc::new(names);
    let mut parts = Vec::with_capacity(group.len());
    for (i, (_, batch)) in group.iter().enumerate() {
        let keys = Int32Array::from_value(
            i32::try_from(i).map_err(|_| ArrowError::ComputeError("too many tables in one file".into()))?,
            batch.num_rows(),
        );
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(DictionaryArray::<Int32Type>::try_new(keys, names.clone())?)];
        for field in schema.fields().iter().skip(1) {
            arrays.push(match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => column.clone(),
                Some(column) => compute::cast(column, field.data_type())?,
                None => datafusion::arrow::array::new_null_array(field.data_type(), batch.num_rows()),
            });
        }
        parts.push(RecordBatch::try_new(schema.clone(), arrays)?);
    }
    let batch = compute::concat_batches(&schema, &parts)?;
    Ok((group.into_iter().map(|(table, _)| table).collect(), batch))
}

/// The tables of a shared file batch, each as its run of rows: (table, first row, rows).
pub fn table_runs(batch: &RecordBatch) -> Result<Vec<(String, usize, usize)>, ArrowError> {
    let column = batch
        .column_by_name(TABLE_COLUMN)
        .ok_or_else(|| ArrowError::SchemaError(format!("a shared segment without {TABLE_COLUMN}")))?;
    let names = compute::cast(column, &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    let mut runs: Vec<(String, usize, usize)> = Vec::new();
    for (row, name) in names.iter().enumerate() {
        let name = name.ok_or_else(|| ArrowError::ComputeError(format!("a row without a table at {row}")))?;
        match runs.last_mut() {
            Some((table, _, rows)) if table == name => *rows += 1,
            _ => runs.push((name.to_string(), row, 1)),
        }
    }
    let mut seen = BTreeSet::new();
    if !runs.iter().all(|(table, _, _)| seen.insert(table.as_str())) {
        return Err(ArrowError::ComputeError("a shared segment holds a table in two runs".into()));
    }
    Ok(runs)
}

/// One table's rows of a shared file batch, in its own columns (label columns it never
/// fills left out).
pub fn table_rows(batch: &RecordBatch, first_row: usize, rows: usize) -> Result<RecordBatch, ArrowError> {
    let slice = batch.slice(first_row, rows);
    let schema = slice.schema();
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = schema
        .fields()
        .iter()
        .zip(slice.columns())
        .filter(|(field, column)| {
            field.name() != TABLE_COLUMN
                && (field.name() == TIMESTAMP_COLUMN
                    || field.name() == VALUE_COLUMN
                    || column.null_count() < column.len())
        })
        .map(|(field, column)| (field.as_ref().clone(), column.clone()))
        .unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
}

/// The manifest entries of a written shared file: one per table, with its run and the exact
/// statistics of its rows.
pub fn entries(
    batch: &RecordBatch,
    path: &Path,
    id: u64,
    partition_start_ns: i64,
    size_bytes: u64,
    level: u32,
) -> Result<Vec<SegmentMeta>, ArrowError> {
    let file_rows = batch.num_rows() as u64;
    table_runs(batch)?
        .into_iter()
        .map(|(table, first_row, rows)| {
            let own = table_rows(batch, first_row, rows)?;
            let stats = exact_stats(&own)?;
            let time = stats.iter().find(|c| c.name == TIMESTAMP_COLUMN);
            let (Some(StatValue::Int(min_time_ns)), Some(StatValue::Int(max_time_ns))) =
                (time.and_then(|t| t.min.clone()), time.and_then(|t| t.max.clone()))
            else {
                return Err(ArrowError::ComputeError(format!("table {table} has no time bounds")));
            };
            Ok(SegmentMeta {
                id,
                table,
                path: path.to_string(),
                partition_start_ns,
                min_time_ns,
                max_time_ns,
                rows: rows as u64,
                size_bytes,
                columns: own.schema().fields().iter().map(|f| f.name().clone()).collect(),
                level,
                stats,
                shared: Some(SharedRows { first_row: first_row as u64, file_rows }),
            })
        })
        .collect()
}

/// Null counts and exact bounds of every column of a metric batch. Bounds are exact (the
/// planner answers `min`/`max` from them): a dictionary's bound is over the values its rows
/// use, and a float column holding a NaN gets none.
pub fn exact_stats(batch: &RecordBatch) -> Result<Vec<ColumnStats>, ArrowError> {
    let schema = batch.schema();
    let mut out = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let nulls = column.null_count() as u64;
        let (min, max) = match column.data_type() {
            DataType::Dictionary(key, value)
                if key.as_ref() == &DataType::Int32 && value.as_ref() == &DataType::Utf8 =>
            {
                let dictionary = column.as_dictionary::<Int32Type>();
                let values = dictionary.values().as_string::<i32>();
                let mut used = vec![false; values.len()];
                for key in dictionary.keys().iter().flatten() {
                    if let Some(slot) = usize::try_from(key).ok().and_then(|k| used.get_mut(k)) {
                        *slot = true;
                    }
                }
                let used_values = || {
                    used.iter()
                        .enumerate()
                        .filter(|(_, u)| **u)
                        .filter(|&(i, _)| values.is_valid(i))
                        .map(|(i, _)| values.value(i))
                };
                (used_values().min().map(text), used_values().max().map(text))
            }
            DataType::Utf8 => {
                let strings = column.as_string::<i32>();
                (compute::min_string(strings).map(text), compute::max_string(strings).map(text))
            }
            DataType::Timestamp(..) => {
                let times = column
                    .as_any()
                    .downcast_ref::<TimestampNanosecondArray>()
                    .ok_or_else(|| ArrowError::SchemaError("time column is not a nanosecond timestamp".into()))?;
                (compute::min(times).map(StatValue::Int), compute::max(times).map(StatValue::Int))
            }
            DataType::Float64 => {
                let floats: &Float64Array = column.as_primitive();
                if floats.iter().flatten().any(f64::is_nan) {
                    (None, None)
                } else {
                    let finite = |v: f64| v.is_finite().then_some(StatValue::Float(v));
                    (compute::min(floats).and_then(finite), compute::max(floats).and_then(finite))
                }
            }
            _ => (None, None),
        };
        out.push(ColumnStats { name: field.name().clone(), nulls, min, max });
    }
    Ok(out)
}

fn text(value: &str) -> StatValue {
    StatValue::Text(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::timestamp_type;

    fn metric(labels: &[&str], rows: &[(&[&str], i64, f64)]) -> RecordBatch {
        let schema = metric_schema(labels.iter().copied());
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (i, _) in labels.iter().enumerate() {
            let values: DictionaryArray<Int32Type> =
                rows.iter().map(|r| r.0.get(i).copied().filter(|v| !v.is_empty())).collect();
            arrays.push(Arc::new(values));
        }
        arrays.push(
            compute::cast(
                &(Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(rows.iter().map(|r| r.1)))
                    as ArrayRef),
                &timestamp_type(),
            )
            .unwrap(),
        );
        arrays.push(Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))));
        RecordBatch::try_new(schema, arrays).unwrap()
    }

    #[test]
    fn tables_pack_into_one_file_and_come_back_with_exact_statistics() {
        let up = metric(&["instance", "job"], &[(&["a", "node"], 10, 1.0), (&["b", "node"], 5, 0.0)]);
        let load = metric(&["cpu"], &[(&["0"], 20, 0.5), (&["1"], 30, f64::NAN)]);
        let files = pack(vec![("up".into(), up.clone()), ("load".into(), load.clone())]).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, ["load", "up"]);
        let file = &files[0].1;
        assert_eq!(file.num_rows(), 4);
        assert_eq!(table_runs(file).unwrap(), vec![("load".to_string(), 0, 2), ("up".to_string(), 2, 2)]);
        let back = table_rows(file, 2, 2).unwrap();
        let schema = back.schema();
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(columns, ["instance", "job", "timestamp", "value"], "cpu is not a column of up");
        assert_eq!(back.columns(), up.columns());

        let entries = entries(file, &shared_path("n", 0, 7), 7, 0, 100, 0).unwrap();
        assert_eq!(entries.len(), 2);
        let up_entry = &entries[1];
        assert_eq!(
            (up_entry.table.as_str(), up_entry.rows, up_entry.min_time_ns, up_entry.max_time_ns),
            ("up", 2, 5, 10)
        );
        assert_eq!(up_entry.shared, Some(SharedRows { first_row: 2, file_rows: 4 }));
        let job = up_entry.stats.iter().find(|c| c.name == "job").unwrap();
        assert_eq!((job.min.clone(), job.max.clone()), (Some(text("node")), Some(text("node"))));
        // A dictionary's unused values never widen its bounds.
        let instance = up_entry.stats.iter().find(|c| c.name == "instance").unwrap();
        assert_eq!((instance.min.clone(), instance.max.clone()), (Some(text("a")), Some(text("b"))));
        let load_value = entries[0].stats.iter().find(|c| c.name == VALUE_COLUMN).unwrap();
        assert_eq!((load_value.min.clone(), load_value.max.clone()), (None, None), "NaN: no exact bound");
        let up_value = up_entry.stats.iter().find(|c| c.name == VALUE_COLUMN).unwrap();
        assert_eq!(up_value.max, Some(StatValue::Float(1.0)));
    }

    #[test]
    fn a_wide_label_set_splits_files_and_selections_cover_the_file() {
        let wide: Vec<String> = (0..MAX_LABEL_COLUMNS - 1).map(|i| format!("l{i:03}")).collect();
        let wide_refs: Vec<&str> = wide.iter().map(String::as_str).collect();
        let values: Vec<&str> = vec!["x"; wide.len()];
        let a = metric(&wide_refs, &[(&values, 1, 1.0)]);
        let b = metric(&["other1", "other2"], &[(&["y", "z"], 2, 2.0)]);
        let c = metric(&["l000"], &[(&["w"], 3, 3.0)]);
        let files = pack(vec![("a".into(), a), ("b".into(), b), ("c".into(), c)]).unwrap();
        assert_eq!(files.len(), 2, "b's two new columns pass the bound");
        assert!(files.iter().all(|f| f.1.num_columns() <= MAX_LABEL_COLUMNS + 3));
        assert_eq!(files[1].0, ["b", "c"]);
        assert_eq!(table_runs(&files[1].1).unwrap(), vec![("b".to_string(), 0, 1), ("c".to_string(), 1, 1)]);
    }
}
