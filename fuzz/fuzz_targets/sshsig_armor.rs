//! The SSHSIG armor and blob parser, from the armored text of `auth.response`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ccrelay::auth::fuzzing::sshsig_armored(text);
    }
});
