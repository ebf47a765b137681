//! `/api/v1/query_exemplars`: the exemplars stored for the series an expression selects,
//! within a time range, grouped by series as Prometheus answers.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray, MapArray};
use datafusion::arrow::datatypes::{Float64Type, TimestampNanosecondType};
use promql_parser::label::Matcher;
use promql_parser::parser::{Expr, VectorSelector};

use super::PromError;
use super::result::Labels;
use crate::QueryEngine;

/// One exemplar: its labels, value and time.
#[derive(Clone, Debug, PartialEq)]
pub struct ExemplarPoint {
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: i64,
}

/// The exemplars of one series (labels with `__name__`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExemplarSeries {
    pub series_labels: Labels,
    pub exemplars: Vec<ExemplarPoint>,
}

/// Every vector selector of an expression.
pub(crate) fn selectors<'a>(expr: &'a Expr, out: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::VectorSelector(vs) => out.push(vs),
        Expr::MatrixSelector(ms) => out.push(&ms.vs),
        Expr::Aggregate(a) => {
            selectors(&a.expr, out);
            if let Some(param) = &a.param {
                selectors(param, out);
            }
        }
        Expr::Unary(u) => selectors(&u.expr, out),
        Expr::Binary(b) => {
            selectors(&b.lhs, out);
            selectors(&b.rhs, out);
        }
        Expr::Paren(p) => selectors(&p.expr, out),
        Expr::Subquery(s) => selectors(&s.expr, out),
        Expr::Call(call) => call.args.args.iter().for_each(|arg| selectors(arg, out)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

fn map_at(column: &MapArray, row: usize) -> Labels {
    let mut labels = Labels::new();
    if column.is_null(row) {
        return labels;
    }
    let entries = column.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    for i in 0..entries.len() {
        if !values.is_null(i) {
            labels.insert(keys.value(i).to_string(), values.value(i).to_string());
        }
    }
    labels
}

impl QueryEngine {
    /// Exemplars of the series `query` selects, between `start_ms` and `end_ms`.
    pub async fn exemplars(&self, query: &str, start_ms: i64, end_ms: i64) -> Result<Vec<ExemplarSeries>, PromError> {
        let expr = self.parse_promql(query).await?;
        let mut found = Vec::new();
        selectors(&expr, &mut found);
        let mut grouped: BTreeMap<Labels, Vec<ExemplarPoint>> = BTreeMap::new();
        for selector in found {
            let Some(name) = super::metric_name(selector) else { continue };
            let sql = format!(
                "SELECT timestamp, series_labels, labels, value FROM exemplars WHERE metric = '{}' \
                 AND timestamp >= to_timestamp_millis({start_ms}) AND timestamp <= to_timestamp_millis({end_ms})",
                name.replace('\'', "''")
            );
            let result = self.sql(&sql).await.map_err(|e| PromError::Execution(e.to_string()))?;
            let matchers: Vec<&Matcher> = selector.matchers.matchers.iter().filter(|m| m.name != "__name__").collect();
            for batch in &result.batches {
                let times = batch.column(0).as_primitive::<TimestampNanosecondType>();
                let series = batch.column(1).as_map();
                let labels = batch.column(2).as_map();
                let values = batch.column(3).as_primitive::<Float64Type>();
                for row in 0..batch.num_rows() {
                    let mut series_labels = map_at(series, row);
                    if !matchers.iter().all(|m| m.is_match(series_labels.get(&m.name).map_or("", String::as_str))) {
                        continue;
                    }
                    series_labels.insert("__name__".into(), name.to_string());
                    let point = ExemplarPoint {
                        labels: map_at(labels, row),
                        value: values.value(row),
                        timestamp_ms: super::udf::nanos_to_ms(times.value(row)),
                    };
                    grouped.entry(series_labels).or_default().push(point);
                }
            }
        }
        Ok(grouped
            .into_iter()
            .map(|(series_labels, mut exemplars)| {
                exemplars.sort_by_key(|e| e.timestamp_ms);
                exemplars.dedup();
                ExemplarSeries { series_labels, exemplars }
            })
            .collect())
    }
}
