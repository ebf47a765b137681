//! Metadata queries of the Prometheus API: series, label names, label values.

use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::prelude::ident;
use promql_parser::parser::Expr as PromExpr;
use vigil_storage::schema::{FixedTable, metric_name_of_table};

use super::compile::{Compiler, NAME};
use super::result::Labels;
use super::{DEFAULT_LOOKBACK, EvalRange, PromError};
use crate::QueryEngine;

impl QueryEngine {
    /// Label sets of the series the selectors match in `[start_ms, end_ms]`.
    pub async fn series(&self, selectors: &[String], start_ms: i64, end_ms: i64) -> Result<Vec<Labels>, PromError> {
        let (engine, selectors) = (self.clone(), selectors.to_vec());
        self.within_timeout(async move { engine.series_unbounded(&selectors, start_ms, end_ms).await }).await
    }

    async fn series_unbounded(
        &self,
        selectors: &[String],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Labels>, PromError> {
        let compiler = Compiler::new(self, EvalRange::range(start_ms, end_ms, 1), DEFAULT_LOOKBACK.as_millis() as i64);
        let mut out: BTreeSet<Labels> = BTreeSet::new();
        for text in selectors {
            let selector = match self.parse_promql(text).await? {
                PromExpr::VectorSelector(selector) => selector,
                _ => return Err(PromError::BadData(format!("match[] must be a series selector, not {text:?}"))),
            };
            let Some((frame, labels)) = compiler.selector_series(&selector, start_ms, end_ms).await? else { continue };
            let batches = frame.select(labels.iter().map(ident).collect::<Vec<_>>())?.distinct()?.collect().await?;
            for batch in batches {
                for row in 0..batch.num_rows() {
                    let mut set = Labels::new();
                    for (i, name) in labels.iter().enumerate() {
                        let column = batch.column(i).as_string::<i32>();
                        if !column.is_null(row) && !column.value(row).is_empty() {
                            set.insert(name.clone(), column.value(row).to_string());
                        }
                    }
                    out.insert(set);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every metric name (table) Vigil holds.
    pub fn metric_names(&self) -> Vec<String> {
        self.storage()
            .table_names()
            .into_iter()
            .filter(|t| FixedTable::from_name(t).is_none())
            .map(|t| metric_name_of_table(&t).to_string())
            .collect()
    }

    /// Label names: of the matching series when selectors are given, else of every metric.
    pub async fn label_names(
        &self,
        selectors: &[String],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, PromError> {
        if !selectors.is_empty() {
            let names: BTreeSet<String> =
                self.series(selectors, start_ms, end_ms).await?.into_iter().flat_map(|l| l.into_keys()).collect();
            return Ok(names.into_iter().collect());
        }
        // One pass over the manifests and buffers, no schema built per table.
        let mut names = self.storage().metric_label_names();
        names.insert(NAME.to_string());
        Ok(names.into_iter().collect())
    }

    /// Values of one label over the matching series (all series when no selector is given).
    pub async fn label_values(
        &self,
        name: &str,
        selectors: &[String],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, PromError> {
        let selectors: Vec<String> = if selectors.is_empty() {
            if name == NAME {
                return Ok(self.metric_names());
            }
            vec![format!("{{{name}!=\"\"}}")]
        } else {
            selectors.to_vec()
        };
        let values: BTreeSet<String> =
            self.series(&selectors, start_ms, end_ms).await?.into_iter().filter_map(|mut l| l.remove(name)).collect();
        Ok(values.into_iter().collect())
    }
}
