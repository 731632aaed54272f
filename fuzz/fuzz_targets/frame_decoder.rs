#![no_main]
//! Any bytes, pushed in any split, into the frame decoder and then the message decoder:
//! never a panic, never a payload over the limit, and a valid frame after the garbage is
//! still found.

use firerunner_agent_proto::frame::HEADER_LEN;
use firerunner_agent_proto::{encode_frame, FrameDecoder, Message, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = (split as usize).min(rest.len());
    let mut decoder = FrameDecoder::new();
    decoder.push(&rest[..cut]);
    let mut payloads = Vec::new();
    while let Some(payload) = decoder.next_payload() {
        payloads.push(payload);
    }
    decoder.push(&rest[cut..]);
    while let Some(payload) = decoder.next_payload() {
        payloads.push(payload);
    }
    for payload in &payloads {
        assert!(payload.len() <= MAX_PAYLOAD);
        let _ = Message::from_payload(payload);
    }
    // Enough zeros to complete any frame the garbage announced, then a valid frame: the
    // decoder must resynchronise and deliver it.
    let marker = b"fuzz-marker-payload";
    decoder.push(&vec![0u8; MAX_PAYLOAD + HEADER_LEN]);
    decoder.push(&encode_frame(marker).unwrap());
    let mut found = false;
    while let Some(payload) = decoder.next_payload() {
        found |= payload == marker;
    }
    assert!(found, "a valid frame after garbage was lost");
});
