//! The client frame parser (`protocol::parse_request`): any text frame a peer can
//! send, before or after authentication. Must never panic; an error must carry a code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ccrelay::protocol::parse_request(text) {
        Ok(inbound) => {
            let _ = inbound.request.type_name();
        }
        Err(e) => {
            // The error frame sent back must be valid JSON.
            let frame = e.to_frame();
            assert!(serde_json::from_str::<serde_json::Value>(&frame).is_ok());
        }
    }
    let _ = ccrelay::protocol::peek_request_id(text);
});
