#![no_main]
//! Placeholder so the fuzz crate builds; the PATCH engine's author replaces it with the real
//! apply target.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = scim_bridge::scim::path::parse_path(s);
    }
});
