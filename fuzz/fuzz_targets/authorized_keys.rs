//! The authorized_keys parser (owner, viewer and paired keys files).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ccrelay::auth::fuzzing::authorized_keys(text);
    }
});
