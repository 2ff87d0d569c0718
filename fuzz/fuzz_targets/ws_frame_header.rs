//! The WebSocket frame-header scanner (`ws::gate::FrameScanner`): it reads every
//! byte a peer sends after the upgrade, before authentication. Must never panic,
//! must refuse only what is over the limit, and must see the same however the
//! bytes are split into reads (the first two bytes pick the limit and the split).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ccrelay::ws::gate::fuzzing::frame_scanner(data);
});
