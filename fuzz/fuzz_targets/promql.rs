//! PromQL text through the whole path: parse, compile to a DataFusion plan, execute (over an
//! empty store, so execution is quick and every failure is in the front end).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vigil_query::promql::EvalRange;
use vigil_query::{QueryEngine, QueryOptions};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    engine: QueryEngine,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = runtime.block_on(vigil_storage::Storage::open(vigil_storage::StorageOptions::new(dir.path()))).expect("storage");
        let options = QueryOptions { timeout: Duration::from_secs(5), ..QueryOptions::default() };
        let engine = QueryEngine::new(storage, options).expect("engine");
        Fixture { runtime, engine, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.len() > 4096 {
        return;
    }
    let fixture = fixture();
    let range = EvalRange { start_ms: 1_700_000_000_000, end_ms: 1_700_000_600_000, step_ms: 60_000 };
    let _ = fixture.runtime.block_on(fixture.engine.promql(text, range, false));
});
