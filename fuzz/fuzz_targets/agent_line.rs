//! The agent line classifier (`agent::wire::classify`): any line the agent writes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ccrelay::agent::wire::classify(data);
});
