//! SLO files in every dialect (vigil/v1, OpenSLO v1, Sloth), as `vigil validate` reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = vigil_query::slo::load_texts(&[("fuzz.yaml".to_string(), text.to_string())], None);
});
