//! CoAP decoder: `Message::parse` on arbitrary bytes must return, never panic, and every
//! accessor of a parsed message must be total. A parsed message must also re-encode to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::coap::{peek_header, Message, MessageWriter};

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let _ = (
        msg.ty(),
        msg.code().name(),
        msg.mid(),
        msg.token(),
        msg.payload(),
    );
    for (number, _) in msg.options() {
        assert!(
            msg.option(number).is_some(),
            "every listed option is found by number"
        );
    }
    for segment in msg
        .uri_path()
        .chain(msg.uri_query())
        .chain(msg.location_path())
    {
        let _ = segment.len();
    }
    let _ = (
        msg.content_format(),
        msg.accept(),
        msg.observe(),
        msg.max_age(),
    );
    let _ = (msg.block1(), msg.block2(), msg.size1(), msg.size2());
    if let Some(block) = msg.block1().or(msg.block2()) {
        let _ = (block.size(), block.offset());
    }

    let mut buf = Vec::with_capacity(data.len());
    let mut writer = MessageWriter::new(&mut buf, msg.ty(), msg.code(), msg.mid(), msg.token());
    for (number, value) in msg.options() {
        writer.option(number, value);
    }
    writer.payload(msg.payload());
    writer.finish();
    assert_eq!(buf, data, "re-encoding a parsed message is the identity");
});
