//! What clients post: references (`POST /api/v1/drift/reference`) and current data or
//! precomputed scores (`POST /api/v1/drift`), validated whole before anything is stored.

use std::sync::Arc;

use serde::Serialize;
use vigil_storage::schema::{DRIFT_STATISTICS, FixedTable};
use vigil_storage::{TableRows, WriteBatch};

use crate::DriftError;
use crate::engine::DriftEngine;
use crate::model::{DriftStatus, FeatureKey, WindowOutcome, rfc3339, statistic_name};
use crate::reference::{Bins, Reference};
use crate::request::{self, DriftRequest, FeatureKind, RawValues, ReferenceRequest, invalid};
use crate::rows::{counts_batch, score_batch, values_batch};

/// What a drift post stored.
#[derive(Clone, Debug, Serialize)]
pub struct Accepted {
    #[serde(flatten)]
    pub key: FeatureKey,
    pub accepted: AcceptedCount,
    pub window_start: String,
    pub window_end: String,
    pub reference_id: Option<String>,
    pub warnings: Vec<String>,
}

/// How much a drift post carried, serialised as `{"values": n}`, `{"counts": n}` or
/// `{"scores": n}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedCount {
    /// Raw values.
    Values(u64),
    /// The sum of the posted bin counts.
    Counts(u64),
    /// Precomputed statistics.
    Scores(u64),
}

impl AcceptedCount {
    pub fn count(self) -> u64 {
        match self {
            AcceptedCount::Values(n) | AcceptedCount::Counts(n) | AcceptedCount::Scores(n) => n,
        }
    }
}

impl DriftEngine {
    /// `POST /api/v1/drift/reference`: freezes bins and stores them.
    pub async fn register_reference(&self, body: &[u8]) -> Result<Arc<Reference>, DriftError> {
        let request: ReferenceRequest = request::parse(body, "a drift reference")?;
        let key = request::feature_key(&request.model, &request.version, &request.feature)?;
        let created = self.now_ns();
        let limit = self.inner.options.max_values_per_request;
        let pinned = request.from.is_some() || request.to.is_some();
        let sources = [request.values.is_some(), request.counts.is_some(), pinned].iter().filter(|s| **s).count();
        if sources != 1 {
            return Err(invalid(
                "a reference needs exactly one of values, counts (with edges or categories), or from/to",
                "post the training values, pre-binned counts, or a window of stored data to pin",
            ));
        }
        let reference = if let Some(values) = &request.values {
            let kind = request.kind.or(request.edges.as_ref().map(|_| FeatureKind::Numeric));
            match request::raw_values(values, kind, limit)? {
                RawValues::Numeric(values) => {
                    if let Some(edges) = &request.edges {
                        request::check_edges(edges)?;
                    }
                    Reference::numeric(key, created, values, request.edges.clone())
                }
                RawValues::Categorical(values) => Reference::categorical(key, created, &values),
            }
        } else if let Some(counts) = request.counts.clone() {
            binned_reference(key, created, &request, counts)?
        } else {
            let (Some(from), Some(to)) = (&request.from, &request.to) else {
                return Err(invalid(
                    "a pinned reference needs both from and to",
                    "give the window of stored data to freeze",
                ));
            };
            let (from, to) = (request::time_ns(from, "from")?, request::time_ns(to, "to")?);
            if to <= from {
                return Err(invalid("to is not after from", "give a non-empty time range"));
            }
            let data = self.window_data(&key, from, to).await?;
            match request.kind {
                Some(FeatureKind::Categorical) => {
                    if data.categories.is_empty() {
                        return Err(invalid(
                            format!("no categories of {key} are stored between from and to"),
                            "pin a window that holds current data",
                        ));
                    }
                    Reference::categorical(key, created, &data.categories)
                }
                _ if !data.values.is_empty() => Reference::numeric(key, created, data.values, request.edges.clone()),
                _ if !data.categories.is_empty() => Reference::categorical(key, created, &data.categories),
                _ => {
                    return Err(invalid(
                        format!("no raw values of {key} are stored between from and to"),
                        "pin a window that holds raw current data",
                    ));
                }
            }
        };
        if reference.sample_count() == 0 {
            return Err(invalid("the reference holds no values", "post at least one value or a non-zero count"));
        }
        let batch = reference.to_batch()?;
        self.storage()
            .write(WriteBatch {
                metrics: Vec::new(),
                rows: vec![TableRows { table: FixedTable::DriftReferences, batch }],
            })
            .await?;
        let reference = Arc::new(reference);
        self.inner.references.write().insert(reference.key.clone(), reference.clone());
        // The open window is now compared with other bins.
        self.inner.dirty.lock().insert((reference.key.clone(), self.window_start(self.now_ns())));
        metrics::counter!("vigil_drift_references_total").increment(1);
        Ok(reference)
    }

    /// `POST /api/v1/drift`: raw values, bin counts or precomputed scores for one window.
    pub async fn ingest(&self, body: &[u8]) -> Result<Accepted, DriftError> {
        let request: DriftRequest = request::parse(body, "a drift post")?;
        let key = request::feature_key(&request.model, &request.version, &request.feature)?;
        let now = self.now_ns();
        let at = match &request.timestamp {
            Some(t) => request::time_ns(t, "timestamp")?,
            None => now,
        };
        if at > now + 10 * 60 * 1_000_000_000 {
            return Err(invalid(
                format!("timestamp {} is in the future", rfc3339(at)),
                "send the time the values were observed, at most 10 minutes ahead of the server's clock",
            ));
        }
        let sources = [request.values.is_some(), request.counts.is_some(), request.scores.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        if sources != 1 {
            return Err(invalid(
                "a drift post needs exactly one of values, counts or scores",
                "post raw values, counts against the reference's bins, or precomputed scores",
            ));
        }
        let reference = self.reference(&key);
        let start = self.window_start(at);
        let mut warnings = Vec::new();
        let (rows, accepted) = if let Some(values) = &request.values {
            let kind = reference.as_ref().map(|r| match r.bins {
                Bins::Numeric { .. } => FeatureKind::Numeric,
                Bins::Categorical { .. } => FeatureKind::Categorical,
            });
            let values = request::raw_values(values, kind, self.inner.options.max_values_per_request)?;
            if reference.is_none() {
                warnings.push(format!(
                    "no reference is registered for {key} yet: the values are stored and scored once one is"
                ));
            }
            let count = values.len();
            (vec![values_batch(&key, at, &values)?], AcceptedCount::Values(count as u64))
        } else if let Some(counts) = &request.counts {
            let reference = reference.as_ref().ok_or_else(|| DriftError::NoReference(key.clone()))?;
            if let Some(id) = &request.reference_id
                && *id != reference.id
            {
                return Err(invalid(
                    format!("reference_id {id:?} is not the reference in force for {key} ({:?})", reference.id),
                    "bin against the current reference's edges (GET /api/v1/drift/reference) and send its id",
                ));
            }
            if counts.len() != reference.bins.len() {
                return Err(invalid(
                    format!("{} counts for {} bins", counts.len(), reference.bins.len()),
                    "send one count per bin of the reference: edges + 1 for numeric features, categories + 1 (__other__) for categorical ones",
                ));
            }
            let total: u64 = counts.iter().sum();
            (vec![counts_batch(&key, at, &reference.id, counts)?], AcceptedCount::Counts(total))
        } else {
            let scores = request
                .scores
                .as_ref()
                .map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>())
                .unwrap_or_default();
            if scores.is_empty() {
                return Err(invalid(
                    "scores is empty",
                    format!("name at least one of {}", DRIFT_STATISTICS.join(", ")),
                ));
            }
            for (name, value) in &scores {
                if !DRIFT_STATISTICS.contains(&name.as_str()) {
                    return Err(invalid(
                        format!("unknown drift statistic {name:?}"),
                        format!("one of {}", DRIFT_STATISTICS.join(", ")),
                    ));
                }
                if !value.is_finite() {
                    return Err(invalid(format!("scores.{name} is not a finite number"), "send finite numbers"));
                }
            }
            let mut outcome = WindowOutcome::new(key.clone(), start, self.window_ns(), DriftStatus::Ok);
            outcome.scores = scores.iter().filter_map(|(k, v)| statistic_name(k).map(|s| (s, *v))).collect();
            let batch = score_batch(&[(outcome.clone(), at)], self.window_ns())?;
            self.storage().write(batch).await?;
            let outcome_window = (outcome.window_start.clone(), outcome.window_end.clone());
            self.remember(outcome);
            metrics::counter!("vigil_drift_scores_posted_total").increment(scores.len() as u64);
            return Ok(Accepted {
                key,
                accepted: AcceptedCount::Scores(scores.len() as u64),
                window_start: outcome_window.0,
                window_end: outcome_window.1,
                reference_id: None,
                warnings,
            });
        };
        let rows = rows.into_iter().map(|batch| TableRows { table: FixedTable::DriftValues, batch }).collect();
        self.storage().write(WriteBatch { metrics: Vec::new(), rows }).await?;
        self.inner.dirty.lock().insert((key.clone(), start));
        metrics::counter!("vigil_drift_values_total").increment(accepted.count());
        Ok(Accepted {
            key,
            accepted,
            window_start: rfc3339(start),
            window_end: rfc3339(start + self.window_ns()),
            reference_id: reference.map(|r| r.id.clone()),
            warnings,
        })
    }
}

/// Pre-binned references: numeric with `edges`, categorical with `categories`.
fn binned_reference(
    key: FeatureKey,
    created: i64,
    request: &ReferenceRequest,
    counts: Vec<u64>,
) -> Result<Reference, DriftError> {
    let bins = match (&request.edges, &request.categories) {
        (Some(edges), None) => {
            request::check_edges(edges)?;
            Bins::Numeric { edges: edges.clone() }
        }
        (None, Some(categories)) => {
            let mut sorted = categories.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != categories.len() {
                return Err(invalid("categories holds duplicates", "name each category once"));
            }
            // Counts follow the categories as given; reorder them with the sort.
            let mut reordered = vec![0u64; sorted.len() + 1];
            if counts.len() != categories.len() && counts.len() != categories.len() + 1 {
                return Err(invalid(
                    format!("{} counts for {} categories", counts.len(), categories.len()),
                    "one count per category, optionally followed by the count of __other__",
                ));
            }
            for (category, count) in categories.iter().zip(&counts) {
                reordered[Bins::category_bin(&sorted, category)] = *count;
            }
            if counts.len() == categories.len() + 1 {
                reordered[sorted.len()] = counts[categories.len()];
            }
            return Ok(Reference::binned(key, created, Bins::Categorical { categories: sorted }, reordered));
        }
        _ => {
            return Err(invalid(
                "pre-binned counts need either edges or categories",
                "numeric: edges (inner, ascending) and edges + 1 counts; categorical: categories and their counts",
            ));
        }
    };
    if counts.len() != bins.len() {
        return Err(invalid(
            format!("{} counts for {} bins", counts.len(), bins.len()),
            "give one count per bin: the number of inner edges + 1",
        ));
    }
    Ok(Reference::binned(key, created, bins, counts))
}
