//! Scoring, pure: a window's current data binned against its reference, and every
//! statistic the data allows. No I/O here; the engine reads the data and writes the scores.

use crate::model::DriftStatus;
use crate::reference::{Bins, Reference};
use crate::stats;

/// The current data of one window, as read back from `drift_values`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowData {
    pub values: Vec<f64>,
    pub categories: Vec<String>,
    /// Bin counts, with the reference they were binned against.
    pub binned: Vec<(String, Vec<u64>)>,
}

/// A window binned against its reference, and its statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `Ok` or `InsufficientSamples`.
    pub status: DriftStatus,
    /// Count per reference bin.
    pub counts: Vec<u64>,
    pub current: u64,
    pub stale: u64,
    pub scores: stats::Scores,
}

/// Bins the window against the reference and computes every statistic the data allows.
pub fn evaluate(reference: &Reference, data: &WindowData, min_samples: u64) -> Evaluation {
    let mut counts = vec![0u64; reference.bins.len()];
    let mut stale = 0u64;
    match &reference.bins {
        Bins::Numeric { edges } => {
            for v in &data.values {
                counts[Bins::numeric_bin(edges, *v)] += 1;
            }
            stale += data.categories.len() as u64;
        }
        Bins::Categorical { categories } => {
            for c in &data.categories {
                counts[Bins::category_bin(categories, c)] += 1;
            }
            stale += data.values.len() as u64;
        }
    }
    let mut binned_any = false;
    for (id, binned) in &data.binned {
        if *id == reference.id && binned.len() == counts.len() {
            binned_any = true;
            counts.iter_mut().zip(binned).for_each(|(c, b)| *c += b);
        } else {
            stale += binned.iter().sum::<u64>();
        }
    }
    let current: u64 = counts.iter().sum();
    if reference.sample_count() < min_samples || current < min_samples {
        return Evaluation {
            status: DriftStatus::InsufficientSamples,
            counts,
            current,
            stale,
            scores: stats::Scores::new(),
        };
    }
    let mut scores = stats::binned(&reference.counts, &counts);
    // KS and Wasserstein need raw values on both sides, and only raw values in the window.
    if let (Bins::Numeric { .. }, Some(reference_values), false) = (&reference.bins, &reference.values, binned_any) {
        let mut current_values = data.values.clone();
        current_values.sort_by(f64::total_cmp);
        scores.extend(stats::raw(reference_values, &current_values));
    }
    Evaluation { status: DriftStatus::Ok, counts, current, stale, scores }
}
