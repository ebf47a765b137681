//! Reads, from the filters DataFusion pushes into a scan, what storage can use before it
//! opens anything: a time range on the table's time column and equality on label columns.
//! Everything else is left to DataFusion (pushdown is `Inexact`).

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};

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
            } else if op == Operator::Eq && is_label(column) {
                if let Some(value) = string_value(literal) {
                    scan.label_equals.push((column.to_string(), value.to_string()));
                }
            }
        }
        Expr::Between(Between { expr, negated: false, low, high }) => {
            if column_name(expr) == Some(time_column) {
                if let (Some(lo), Some(hi)) = (literal(low).and_then(timestamp_ns), literal(high).and_then(timestamp_ns)) {
                    narrow(scan, Operator::GtEq, lo);
                    narrow(scan, Operator::LtEq, hi);
                }
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

/// How a Vigil table takes `filters`: time bounds on `time_column` exactly (they are applied
/// row by row), everything else only to prune.
pub(crate) fn pushdown(filters: &[&Expr], time_column: &str) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| if is_time_bound(f, time_column) { TableProviderFilterPushDown::Exact } else { TableProviderFilterPushDown::Inexact })
        .collect()
}
