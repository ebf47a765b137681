//! Arrow schemas of Vigil's tables and the naming rules that map metrics and labels onto them.
//!
//! Metric tables follow the Prometheus data model: one table per metric name, one
//! dictionary-encoded string column per label (nullable: a series without the label holds
//! null), then `timestamp` and `value`. The fixed tables have schemas defined here once.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{MapBuilder, MapFieldNames, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub const TIMESTAMP_COLUMN: &str = "timestamp";
pub const VALUE_COLUMN: &str = "value";

/// The statistics a `drift_scores` row can hold (its `statistic` column), as SLO files and
/// rules name them.
pub const DRIFT_STATISTICS: &[&str] = &[
    "psi",
    "js_distance",
    "js_distance_base2",
    "hellinger",
    "kl",
    "chi_square",
    "chi_square_p",
    "ks",
    "ks_p",
    "wasserstein",
    "wasserstein_normalized",
];

/// Timestamps are nanoseconds in UTC everywhere.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// Low-cardinality strings (labels, service names, states) are dictionary encoded.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// `Map<Utf8, Utf8>` for attribute and label bags.
pub fn string_map_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// Builds `Map<Utf8, Utf8>` columns with the field names of [`string_map_type`].
pub fn string_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "entries".into(), key: "key".into(), value: "value".into() };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// The column holding a label. Labels called `timestamp` or `value` would collide with the
/// sample columns: they take a `__` prefix, and so does every label already spelled like a
/// prefixed one (`__timestamp`, `____value`, ...), so the mapping is one-to-one and two
/// distinct label names never share a column.
pub fn label_column_name(label: &str) -> Cow<'_, str> {
    if is_sample_column_spelling(label) { Cow::Owned(format!("__{label}")) } else { Cow::Borrowed(label) }
}

/// Inverse of [`label_column_name`].
pub fn label_name_of_column(column: &str) -> &str {
    match column.strip_prefix("__") {
        Some(label) if is_sample_column_spelling(label) => label,
        _ => column,
    }
}

/// `timestamp` or `value` behind any number of `__` prefixes.
fn is_sample_column_spelling(name: &str) -> bool {
    let mut rest = name;
    while let Some(inner) = rest.strip_prefix("__") {
        rest = inner;
    }
    rest == TIMESTAMP_COLUMN || rest == VALUE_COLUMN
}

/// The time column of any table: a fixed table's own, `timestamp` for metrics.
pub fn time_column_of(table: &str) -> &'static str {
    FixedTable::from_name(table).map_or(TIMESTAMP_COLUMN, FixedTable::time_column)
}

/// The table holding a metric. Fixed table names are reserved: a metric called like one
/// (say `alerts`) gets the `_metric` suffix, and so does every metric already spelled like a
/// suffixed one (`alerts_metric` → `alerts_metric_metric`), so the mapping is one-to-one.
pub fn metric_table_name(metric: &str) -> Cow<'_, str> {
    if is_fixed_table_spelling(metric) { Cow::Owned(format!("{metric}_metric")) } else { Cow::Borrowed(metric) }
}

/// Inverse of [`metric_table_name`]: the metric a metric table holds.
pub fn metric_name_of_table(table: &str) -> &str {
    match table.strip_suffix("_metric") {
        Some(metric) if is_fixed_table_spelling(metric) => metric,
        _ => table,
    }
}

/// A fixed table's name followed by any number of `_metric` suffixes.
fn is_fixed_table_spelling(name: &str) -> bool {
    let mut rest = name;
    loop {
        if FixedTable::from_name(rest).is_some() {
            return true;
        }
        match rest.strip_suffix("_metric") {
            Some(inner) => rest = inner,
            None => return false,
        }
    }
}

/// Schema of a metric table with the given label columns (already column names, any order).
pub fn metric_schema<'a>(label_columns: impl IntoIterator<Item = &'a str>) -> SchemaRef {
    let mut labels: Vec<&str> = label_columns.into_iter().collect();
    labels.sort_unstable();
    labels.dedup();
    let mut fields: Vec<Field> = labels.into_iter().map(|l| Field::new(l, dictionary_type(), true)).collect();
    fields.push(Field::new(TIMESTAMP_COLUMN, timestamp_type(), false));
    fields.push(Field::new(VALUE_COLUMN, DataType::Float64, false));
    Arc::new(Schema::new(fields))
}

/// Label columns of a metric table schema: every column but `timestamp` and `value`.
pub fn label_columns(schema: &Schema) -> impl Iterator<Item = &str> {
    schema.fields().iter().map(|f| f.name().as_str()).filter(|n| *n != TIMESTAMP_COLUMN && *n != VALUE_COLUMN)
}

/// Labels a series order puts first, after the metric: the order of VictoriaMetrics' series
/// ids (metric, job, instance). Dashboards select by them most, and a selector on them then
/// reads one run of rows per file, whose pages around it are skipped whole, instead of every
/// n-th series (whose pages are all decompressed and decoded to be skipped row by row); a
/// segment's time and value pages end where the job changes (see `segment::stretch_ends`).
const LEADING_LABELS: [&str; 2] = ["job", "instance"];

/// The label columns of a metric schema in the order that sorts its series: `job`,
/// `instance`, then the others by name. Segments and the write buffer's batches both sort
/// by it; readers only rely on a series' rows being one run, so files written in another
/// order (before this one) read the same.
pub fn series_order(schema: &Schema) -> Vec<&str> {
    let mut columns: Vec<&str> = label_columns(schema).collect();
    columns.sort_by_key(|column| {
        let label = label_name_of_column(column);
        (LEADING_LABELS.iter().position(|l| *l == label).unwrap_or(LEADING_LABELS.len()), *column)
    });
    columns
}

/// The label column that leads a metric schema's series order (`job`), when it has one:
/// segments cut pages of times and values where it changes (see `segment`).
pub fn leading_label_column(schema: &Schema) -> Option<&str> {
    label_columns(schema).find(|column| label_name_of_column(column) == LEADING_LABELS[0])
}

/// Tables whose schema is fixed by Vigil (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FixedTable {
    Spans,
    Logs,
    DriftReferences,
    DriftValues,
    DriftScores,
    SloStatus,
    Alerts,
    Exemplars,
}

impl FixedTable {
    pub const ALL: [FixedTable; 8] = [
        FixedTable::Spans,
        FixedTable::Logs,
        FixedTable::DriftReferences,
        FixedTable::DriftValues,
        FixedTable::DriftScores,
        FixedTable::SloStatus,
        FixedTable::Alerts,
        FixedTable::Exemplars,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FixedTable::Spans => "spans",
            FixedTable::Logs => "logs",
            FixedTable::DriftReferences => "drift_references",
            FixedTable::DriftValues => "drift_values",
            FixedTable::DriftScores => "drift_scores",
            FixedTable::SloStatus => "slo_status",
            FixedTable::Alerts => "alerts",
            FixedTable::Exemplars => "exemplars",
        }
    }

    pub fn from_name(name: &str) -> Option<FixedTable> {
        FixedTable::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The column segments are partitioned and pruned by.
    pub fn time_column(self) -> &'static str {
        match self {
            FixedTable::Spans => "start",
            _ => TIMESTAMP_COLUMN,
        }
    }

    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: LazyLock<Vec<SchemaRef>> =
            LazyLock::new(|| FixedTable::ALL.into_iter().map(build_fixed_schema).collect());
        SCHEMAS[self as usize].clone()
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn build_fixed_schema(table: FixedTable) -> SchemaRef {
    let ts = |name: &str, nullable: bool| Field::new(name, timestamp_type(), nullable);
    let dict = |name: &str, nullable: bool| Field::new(name, dictionary_type(), nullable);
    let utf8 = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    let f64_ = |name: &str, nullable: bool| Field::new(name, DataType::Float64, nullable);
    let map = |name: &str| Field::new(name, string_map_type(), true);
    let fields = match table {
        FixedTable::Spans => vec![
            utf8("trace_id", false),
            utf8("span_id", false),
            utf8("parent_span_id", true),
            utf8("trace_state", true),
            dict("service", false),
            dict("name", false),
            dict("kind", false),
            ts("start", false),
            ts("end", false),
            // Nanoseconds, so that SLIs and searches compare plain integers.
            Field::new("duration", DataType::Int64, false),
            dict("status", false),
            utf8("status_message", true),
            map("attributes"),
            Field::new(
                "events",
                list_of(DataType::Struct(Fields::from(vec![
                    ts("time", false),
                    utf8("name", false),
                    map("attributes"),
                ]))),
                true,
            ),
            Field::new(
                "links",
                list_of(DataType::Struct(Fields::from(vec![
                    utf8("trace_id", false),
                    utf8("span_id", false),
                    map("attributes"),
                ]))),
                true,
            ),
            map("resource_attributes"),
            dict("scope_name", true),
            dict("scope_version", true),
        ],
        FixedTable::Logs => vec![
            ts(TIMESTAMP_COLUMN, false),
            ts("observed_timestamp", true),
            utf8("trace_id", true),
            utf8("span_id", true),
            Field::new("severity_number", DataType::Int32, true),
            dict("severity_text", true),
            utf8("body", true),
            dict("service", true),
            map("attributes"),
            map("resource_attributes"),
            dict("scope_name", true),
        ],
        FixedTable::DriftReferences => vec![
            ts(TIMESTAMP_COLUMN, false),
            utf8("reference_id", false),
            dict("model", false),
            dict("version", false),
            dict("feature", false),
            dict("kind", false),
            Field::new("edges", list_of(DataType::Float64), true),
            Field::new("categories", list_of(DataType::Utf8), true),
            Field::new("counts", list_of(DataType::UInt64), false),
            Field::new("sample_count", DataType::UInt64, false),
            f64_("mean", true),
            f64_("std", true),
            // Raw reference values (numeric), kept for KS and Wasserstein.
            Field::new("values", list_of(DataType::Float64), true),
        ],
        FixedTable::DriftValues => vec![
            ts(TIMESTAMP_COLUMN, false),
            dict("model", false),
            dict("version", false),
            dict("feature", false),
            // A row holds one raw value (`value` or `category`), or bin counts against the
            // bins of reference `reference_id` (pre-binned posts, OTLP histograms and sums).
            f64_("value", true),
            dict("category", true),
            utf8("reference_id", true),
            Field::new("counts", list_of(DataType::UInt64), true),
        ],
        FixedTable::DriftScores => vec![
            ts(TIMESTAMP_COLUMN, false),
            ts("window_end", false),
            dict("model", false),
            dict("version", false),
            dict("feature", false),
            dict("statistic", false),
            f64_("value", true),
            Field::new("reference_count", DataType::UInt64, false),
            Field::new("current_count", DataType::UInt64, false),
            // The reference the window was compared with; null for scores posted precomputed.
            utf8("reference_id", true),
        ],
        FixedTable::SloStatus => vec![
            ts(TIMESTAMP_COLUMN, false),
            dict("slo", false),
            dict("service", true),
            f64_("objective", false),
            f64_("sli", true),
            f64_("good", true),
            f64_("total", true),
            f64_("error_budget_remaining", true),
            f64_("burn_rate_5m", true),
            f64_("burn_rate_30m", true),
            f64_("burn_rate_1h", true),
            f64_("burn_rate_2h", true),
            f64_("burn_rate_6h", true),
            f64_("burn_rate_1d", true),
            f64_("burn_rate_3d", true),
            dict("state", false),
        ],
        FixedTable::Alerts => vec![
            ts(TIMESTAMP_COLUMN, false),
            dict("alertname", false),
            utf8("fingerprint", false),
            dict("state", false),
            dict("slo", true),
            dict("severity", true),
            map("labels"),
            map("annotations"),
            f64_("value", true),
            ts("active_at", true),
        ],
        // Exemplars of metric samples: the series they belong to (metric and labels), their
        // own labels (`trace_id`, `span_id` and filtered attributes), value and time.
        FixedTable::Exemplars => vec![
            ts(TIMESTAMP_COLUMN, false),
            dict("metric", false),
            map("series_labels"),
            map("labels"),
            f64_("value", false),
            utf8("trace_id", true),
            utf8("span_id", true),
        ],
    };
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_columns_never_collide_with_sample_columns() {
        assert_eq!(label_column_name("value"), "__value");
        assert_eq!(label_name_of_column("__value"), "value");
        assert_eq!(label_column_name("job"), "job");
        let schema = metric_schema(["job", "instance", "job"]);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["instance", "job", "timestamp", "value"]);
        assert_eq!(label_columns(&schema).collect::<Vec<_>>(), ["instance", "job"]);
    }

    #[test]
    fn label_columns_map_one_to_one() {
        let labels =
            ["timestamp", "__timestamp", "____timestamp", "value", "__value", "__ts__", "job", "_value", "timestamp_"];
        let columns: std::collections::BTreeSet<String> =
            labels.iter().map(|l| label_column_name(l).into_owned()).collect();
        assert_eq!(columns.len(), labels.len(), "{columns:?}");
        for label in labels {
            let column = label_column_name(label);
            assert_eq!(label_name_of_column(&column), label);
            assert_ne!(column, TIMESTAMP_COLUMN);
            assert_ne!(column, VALUE_COLUMN);
        }
    }

    #[test]
    fn fixed_table_names_are_reserved_for_metrics() {
        assert_eq!(metric_table_name("alerts"), "alerts_metric");
        assert_eq!(metric_table_name("up"), "up");
        let metrics = ["spans", "spans_metric", "spans_metric_metric", "up_metric", "logs_metrics", "up"];
        let tables: std::collections::BTreeSet<String> =
            metrics.iter().map(|m| metric_table_name(m).into_owned()).collect();
        assert_eq!(tables.len(), metrics.len(), "{tables:?}");
        for metric in metrics {
            let table = metric_table_name(metric);
            assert_eq!(metric_name_of_table(&table), metric);
            assert!(FixedTable::from_name(&table).is_none());
        }
        for table in FixedTable::ALL {
            assert_eq!(FixedTable::from_name(table.name()), Some(table));
            assert!(table.schema().field_with_name(table.time_column()).is_ok());
        }
    }
}
