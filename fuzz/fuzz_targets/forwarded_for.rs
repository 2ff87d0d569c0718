//! The `X-Forwarded-For` parser (`listen::proxy::client_address`): header values
//! a client behind a trusted proxy can write. Must never panic; the answer is the
//! proxy itself or an untrusted address, in its IPv4 form when mapped.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ccrelay::listen::proxy::fuzzing::forwarded_for(data);
});
