//! Prometheus text exposition and OpenMetrics, as scraped or imported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_ingest::exposition::{Format, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse(text, Format::Text);
    let _ = parse(text, Format::OpenMetrics);
});
