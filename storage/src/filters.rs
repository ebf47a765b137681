//! Reads, from the filters DataFusion pushes into a scan, what storage can use before it
//! opens anything: a time range on the table's time column and equality on label columns.
//! Time bounds and label filters the scan applies exactly (see [`LabelFilters`]); everything
//! else is left to DataFusion (pushdown is `Inexact`).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;

use crate::buffer::ScanFilter;

pub(crate) fn scan_filter(filters: &[Expr], time_column: &str, is_label: impl Fn(&str) -> bool) -> ScanFilter {
    let mut scan = ScanFilter::default();
    for filter in filters {
        collect(filter, time_column, &is_label, &mut scan);
    }
    scan
}

fn collect(expr: &Expr, time_column: &str, is_label: &impl Fn(&str) -> bool, scan: &mut ScanFilter) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            collect(left, time_column, is_label, scan);
            collect(right, time_column, is_label, scan);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, literal, op) = match (column_name(left), literal(right)) {
                (Some(c), Some(l)) => (c, l, *op),
                _ => match (column_name(right), literal(left), op.swap()) {
                    (Some(c), Some(l), Some(swapped)) => (c, l, swapped),
                    _ => return,
                },
            };
            if column == time_column {
                if let Some(ns) = timestamp_ns(literal) {
                    narrow(scan, op, ns);
                }
            } else if op == Operator::Eq
                && is_label(column)
                && let Some(value) = string_value(literal)
            {
                scan.label_equals.push((column.to_string(), value.to_string()));
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            if column_name(expr) == Some(time_column)
                && let (Some(lo), Some(hi)) =
                    (literal(low).and_then(timestamp_ns), literal(high).and_then(timestamp_ns))
            {
                narrow(scan, Operator::GtEq, lo);
                narrow(scan, Operator::LtEq, hi);
            }
        }
        _ => {}
    }
}

/// True for a filter storage applies exactly: a comparison of the bare time column with a
/// timestamp literal, a `BETWEEN` of two, or an `AND` of such.
pub(crate) fn is_time_bound(expr: &Expr, time_column: &str) -> bool {
    let bare = |e: &Expr| matches!(e, Expr::Column(c) if c.name == time_column);
    let stamp = |e: &Expr| literal(e).and_then(timestamp_ns).is_some();
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            is_time_bound(left, time_column) && is_time_bound(right, time_column)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(op, Operator::Eq | Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq)
                && ((bare(left) && stamp(right)) || (stamp(left) && bare(right)))
        }
        Expr::Between(Between { expr, negated: false, low, high }) => bare(expr) && stamp(low) && stamp(high),
        _ => false,
    }
}

fn narrow(scan: &mut ScanFilter, op: Operator, ns: i64) {
    let (start, end) = match op {
        Operator::Eq => (Some(ns), Some(ns)),
        Operator::Gt => (Some(ns.saturating_add(1)), None),
        Operator::GtEq => (Some(ns), None),
        Operator::Lt => (None, Some(ns.saturating_sub(1))),
        Operator::LtEq => (None, Some(ns)),
        _ => (None, None),
    };
    if let Some(start) = start {
        scan.start_ns = Some(scan.start_ns.map_or(start, |s| s.max(start)));
    }
    if let Some(end) = end {
        scan.end_ns = Some(scan.end_ns.map_or(end, |e| e.min(end)));
    }
}

/// A column, possibly under casts (dictionary to string, timestamp zone changes).
fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        Expr::Cast(cast) => column_name(&cast.expr),
        Expr::TryCast(cast) => column_name(&cast.expr),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        Expr::Cast(cast) => literal(&cast.expr),
        _ => None,
    }
}

fn timestamp_ns(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

fn string_value(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => Some(s),
        ScalarValue::Dictionary(_, inner) => string_value(inner),
        _ => None,
    }
}

/// How a Vigil table takes `filters`: time bounds on `time_column` and filters on label
/// columns alone exactly (see [`LabelFilters`]), everything else only to prune. Exact label
/// filters are not evaluated again above the scan: where the series index chose the series,
/// a row is never tested at all.
pub(crate) fn pushdown(
    filters: &[&Expr],
    time_column: &str,
    is_label: impl Fn(&str) -> bool,
) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| {
            if is_time_bound(f, time_column) || is_label_filter(f, &is_label) {
                TableProviderFilterPushDown::Exact
            } else {
                TableProviderFilterPushDown::Inexact
            }
        })
        .collect()
}

/// True for a filter that reads label columns and nothing else.
pub(crate) fn is_label_filter(expr: &Expr, is_label: impl Fn(&str) -> bool) -> bool {
    let columns = expr.column_refs();
    !columns.is_empty() && columns.iter().all(|c| is_label(&c.name))
}

/// A scan's filters on label columns, which it promised to apply exactly, and the columns
/// its inputs read to apply them where the series index did not (the projection DataFusion
/// asked for, then the filters' other columns).
pub(crate) struct LabelFilters {
    pub filters: Vec<Expr>,
    /// The columns DataFusion asked for (`None`: all).
    pub projection: Option<Vec<usize>>,
    /// `projection` and then the filters' columns it lacks.
    pub read: Option<Vec<usize>>,
}

impl LabelFilters {
    pub(crate) fn new(
        filters: &[Expr],
        schema: &SchemaRef,
        projection: Option<&Vec<usize>>,
        is_label: impl Fn(&str) -> bool,
    ) -> LabelFilters {
        let filters: Vec<Expr> = filters.iter().filter(|f| is_label_filter(f, &is_label)).cloned().collect();
        let read = projection.map(|projection| {
            let mut read = projection.clone();
            for filter in &filters {
                for column in filter.column_refs() {
                    if let Ok(index) = schema.index_of(&column.name)
                        && !read.contains(&index)
                    {
                        read.push(index);
                    }
                }
            }
            read
        });
        LabelFilters { filters, projection: projection.cloned(), read }
    }

    /// `input` (read with [`Self::read`]'s columns) filtered by the label filters, in the
    /// projection's columns.
    pub(crate) fn apply(&self, state: &dyn Session, input: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(predicate) = conjunction(self.filters.iter().cloned()) else { return Ok(input) };
        let df_schema = DFSchema::try_from(input.schema())?;
        let predicate = state.create_physical_expr(predicate, &df_schema)?;
        let kept = match (&self.projection, &self.read) {
            (Some(projection), Some(read)) if read.len() > projection.len() => Some((0..projection.len()).collect()),
            _ => None,
        };
        Ok(Arc::new(FilterExecBuilder::new(predicate, input).apply_projection(kept)?.build()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(v), Some("UTC".into())))
    }

    #[test]
    fn time_bounds_and_label_equality_are_extracted() {
        let filters = vec![
            col("timestamp").gt_eq(ts(100)),
            ts(200).gt(col("timestamp")),
            col("job").eq(lit("api")).and(col("value").gt(lit(1.0))),
            col("instance").not_eq(lit("x")),
        ];
        let scan = scan_filter(&filters, "timestamp", |c| c == "job" || c == "instance");
        assert_eq!(scan.start_ns, Some(100));
        assert_eq!(scan.end_ns, Some(199));
        assert_eq!(scan.label_equals, vec![("job".to_string(), "api".to_string())]);
    }

    #[test]
    fn only_bare_time_comparisons_are_exact() {
        assert!(is_time_bound(&col("timestamp").gt_eq(ts(1)).and(col("timestamp").lt(ts(9))), "timestamp"));
        assert!(is_time_bound(&ts(1).lt(col("timestamp")), "timestamp"));
        assert!(!is_time_bound(&col("timestamp").not_eq(ts(1)), "timestamp"));
        assert!(!is_time_bound(&col("timestamp").gt(ts(1)).or(col("timestamp").lt(ts(0))), "timestamp"));
        assert!(!is_time_bound(&col("start").gt(ts(1)), "timestamp"));
        assert!(!is_time_bound(&col("timestamp").gt(ts(1)).and(col("job").eq(lit("a"))), "timestamp"));
    }

    #[test]
    fn between_and_second_precision_literals() {
        let filters = vec![col("start").between(
            lit(ScalarValue::TimestampSecond(Some(1), None)),
            lit(ScalarValue::TimestampSecond(Some(2), None)),
        )];
        let scan = scan_filter(&filters, "start", |_| false);
        assert_eq!((scan.start_ns, scan.end_ns), (Some(1_000_000_000), Some(2_000_000_000)));
    }
}
