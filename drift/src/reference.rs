//! References: the frozen bins a feature's current data is compared with.
//!
//! Numeric features get nine inner edges at the reference's deciles (numpy's default
//! `linear` quantile method) and outer edges at ±∞; a value equal to an edge falls in the
//! lower bin (upper-inclusive, like Prometheus `le` and OTLP explicit bounds). Duplicate
//! edges (heavy ties) are kept: the bins between them stay empty. Categorical features get one
//! bin per reference category, sorted, plus one `__other__` bin for categories it never saw.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, ListBuilder, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt64Array, UInt64Builder,
};
use datafusion::arrow::datatypes::{Float64Type, TimestampNanosecondType, UInt64Type};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use vigil_storage::schema::FixedTable;

use crate::DriftError;
use crate::model::FeatureKey;
use crate::rows::{dictionary_column, strings};
use crate::stats;

/// A `drift_references` batch that is not what Vigil writes.
fn malformed(what: impl std::fmt::Display) -> DriftError {
    DriftError::Internal(format!("drift_references {what}"))
}

/// The bin of categories a categorical reference never saw.
pub const OTHER_CATEGORY: &str = "__other__";

/// The quantiles numeric edges sit at.
const DECILES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

#[derive(Clone, Debug, PartialEq)]
pub enum Bins {
    /// Inner edges, ascending (duplicates allowed); there is one bin more than edges.
    Numeric { edges: Vec<f64> },
    /// Reference categories, sorted; the last bin is [`OTHER_CATEGORY`].
    Categorical { categories: Vec<String> },
}

impl Bins {
    pub fn len(&self) -> usize {
        match self {
            Bins::Numeric { edges } => edges.len() + 1,
            Bins::Categorical { categories } => categories.len() + 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Bins::Numeric { .. } => "numeric",
            Bins::Categorical { .. } => "categorical",
        }
    }

    /// The bin of a numeric value: how many edges lie strictly below it.
    pub fn numeric_bin(edges: &[f64], value: f64) -> usize {
        edges.partition_point(|edge| *edge < value)
    }

    /// The bin of a category.
    pub fn category_bin(categories: &[String], category: &str) -> usize {
        categories.binary_search_by(|c| c.as_str().cmp(category)).unwrap_or(categories.len())
    }
}

/// Edges at the deciles of sorted values, as `numpy.quantile(values, q, method="linear")`.
pub fn decile_edges(sorted: &[f64]) -> Vec<f64> {
    let n = sorted.len();
    DECILES
        .iter()
        .map(|q| {
            let virtual_index = (n - 1) as f64 * q;
            let below = virtual_index.floor();
            let gamma = virtual_index - below;
            let below = below as usize;
            let above = (below + 1).min(n - 1);
            lerp(sorted[below], sorted[above], gamma)
        })
        .collect()
}

/// numpy's `_lerp`: exact at both ends, computed from the nearer end.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

/// A registered reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub id: String,
    pub key: FeatureKey,
    pub created_ns: i64,
    pub bins: Bins,
    pub counts: Vec<u64>,
    /// Raw numeric values, sorted; None when the reference came pre-binned.
    pub values: Option<Arc<Vec<f64>>>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
}

impl Reference {
    /// Built from raw numeric values (finite, at least one): decile edges unless given.
    pub fn numeric(key: FeatureKey, created_ns: i64, mut values: Vec<f64>, edges: Option<Vec<f64>>) -> Reference {
        values.sort_by(f64::total_cmp);
        let edges = edges.unwrap_or_else(|| decile_edges(&values));
        let mut counts = vec![0u64; edges.len() + 1];
        for v in &values {
            counts[Bins::numeric_bin(&edges, *v)] += 1;
        }
        let (mean, std) = (stats::mean(&values), stats::std_dev(&values));
        Reference::assemble(
            key,
            created_ns,
            Bins::Numeric { edges },
            counts,
            Some(Arc::new(values)),
            Some(mean),
            Some(std),
        )
    }

    /// Built from category values: one bin per distinct category, plus `__other__`.
    pub fn categorical(key: FeatureKey, created_ns: i64, values: &[String]) -> Reference {
        let mut categories: Vec<String> = values.to_vec();
        categories.sort();
        categories.dedup();
        let mut counts = vec![0u64; categories.len() + 1];
        for v in values {
            counts[Bins::category_bin(&categories, v)] += 1;
        }
        Reference::assemble(key, created_ns, Bins::Categorical { categories }, counts, None, None, None)
    }

    /// Pre-binned: `counts` has one entry per bin.
    pub fn binned(key: FeatureKey, created_ns: i64, bins: Bins, counts: Vec<u64>) -> Reference {
        Reference::assemble(key, created_ns, bins, counts, None, None, None)
    }

    fn assemble(
        key: FeatureKey,
        created_ns: i64,
        bins: Bins,
        counts: Vec<u64>,
        values: Option<Arc<Vec<f64>>>,
        mean: Option<f64>,
        std: Option<f64>,
    ) -> Reference {
        let id = format!("ref-{}", uuid::Uuid::new_v4().simple());
        Reference { id, key, created_ns, bins, counts, values, mean, std }
    }

    pub fn sample_count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The reference as one `drift_references` row.
    pub fn to_batch(&self) -> Result<RecordBatch, ArrowError> {
        let mut edges = ListBuilder::new(Float64Builder::new());
        let mut categories = ListBuilder::new(StringBuilder::new());
        match &self.bins {
            Bins::Numeric { edges: e } => {
                edges.append_value(e.iter().map(|v| Some(*v)));
                categories.append_null();
            }
            Bins::Categorical { categories: c } => {
                edges.append_null();
                categories.append_value(c.iter().map(|v| Some(v.as_str())));
            }
        }
        let mut counts = ListBuilder::new(UInt64Builder::new());
        counts.append_value(self.counts.iter().map(|c| Some(*c)));
        let mut values = ListBuilder::new(Float64Builder::new());
        match &self.values {
            Some(v) => values.append_value(v.iter().map(|x| Some(*x))),
            None => values.append_null(),
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(vec![self.created_ns]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![self.id.as_str()])),
            dictionary_column(&[self.key.model.as_str()]),
            dictionary_column(&[self.key.version.as_str()]),
            dictionary_column(&[self.key.feature.as_str()]),
            dictionary_column(&[self.bins.kind()]),
            Arc::new(edges.finish()),
            Arc::new(categories.finish()),
            Arc::new(counts.finish()),
            Arc::new(UInt64Array::from(vec![self.sample_count()])),
            Arc::new(Float64Array::from(vec![self.mean])),
            Arc::new(Float64Array::from(vec![self.std])),
            Arc::new(values.finish()),
        ];
        RecordBatch::try_new(FixedTable::DriftReferences.schema(), columns)
    }

    /// Every reference in a `drift_references` batch (columns by name, any order).
    pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Reference>, DriftError> {
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| malformed(format!("has no {name} column")));
        let text = |name: &str| -> Result<Vec<Option<String>>, DriftError> { Ok(strings(column(name)?.as_ref())?) };
        let times = column("timestamp")?
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(|| malformed("timestamp is not a timestamp"))?
            .clone();
        let (ids, models, versions, features, kinds) =
            (text("reference_id")?, text("model")?, text("version")?, text("feature")?, text("kind")?);
        let edges = column("edges")?.as_list_opt::<i32>().ok_or_else(|| malformed("edges is not a list"))?.clone();
        let categories =
            column("categories")?.as_list_opt::<i32>().ok_or_else(|| malformed("categories is not a list"))?.clone();
        let counts = column("counts")?.as_list_opt::<i32>().ok_or_else(|| malformed("counts is not a list"))?.clone();
        let values = column("values")?.as_list_opt::<i32>().ok_or_else(|| malformed("values is not a list"))?.clone();
        let means =
            column("mean")?.as_primitive_opt::<Float64Type>().ok_or_else(|| malformed("mean is not a float"))?.clone();
        let stds =
            column("std")?.as_primitive_opt::<Float64Type>().ok_or_else(|| malformed("std is not a float"))?.clone();
        let floats = |list: &datafusion::arrow::array::ListArray, row: usize| -> Option<Vec<f64>> {
            (!list.is_null(row)).then(|| list.value(row).as_primitive::<Float64Type>().values().to_vec())
        };
        let mut out = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let key = FeatureKey {
                model: models[row].clone().unwrap_or_default(),
                version: versions[row].clone().unwrap_or_default(),
                feature: features[row].clone().unwrap_or_default(),
            };
            let bins = if kinds[row].as_deref() == Some("categorical") {
                let list = categories.value(row);
                let names = strings(list.as_ref())?.into_iter().map(Option::unwrap_or_default).collect();
                Bins::Categorical { categories: names }
            } else {
                Bins::Numeric { edges: floats(&edges, row).unwrap_or_default() }
            };
            out.push(Reference {
                id: ids[row].clone().unwrap_or_default(),
                key,
                created_ns: times.value(row),
                bins,
                counts: counts.value(row).as_primitive::<UInt64Type>().values().to_vec(),
                values: floats(&values, row).map(Arc::new),
                mean: (!means.is_null(row)).then(|| means.value(row)),
                std: (!stds.is_null(row)).then(|| stds.value(row)),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_follow_numpy_linear() {
        // numpy.quantile([1,2,2,3,3,3,4,4,4,4], [.1,...,.9])
        let edges = decile_edges(&[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 4.0, 4.0, 4.0]);
        let expected = [1.9, 2.0, 2.6999999999999997, 3.0, 3.0, 3.3999999999999995, 4.0, 4.0, 4.0];
        assert_eq!(edges, expected);
    }

    #[test]
    fn values_on_an_edge_fall_in_the_lower_bin() {
        let edges = [1.0, 2.0, 2.0, 3.0];
        assert_eq!(Bins::numeric_bin(&edges, 0.5), 0);
        assert_eq!(Bins::numeric_bin(&edges, 1.0), 0);
        assert_eq!(Bins::numeric_bin(&edges, 2.0), 1);
        assert_eq!(Bins::numeric_bin(&edges, 2.5), 3);
        assert_eq!(Bins::numeric_bin(&edges, 9.0), 4);
    }

    #[test]
    fn single_value_reference_has_all_edges_equal() {
        let key = FeatureKey { model: "m".into(), version: String::new(), feature: "f".into() };
        let r = Reference::numeric(key, 0, vec![5.0; 7], None);
        assert_eq!(r.bins, Bins::Numeric { edges: vec![5.0; 9] });
        assert_eq!(r.counts, vec![7, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.std, Some(0.0));
    }

    #[test]
    fn row_round_trip() {
        let key = FeatureKey { model: "m".into(), version: "v1".into(), feature: "f".into() };
        let numeric = Reference::numeric(key.clone(), 42, vec![3.0, 1.0, 2.0], None);
        let categorical = Reference::categorical(key, 43, &["b".into(), "a".into(), "b".into()]);
        for r in [numeric, categorical] {
            let back = Reference::from_batch(&r.to_batch().unwrap()).unwrap();
            assert_eq!(back, vec![r]);
        }
    }
}
