//! Remote write bodies: snappy block, then protobuf `WriteRequest`, then validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_ingest::Limits;
use vigil_ingest::series_cache::SeriesCache;

/// Shared by every run, so inputs also meet series earlier inputs cached.
static CACHE: std::sync::LazyLock<SeriesCache> = std::sync::LazyLock::new(|| SeriesCache::new(1 << 20));

fuzz_target!(|body: &[u8]| {
    // Small limits, so that a claimed size past them is refused rather than allocated.
    let limits = Limits { max_decompressed_bytes: 1 << 20, ..Limits::default() };
    let _ = vigil_ingest::remote_write::decode(body, &limits, &CACHE);
});
