//! OTLP/HTTP JSON bodies (hex ids, int64 as strings, enum names) for all three signals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_ingest::otlp::Encoding;

#[path = "otlp_shared.rs"]
mod shared;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    shared::export(selector, body, Encoding::Json);
});
