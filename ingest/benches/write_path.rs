//! The remote-write path in one process, without HTTP: decode, admission, cardinality, WAL,
//! write buffer. The query bench's load (`benches/common/dashboard_load.rs`: 2,000 series a
//! request, one sample a series a request, here 15 s apart) with the server's allocator and
//! default settings, so a change to the write path can be measured in minutes instead of a
//! release build of the server and a run beside the peers (`cargo bench --bench remote_write`
//! does that).
//!
//! `cargo bench -p vigil-ingest --bench write_path`; `VIGIL_BENCH_SERIES` (10,000) and
//! `VIGIL_BENCH_STEPS` (240) size it. Prints CPU seconds per million samples.

// A bench stops on what it set up itself failing (the tests' client it includes unwraps), as
// the root package's benches do.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Instant;

use vigil_ingest::{Ingestor, Limits};
use vigil_storage::{Storage, StorageOptions};

// The tests' remote-write client (messages declared apart from Vigil's decoder) and the
// query bench's load, shared with it.
#[allow(dead_code)]
#[path = "../../tests/e2e/remote_write_client.rs"]
mod client;
#[path = "../../benches/common/dashboard_load.rs"]
mod dashboard_load;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STEP_MS: i64 = 15_000;

/// utime + stime of this process, in seconds (clock ticks of 10 ms: runs last seconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    let after_name = &stat[stat.rfind(')').expect("stat names the process") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("VIGIL_BENCH_SERIES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let steps: i64 = std::env::var("VIGIL_BENCH_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(240).max(1);
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the clock is past 1970").as_millis()
            as i64;
    let bodies =
        dashboard_load::load(now_ms / STEP_MS * STEP_MS, total, steps - 1, STEP_MS, dashboard_load::Values::Steady);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = Storage::open(StorageOptions::new(dir.path())).await.expect("storage opens");
    let ingestor = Ingestor::new(storage, Limits::default());

    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let mut samples = 0;
    for body in &bodies {
        samples += ingestor.remote_write(body).await.expect("the write is accepted").samples;
    }
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    println!(
        "write path: {total} series x {steps} steps, {samples} samples in {} requests: {cpu:.2} CPU s \
         ({:.3} per million samples), {wall:.2} s",
        bodies.len(),
        cpu / samples as f64 * 1e6
    );
}
