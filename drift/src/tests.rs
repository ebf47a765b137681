//! Vigil's drift statistics against scipy 1.17 / numpy 2.4 (`drift/testdata`).

use serde_json::Value;

use crate::reference::{Bins, Reference};
use crate::stats::ks;
use crate::{FeatureKey, WindowData, evaluate};

const EXPECTED: &str = include_str!("../testdata/expected.json");
const KS_CASES: &str = include_str!("../testdata/ks_cases.json");

fn csv(name: &str) -> (Vec<String>, Vec<String>) {
    let text = match name {
        "normal_shift_n1000" => include_str!("../testdata/normal_shift_n1000.csv"),
        "categorical_shift_new_cat" => include_str!("../testdata/categorical_shift_new_cat.csv"),
        "tiny_ties" => include_str!("../testdata/tiny_ties.csv"),
        other => panic!("no CSV for {other}"),
    };
    let (mut reference, mut current) = (Vec::new(), Vec::new());
    for line in text.lines().skip(1) {
        let (r, c) = line.split_once(',').unwrap();
        if !r.is_empty() {
            reference.push(r.to_string());
        }
        if !c.is_empty() {
            current.push(c.to_string());
        }
    }
    (reference, current)
}

fn key() -> FeatureKey {
    FeatureKey { model: "m".into(), version: "v".into(), feature: "f".into() }
}

fn close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!((actual - expected).abs() <= tolerance, "{what}: {actual} vs scipy {expected}");
}

/// Agreement to two significant digits (the README's tolerance for p-values).
fn close_p(actual: f64, expected: f64, what: &str) {
    assert!((actual - expected).abs() <= 5e-3 * expected.abs() + 1e-300, "{what}: {actual} vs scipy {expected}");
}

#[test]
fn every_oracle_case_matches_scipy() {
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (reference_text, current_text) = csv(name);
        let (reference, data) = if case["kind"] == "numeric" {
            let parse = |v: &[String]| v.iter().map(|s| s.parse::<f64>().unwrap()).collect::<Vec<f64>>();
            let reference = Reference::numeric(key(), 0, parse(&reference_text), None);
            let Bins::Numeric { edges } = &reference.bins else { unreachable!() };
            for (i, (ours, theirs)) in edges.iter().zip(case["edges"].as_array().unwrap()).enumerate() {
                close(*ours, theirs.as_f64().unwrap(), 1e-9, &format!("{name} edge {i}"));
            }
            (reference, WindowData { values: parse(&current_text), ..WindowData::default() })
        } else {
            let reference = Reference::categorical(key(), 0, &reference_text);
            (reference, WindowData { categories: current_text, ..WindowData::default() })
        };
        let counts: Vec<u64> = case["ref_counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        assert_eq!(reference.counts, counts, "{name} reference counts");
        let e = evaluate(&reference, &data, 5);
        let (status, current_count, stale, scores) = (e.status.as_str(), e.current, e.stale, e.scores);
        assert_eq!((status, stale), ("ok", 0), "{name}");
        assert_eq!(current_count, case["n_cur"].as_u64().unwrap(), "{name}");
        let binned = [
            ("psi", "psi_eps1e-4"),
            ("js_distance", "js_distance_natural"),
            ("js_distance_base2", "js_distance_base2"),
            ("hellinger", "hellinger"),
            ("kl", "kl_ref_cur_eps1e-4_natural"),
        ];
        for (ours, theirs) in binned {
            close(scores[ours], case[theirs].as_f64().unwrap(), 1e-9, &format!("{name} {ours}"));
        }
        let chi = &case["chi2_contingency_2xk_nocorrection"];
        close(scores["chi_square"], chi["statistic"].as_f64().unwrap(), 1e-9, &format!("{name} chi_square"));
        close_p(scores["chi_square_p"], chi["pvalue"].as_f64().unwrap(), &format!("{name} chi_square_p"));
        if case["kind"] == "numeric" {
            assert_eq!(scores["ks"], case["ks_statistic"].as_f64().unwrap(), "{name} D is exact");
            close_p(scores["ks_p"], case["ks_pvalue"].as_f64().unwrap(), &format!("{name} ks_p"));
            close(scores["wasserstein"], case["wasserstein1"].as_f64().unwrap(), 1e-9, &format!("{name} wasserstein"));
            close(
                scores["wasserstein_normalized"],
                case["wasserstein1_norm_by_ref_std"].as_f64().unwrap(),
                1e-9,
                &format!("{name} wasserstein_normalized"),
            );
            close(reference.std.unwrap(), case["ref_std_ddof0"].as_f64().unwrap(), 1e-9, &format!("{name} std"));
        } else {
            assert!(!scores.contains_key("ks"), "{name}: no KS on categories");
        }
    }
}

#[test]
fn asymptotic_kolmogorov_matches_scipy_at_the_oracle_sizes() {
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    for case in expected["cases"].as_array().unwrap().iter().filter(|c| c["kind"] == "numeric") {
        let (n, m) = (case["n_ref"].as_f64().unwrap(), case["n_cur"].as_f64().unwrap());
        let en = (n * m / (n + m)).round() as u64;
        let d = case["ks_statistic"].as_f64().unwrap();
        close_p(
            ks::kolmogorov_sf(en, d),
            case["ks_pvalue_asymp"].as_f64().unwrap(),
            &format!("{} asymptotic", case["name"]),
        );
    }
}

/// The sample generator of `generate_ks_cases.py`, bit for bit.
fn sample(n: usize, mult: usize, modulus: usize, scale: f64, shift: f64) -> Vec<f64> {
    (0..n).map(|i| ((i * mult) % modulus) as f64 / modulus as f64 * scale + shift).collect()
}

#[test]
fn two_sample_ks_matches_scipy_exact_and_asymptotic() {
    let cases: Value = serde_json::from_str(KS_CASES).unwrap();
    for case in cases["ks_2samp"].as_array().unwrap() {
        let (n1, n2) = (case["n1"].as_u64().unwrap() as usize, case["n2"].as_u64().unwrap() as usize);
        let mut a = sample(n1, 7919, 10007, 1.0, 0.0);
        let mut b = sample(n2, 104729, 10009, case["scale"].as_f64().unwrap(), case["shift"].as_f64().unwrap());
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let result = ks::ks_2samp(&a, &b).unwrap();
        let what = format!("ks_2samp n1={n1} n2={n2}");
        assert_eq!(result.statistic, case["statistic"].as_f64().unwrap(), "{what} D");
        close_p(result.p_value, case["pvalue"].as_f64().unwrap(), &what);
    }
}

#[test]
fn kolmogorov_survival_matches_scipy_across_methods() {
    let cases: Value = serde_json::from_str(KS_CASES).unwrap();
    for case in cases["kstwo_sf"].as_array().unwrap() {
        let (n, x, sf) = (case["n"].as_u64().unwrap(), case["x"].as_f64().unwrap(), case["sf"].as_f64().unwrap());
        close_p(ks::kolmogorov_sf(n, x), sf, &format!("kstwo.sf(x={x}, n={n})"));
    }
}

#[test]
fn guard_withholds_scores_below_the_minimum() {
    let reference = Reference::numeric(key(), 0, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], None);
    let data = WindowData { values: vec![1.0, 2.0, 3.0, 4.0], ..WindowData::default() };
    let e = evaluate(&reference, &data, 5);
    let (status, count, scores) = (e.status.as_str(), e.current, e.scores);
    assert_eq!((status, count), ("insufficient_samples", 4));
    assert!(scores.is_empty());
    let e = evaluate(&reference, &data, 4);
    let (status, scores) = (e.status.as_str(), e.scores);
    assert_eq!(status, "ok");
    assert!(scores.contains_key("psi"));
}

#[test]
fn new_categories_land_in_other_and_empty_bins_stay_finite() {
    let reference = Reference::categorical(key(), 0, &["a", "a", "b", "b", "b"].map(String::from));
    let data = WindowData { categories: ["a", "z", "z", "z", "y"].map(String::from).to_vec(), ..WindowData::default() };
    let e = evaluate(&reference, &data, 5);
    let (status, count, scores) = (e.status.as_str(), e.current, e.scores);
    assert_eq!((status, count), ("ok", 5));
    assert!(scores.values().all(|v| v.is_finite()), "{scores:?}");
    // p = (0.4, 0.6, 0), q = (0.2, 0, 0.8): PSI with ε for the empty bins.
    let expected_psi =
        (0.2 - 0.4) * (0.2f64 / 0.4).ln() + (1e-4 - 0.6) * (1e-4f64 / 0.6).ln() + (0.8 - 1e-4) * (0.8f64 / 1e-4).ln();
    close(scores["psi"], expected_psi, 1e-12, "psi");
}

#[test]
fn single_value_reference_scores_without_a_normalised_wasserstein() {
    let reference = Reference::numeric(key(), 0, vec![3.0; 10], None);
    let data = WindowData { values: vec![3.0, 3.0, 4.0, 5.0, 3.0], ..WindowData::default() };
    let e = evaluate(&reference, &data, 5);
    let (status, scores) = (e.status.as_str(), e.scores);
    assert_eq!(status, "ok");
    close(scores["wasserstein"], 0.6, 1e-12, "wasserstein");
    assert!(!scores.contains_key("wasserstein_normalized"), "std 0 has no normalised distance");
    assert!(scores.values().all(|v| v.is_finite()), "{scores:?}");
}

#[test]
fn binned_counts_from_an_older_reference_are_left_out() {
    let reference = Reference::numeric(key(), 0, (0..20).map(f64::from).collect(), None);
    let data = WindowData {
        binned: vec![("ref-old".into(), vec![1; 10]), (reference.id.clone(), vec![2; 10])],
        ..WindowData::default()
    };
    let e = evaluate(&reference, &data, 5);
    let (status, count, stale, scores) = (e.status.as_str(), e.current, e.stale, e.scores);
    assert_eq!((status, count, stale), ("ok", 20, 10));
    assert!(!scores.contains_key("ks"), "no raw values, no KS");
    assert!(scores.contains_key("psi"));
}
