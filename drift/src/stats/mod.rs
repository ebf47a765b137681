//! Drift statistics between a reference distribution and a current one.
//!
//! Conventions (the README repeats them; `drift/testdata` checks them against scipy 1.17):
//! - binned statistics compare bin proportions p (reference) and q (current);
//! - PSI = Σ (q − p)·ln(q / p) with both proportions clipped below at 1e-4, not renormalised;
//! - KL = KL(reference ‖ current) in nats on the clipped proportions renormalised to sum 1
//!   (scipy's `entropy(p, q)`);
//! - Jensen–Shannon distance = √JSD, in nats and in bits (scipy's `jensenshannon`);
//! - Hellinger = √(1 − Σ √(p·q));
//! - chi-square: the 2×k contingency test on counts (no continuity correction), bins empty on
//!   both sides dropped, p-value from the χ² distribution with k − 1 degrees of freedom;
//! - KS and Wasserstein-1 compare the raw values; Wasserstein-1 is also given divided by the
//!   reference's standard deviation (ddof 0).

use std::collections::BTreeMap;

use statrs::distribution::{ChiSquared, ContinuousCDF};

pub mod ks;

/// Proportions below this are clipped to it in PSI and KL, so that an empty bin is finite.
pub const EPSILON: f64 = 1e-4;

/// Every statistic Vigil computes for one window, by the names `drift_scores` uses.
pub type Scores = BTreeMap<&'static str, f64>;

/// Counts per bin; both sides have the same bins.
pub fn binned(reference: &[u64], current: &[u64]) -> Scores {
    let p = proportions(reference);
    let q = proportions(current);
    let mut scores = Scores::new();
    scores.insert("psi", psi(&p, &q));
    scores.insert("kl", kl(&p, &q));
    scores.insert("js_distance", js_distance(&p, &q, None));
    scores.insert("js_distance_base2", js_distance(&p, &q, Some(2.0)));
    scores.insert("hellinger", hellinger(&p, &q));
    let (chi_square, chi_square_p) = chi_square(reference, current);
    scores.insert("chi_square", chi_square);
    scores.insert("chi_square_p", chi_square_p);
    scores
}

/// Statistics on raw values, both sorted ascending and non-empty.
pub fn raw(reference: &[f64], current: &[f64]) -> Scores {
    let mut scores = Scores::new();
    if let Some(test) = ks::ks_2samp(reference, current) {
        scores.insert("ks", test.statistic);
        scores.insert("ks_p", test.p_value);
    }
    if let Some(distance) = wasserstein(reference, current) {
        scores.insert("wasserstein", distance);
        let std = std_dev(reference);
        if std > 0.0 {
            scores.insert("wasserstein_normalized", distance / std);
        }
    }
    scores
}

pub fn proportions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|c| *c as f64 / total as f64).collect()
}

pub fn psi(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(p, q)| {
            let (p, q) = (p.max(EPSILON), q.max(EPSILON));
            (q - p) * (q / p).ln()
        })
        .sum()
}

pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    let clip = |v: &[f64]| -> Vec<f64> {
        let clipped: Vec<f64> = v.iter().map(|x| x.max(EPSILON)).collect();
        let total: f64 = clipped.iter().sum();
        clipped.into_iter().map(|x| x / total).collect()
    };
    let (p, q) = (clip(p), clip(q));
    p.iter().zip(&q).map(|(p, q)| relative_entropy(*p, *q)).sum()
}

/// √(JSD), JSD in nats or, with `base`, in that base.
pub fn js_distance(p: &[f64], q: &[f64], base: Option<f64>) -> f64 {
    let mut divergence: f64 = p
        .iter()
        .zip(q)
        .map(|(p, q)| {
            let m = (p + q) / 2.0;
            relative_entropy(*p, m) + relative_entropy(*q, m)
        })
        .sum();
    if let Some(base) = base {
        divergence /= base.ln();
    }
    (divergence / 2.0).max(0.0).sqrt()
}

/// x·ln(x / y), 0 when x is 0 (scipy's `rel_entr`).
fn relative_entropy(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y == 0.0 {
        f64::INFINITY
    } else {
        x * (x / y).ln()
    }
}

pub fn hellinger(p: &[f64], q: &[f64]) -> f64 {
    let overlap: f64 = p.iter().zip(q).map(|(p, q)| (p * q).sqrt()).sum();
    (1.0 - overlap).max(0.0).sqrt()
}

/// The χ² statistic of the 2×k table (reference, current) and its p-value.
pub fn chi_square(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let columns: Vec<(f64, f64)> =
        reference.iter().zip(current).filter(|(r, c)| **r + **c > 0).map(|(r, c)| (*r as f64, *c as f64)).collect();
    let rows = [columns.iter().map(|c| c.0).sum::<f64>(), columns.iter().map(|c| c.1).sum::<f64>()];
    let total = rows[0] + rows[1];
    let dof = columns.len().saturating_sub(1);
    if dof == 0 || rows[0] == 0.0 || rows[1] == 0.0 {
        return (0.0, 1.0);
    }
    let statistic: f64 = columns
        .iter()
        .map(|(r, c)| {
            let column = r + c;
            let expected = [rows[0] * column / total, rows[1] * column / total];
            (r - expected[0]).powi(2) / expected[0] + (c - expected[1]).powi(2) / expected[1]
        })
        .sum();
    let p_value = ChiSquared::new(dof as f64).map(|d| d.sf(statistic)).unwrap_or(f64::NAN);
    (statistic, p_value)
}

/// The first Wasserstein distance between two sorted samples: ∫ |F_ref − F_cur| dx.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> Option<f64> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut distance = 0.0;
    let mut x = reference[0].min(current[0]);
    loop {
        while i < reference.len() && reference[i] <= x {
            i += 1;
        }
        while j < current.len() && current[j] <= x {
            j += 1;
        }
        let next = match (reference.get(i), current.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        distance += (i as f64 / n1 - j as f64 / n2).abs() * (next - x);
        x = next;
    }
    Some(distance)
}

/// Population standard deviation (ddof 0).
pub fn std_dev(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mean = mean(values);
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}
