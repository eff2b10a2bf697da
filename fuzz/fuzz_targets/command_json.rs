//! Downlink commands: `parse_command` on arbitrary bytes must return, never panic. A parsed
//! command must build a request that encodes to a CoAP message decoding back to the same
//! method, path and payload, and every uplink message about it must be valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_gateway::coap::{Code, Message, MessageType};
use lwm2m_gateway::lwm2m::Version;
use lwm2m_gateway::translate::{
    build_request, parse_command, write_ack, write_coap_request, write_command_error,
    write_response,
};

fn assert_json(out: &[u8]) {
    assert!(
        serde_json::from_slice::<serde_json::Value>(out).is_ok(),
        "invalid JSON: {}",
        String::from_utf8_lossy(out)
    );
}

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let cmd = match parse_command(data) {
        Ok(cmd) => cmd,
        Err(err) => {
            write_command_error(&mut out, &err);
            assert_json(&out);
            return;
        }
    };
    for version in [Version::V1_0, Version::V1_1] {
        let req = match build_request(&cmd, "/lwm2m", version) {
            Ok(req) => req,
            Err(err) => {
                out.clear();
                write_command_error(&mut out, &err);
                assert_json(&out);
                continue;
            }
        };
        let mut buf = Vec::new();
        write_coap_request(&req, MessageType::Con, 1, &[1, 2, 3, 4], &mut buf);
        let msg = Message::parse(&buf).expect("an encoded request decodes");
        assert_eq!(msg.code(), req.method);
        assert!(msg.uri_path().eq(req.uri_path.iter().map(|s| s.as_bytes())));
        assert_eq!(msg.payload(), &req.payload[..]);
        out.clear();
        write_response(
            &mut out,
            &cmd.echo,
            &cmd.msg_type,
            &req.req_path,
            Code::CHANGED,
            None,
        );
        assert_json(&out);
        out.clear();
        write_ack(&mut out, &cmd.echo, &req.req_path);
        assert_json(&out);
    }
});
