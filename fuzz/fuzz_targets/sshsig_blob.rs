//! The SSHSIG blob parser on raw bytes (what the armor decodes to), so the fuzzer
//! mutates the binary structure directly instead of through base64.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ccrelay::auth::fuzzing::sshsig_blob(data);
});
