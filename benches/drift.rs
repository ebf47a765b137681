//! Drift scoring cost beside scipy on the same data.
//!
//! For windows of 1k, 10k, 100k and 1M values against a reference of the same size (two
//! shifted, deterministic samples), times Vigil's whole scoring of a window (binning, the
//! seven binned statistics, KS with its p-value, Wasserstein) and, when a Python with scipy is
//! given in `VIGIL_BENCH_SCIPY` (e.g. a venv with scipy 1.17), the same statistics computed by
//! numpy/scipy in one Python process (`benches/drift_scipy.py`, timed inside Python, without
//! start-up). Then intake: raw values posted through the drift engine into storage (WAL
//! fsync per request), values per second.
//!
//!     VIGIL_BENCH_SCIPY=/path/to/python cargo bench --bench drift

use std::time::Instant;

use vigil_drift::reference::Reference;
use vigil_drift::{DriftEngine, DriftOptions, FeatureKey, WindowData, evaluate};
use vigil_storage::{Storage, StorageOptions};

/// The generator of `drift_scipy.py`, bit for bit.
fn sample(n: usize, mult: usize, modulus: usize, scale: f64, shift: f64) -> Vec<f64> {
    (0..n).map(|i| ((i * mult) % modulus) as f64 / modulus as f64 * scale + shift).collect()
}

fn key() -> FeatureKey {
    FeatureKey { model: "bench".into(), version: "v1".into(), feature: "x".into() }
}

fn main() {
    let sizes = [1_000usize, 10_000, 100_000, 1_000_000];
    let scipy = std::env::var("VIGIL_BENCH_SCIPY").ok().map(|python| {
        let output = std::process::Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/drift_scipy.py"))
            .args(sizes.iter().map(|s| s.to_string()))
            .output()
            .expect("run drift_scipy.py");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        parsed
    });
    println!("window scoring (reference and window of n values each; best of 5)");
    println!("{:>9} {:>12} {:>12} {:>8}  psi / ks_p (vigil | scipy)", "n", "vigil ms", "scipy ms", "ratio");
    for n in sizes {
        let reference = Reference::numeric(key(), 0, sample(n, 7919, 1_000_003, 1.0, 0.0), None);
        let data = WindowData { values: sample(n, 104_729, 1_000_033, 1.05, 0.01), ..WindowData::default() };
        let mut best = f64::MAX;
        let mut scores = Default::default();
        for _ in 0..5 {
            let started = Instant::now();
            let s = evaluate(&reference, &data, 5).scores;
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
            scores = s;
        }
        let theirs = scipy.as_ref().and_then(|s| s[n.to_string()].as_object().cloned());
        let scipy_ms = theirs.as_ref().map(|t| t["ms"].as_f64().unwrap());
        println!(
            "{:>9} {:>12.2} {:>12} {:>8}  {:.6} / {:.3e} | {}",
            n,
            best,
            scipy_ms.map_or("-".into(), |m| format!("{m:.2}")),
            scipy_ms.map_or("-".into(), |m| format!("{:.2}x", best / m)),
            scores["psi"],
            scores["ks_p"],
            theirs.map_or("-".into(), |t| format!(
                "{:.6} / {:.3e}",
                t["psi"].as_f64().unwrap(),
                t["ks_p"].as_f64().unwrap()
            )),
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
        let query = vigil_query::QueryEngine::new(storage.clone(), vigil_query::QueryOptions::default()).unwrap();
        let clock = std::sync::Arc::new(vigil_storage::clock::SystemClock);
        let engine = DriftEngine::open(query, DriftOptions::default(), clock).await.unwrap();
        let reference: Vec<f64> = sample(10_000, 7919, 1_000_003, 1.0, 0.0);
        engine
            .register_reference(serde_json::json!({"model": "bench", "feature": "x", "values": reference}).to_string().as_bytes())
            .await
            .unwrap();
        let per_request = 1_000;
        let requests = 500;
        let bodies: Vec<Vec<u8>> = (0..requests)
            .map(|r| serde_json::json!({"model": "bench", "feature": "x", "values": sample(per_request, 104_729 + r, 1_000_033, 1.05, 0.01)}).to_string().into_bytes())
            .collect();
        let started = Instant::now();
        for body in &bodies {
            engine.ingest(body).await.unwrap();
        }
        let intake = started.elapsed().as_secs_f64();
        let started = Instant::now();
        engine.flush(None).await.unwrap();
        let score = started.elapsed().as_secs_f64();
        println!(
            "\nintake: {} requests of {} values, one at a time: {:.0} values/s ({:.2} ms per request, fsync each); scoring the {}-value window from storage: {:.0} ms",
            requests,
            per_request,
            (requests * per_request) as f64 / intake,
            intake * 1e3 / requests as f64,
            requests * per_request,
            score * 1e3
        );
        storage.close().await.unwrap();
    });
}
