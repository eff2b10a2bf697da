//! Byte-vector tests: real captures, re-encoding, every [`ParseError`], properties.

use std::net::SocketAddr;
use std::time::Instant;

use proptest::prelude::*;

use super::test_vectors::*;
use super::*;

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Expected fields of a datagram, as Wireshark reads them.
struct Expect<'e> {
    ty: MessageType,
    code: Code,
    mid: u16,
    token: &'e str,
    path: &'e [&'e str],
    query: &'e [&'e str],
    content_format: Option<u16>,
    block1: Option<Block>,
    payload_len: usize,
}

impl Default for Expect<'_> {
    fn default() -> Self {
        Expect {
            ty: MessageType::Con,
            code: Code::POST,
            mid: 0,
            token: "",
            path: &[],
            query: &[],
            content_format: None,
            block1: None,
            payload_len: 0,
        }
    }
}

fn check(datagram: &[u8], want: &Expect) -> Message<'static> {
    let bytes: &'static [u8] = Vec::leak(datagram.to_vec());
    let msg = Message::parse(bytes).expect("capture parses");
    assert_eq!(msg.ty(), want.ty);
    assert_eq!(msg.code(), want.code);
    assert_eq!(msg.mid(), want.mid);
    assert_eq!(msg.token(), hex(want.token).as_slice());
    let path: Vec<&[u8]> = msg.uri_path().collect();
    let want_path: Vec<&[u8]> = want.path.iter().map(|s| s.as_bytes()).collect();
    assert_eq!(path, want_path);
    let query: Vec<&[u8]> = msg.uri_query().collect();
    let want_query: Vec<&[u8]> = want.query.iter().map(|s| s.as_bytes()).collect();
    assert_eq!(query, want_query);
    assert_eq!(msg.content_format(), want.content_format);
    assert_eq!(msg.block1(), want.block1);
    assert_eq!(msg.payload().len(), want.payload_len);
    msg
}

fn register(
    mid: u16,
    token: &'static str,
    query: &'static [&'static str],
    len: usize,
) -> Expect<'static> {
    Expect {
        mid,
        token,
        path: &["rd"],
        query,
        content_format: Some(40),
        payload_len: len,
        ..Expect::default()
    }
}

#[test]
fn parse_register_captures() {
    let q = &["lwm2m=1.1", "ep=peer-ep1", "b=U", "lt=300"];
    check(&hex(REGISTER), &register(54144, "80d30952", q, 140));
    let q = &["lwm2m=1.0", "ep=peer-ep-v10", "b=U", "lt=120"];
    check(&hex(REGISTER_V10), &register(6811, "9b1a1052", q, 129));
    let q = &["lwm2m=1.1", "ep=peer-light", "b=U", "lt=300"];
    check(
        &hex(REGISTER_LIGHTCLIENT),
        &register(46245, "a5b41852", q, 75),
    );
    let q = &["lwm2m=1.2", "ep=anjay-ep1", "lt=300"];
    check(
        &hex(ANJAY_REGISTER),
        &register(47621, "1a13c55e9421dd5e", q, 175),
    );
    let q = &["lwm2m=1.0", "ep=anjay-ep-v10", "lt=120"];
    check(
        &hex(ANJAY_REGISTER_V10),
        &register(46864, "515af132361313ca", q, 177),
    );
    let q = &["lwm2m=1.1", "ep=peer-ep-b64", "b=U", "lt=300"];
    let first = Some(Block {
        num: 0,
        more: true,
        szx: 2,
    });
    check(
        &hex(REGISTER_BLOCK64),
        &Expect {
            block1: first,
            ..register(38631, "e7961f52", q, 64)
        },
    );
    check(
        &hex(REGISTER_BLOCK64_FULL),
        &Expect {
            block1: first,
            ..register(16025, "993e2c52", q, 64)
        },
    );
}

#[test]
fn parse_register_payload_and_accessors() {
    let bytes = hex(REGISTER);
    let msg = Message::parse(&bytes).expect("capture parses");
    assert!(msg
        .payload()
        .starts_with(b"</>;rt=\"oma.lwm2m\";ct=110,</1>;ver=1.1"));
    assert!(msg.payload().ends_with(b"</31024/12>"));
    assert_eq!(msg.option(option::URI_QUERY), Some(&b"lwm2m=1.1"[..]));
    assert_eq!(msg.option(option::OBSERVE), None);
    assert_eq!(
        (msg.accept(), msg.observe(), msg.block2(), msg.size1()),
        (None, None, None, None)
    );
    let numbers: Vec<u16> = msg.options().map(|(n, _)| n).collect();
    assert_eq!(numbers, [11, 12, 15, 15, 15, 15]);
    assert_eq!(peek_header(&bytes), Some((MessageType::Con, 54144)));
}

#[test]
fn parse_bootstrap_request() {
    let q = &["ep=peer-bs-ep", "pct=110"];
    let want = Expect {
        mid: 35729,
        token: "918b8052",
        path: &["bs"],
        query: q,
        ..Expect::default()
    };
    check(&hex(BOOTSTRAP_REQUEST), &want);
}

#[test]
fn parse_anjay_session() {
    let d: Vec<Vec<u8>> = ANJAY_SESSION.iter().map(|h| hex(h)).collect();
    let q = &["lwm2m=1.2", "ep=anjay-ep1", "lt=60"];
    check(&d[0], &register(24701, "d83030de0269610b", q, 175));
    let ack = Expect {
        ty: MessageType::Ack,
        code: Code::PRECONDITION_FAILED,
        mid: 24701,
        token: "d83030de0269610b",
        ..Expect::default()
    };
    check(&d[1], &ack);
    let q = &["lwm2m=1.1", "ep=anjay-ep1", "lt=60"];
    check(&d[2], &register(24702, "977ff360db02f5d6", q, 175));
    let created = check(
        &d[3],
        &Expect {
            ty: MessageType::Ack,
            code: Code::CREATED,
            mid: 24702,
            token: "977ff360db02f5d6",
            ..Expect::default()
        },
    );
    assert_eq!(
        created.location_path().collect::<Vec<_>>(),
        [&b"rd"[..], b"0"]
    );
    let observe = Expect {
        code: Code::GET,
        mid: 25105,
        token: "00000001",
        path: &["3347", "0", "5500"],
        ..Expect::default()
    };
    let get = check(&d[4], &observe);
    assert_eq!((get.observe(), get.accept()), (Some(0), Some(11542)));
    let content = Expect {
        ty: MessageType::Ack,
        code: Code::CONTENT,
        mid: 25105,
        token: "00000001",
        content_format: Some(11542),
        payload_len: 4,
        ..Expect::default()
    };
    assert_eq!(check(&d[5], &content).observe(), Some(0));
    for (i, mid, seq, value) in [(6, 24703, 1, 1), (7, 24704, 2, 0)] {
        let msg = check(
            &d[i],
            &Expect {
                ty: MessageType::Non,
                mid,
                ..content
            },
        );
        assert_eq!(msg.observe(), Some(seq));
        assert_eq!(
            msg.payload(),
            [0xe1, 0x15, 0x7c, value],
            "TLV resource 5500"
        );
    }
}

#[test]
fn parse_bootstrap_flow() {
    let d: Vec<Vec<u8>> = BOOTSTRAP_FLOW.iter().map(|h| hex(h)).collect();
    assert_eq!(d.len(), 14);
    let ack = |code, mid, token| Expect {
        ty: MessageType::Ack,
        code,
        mid,
        token,
        ..Expect::default()
    };
    let req = |code, mid, token, path, len| Expect {
        code,
        mid,
        token,
        path,
        payload_len: len,
        ..Expect::default()
    };
    check(
        &d[0],
        &Expect {
            mid: 35729,
            token: "918b8052",
            path: &["bs"],
            query: &["ep=peer-bs-ep", "pct=110"],
            ..Expect::default()
        },
    );
    check(&d[1], &ack(Code::CHANGED, 35729, "918b8052"));
    check(&d[2], &req(Code::DELETE, 53566, "3ed18052", &["0"], 0));
    check(&d[3], &ack(Code::DELETED, 53566, "3ed18052"));
    check(&d[4], &req(Code::DELETE, 53567, "3fd18052", &["1"], 0));
    check(&d[5], &ack(Code::DELETED, 53567, "3fd18052"));
    let put = check(
        &d[6],
        &Expect {
            content_format: Some(110),
            ..req(Code::PUT, 53568, "40d18052", &["0", "1"], 107)
        },
    );
    assert!(put.payload().starts_with(b"[{\"bn\":\"/0/1/\""));
    check(&d[7], &ack(Code::CHANGED, 53568, "40d18052"));
    check(
        &d[8],
        &Expect {
            content_format: Some(110),
            ..req(Code::PUT, 53569, "41d18052", &["1", "1"], 88)
        },
    );
    check(&d[9], &ack(Code::CHANGED, 53569, "41d18052"));
    check(&d[10], &req(Code::POST, 53570, "42d18052", &["bs"], 0));
    check(&d[11], &ack(Code::CHANGED, 53570, "42d18052"));
    let q = &["lwm2m=1.1", "ep=peer-bs-ep", "b=U", "lt=300"];
    check(&d[12], &register(35730, "928b8052", q, 140));
    let created = check(&d[13], &ack(Code::CREATED, 35730, "928b8052"));
    assert_eq!(
        created.location_path().collect::<Vec<_>>(),
        [&b"rd"[..], b"0"]
    );
}

#[test]
fn parse_block64_exchange_and_reassemble() {
    let d: Vec<Vec<u8>> = BLOCK64_EXCHANGE.iter().map(|h| hex(h)).collect();
    let q = &["lwm2m=1.1", "ep=peer-ep-b64", "b=U", "lt=300"];
    let mut asm = Block1Assembler::new(std::time::Duration::from_secs(30));
    let peer = SocketAddr::from(([127, 0, 0, 1], 56833));
    let t = Instant::now();
    let mut body = None;
    for (num, mid, len) in [(0u32, 16025u16, 64usize), (1, 16026, 64), (2, 16027, 12)] {
        let block = Block {
            num,
            more: num < 2,
            szx: 2,
        };
        let want = Expect {
            block1: Some(block),
            ..register(mid, "993e2c52", q, len)
        };
        let msg = check(&d[2 * num as usize], &want);
        match asm
            .push(t, peer, 0x5eed, block, msg.payload())
            .expect("in-order block")
        {
            BlockProgress::Continue => assert!(block.more),
            BlockProgress::Complete(b) => body = Some(b),
        }
        let reply = Message::parse(&d[2 * num as usize + 1]).expect("reply parses");
        assert_eq!(
            (reply.ty(), reply.mid(), reply.block1()),
            (MessageType::Ack, mid, Some(block))
        );
        let code = if block.more {
            Code::CONTINUE
        } else {
            Code::CREATED
        };
        assert_eq!(reply.code(), code);
    }
    let register = hex(REGISTER);
    let whole = Message::parse(&register).expect("capture parses");
    assert_eq!(body.as_deref(), Some(whole.payload()));
    assert!(asm.is_empty());
}

/// Re-encodes `msg` with the writer, adding its options in the given order.
fn reencode(msg: &Message, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, msg.ty(), msg.code(), msg.mid(), msg.token());
    for (number, value) in options {
        w.option(*number, value);
    }
    w.payload(msg.payload());
    let n = w.finish();
    assert_eq!(n, buf.len());
    buf
}

fn all_datagrams() -> Vec<Vec<u8>> {
    let singles = [
        REGISTER,
        REGISTER_V10,
        REGISTER_LIGHTCLIENT,
        ANJAY_REGISTER,
        ANJAY_REGISTER_V10,
        REGISTER_BLOCK64,
        REGISTER_BLOCK64_FULL,
        BOOTSTRAP_REQUEST,
    ];
    let exchanges = ANJAY_SESSION
        .iter()
        .chain(BOOTSTRAP_FLOW)
        .chain(BLOCK64_EXCHANGE);
    singles.iter().chain(exchanges).map(|h| hex(h)).collect()
}

#[test]
fn reencoding_captures_is_identical() {
    for bytes in all_datagrams() {
        let msg = Message::parse(&bytes).expect("capture parses");
        let options: Vec<(u16, &[u8])> = msg.options().collect();
        assert_eq!(reencode(&msg, &options), bytes, "in order");
        let mut shuffled = options.clone();
        shuffled.sort_by_key(|&(n, _)| std::cmp::Reverse(n));
        assert_eq!(
            reencode(&msg, &shuffled),
            bytes,
            "descending numbers, equal ones in order"
        );
        shuffled.sort_by_key(|&(n, _)| u32::from(n).wrapping_mul(2_654_435_761) % 97);
        assert_eq!(
            reencode(&msg, &shuffled),
            bytes,
            "scrambled numbers, equal ones in order"
        );
    }
}

#[test]
fn write_created_with_location_and_block1() {
    let mut buf = vec![0xaa];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Ack,
        Code::CREATED,
        0x3e9b,
        &hex("993e2c52"),
    );
    w.block_option(
        option::BLOCK1,
        Block {
            num: 2,
            more: false,
            szx: 2,
        },
    );
    w.option(option::LOCATION_PATH, b"rd")
        .option(option::LOCATION_PATH, b"0");
    assert_eq!(w.finish(), 16);
    assert_eq!(buf[1..], hex(BLOCK64_EXCHANGE[5]));
}

#[test]
fn write_options_payload_any_order() {
    let mut buf = Vec::with_capacity(64);
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::Non,
        Code::CONTENT,
        7,
        &[1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    w.payload(b"ab");
    w.uint_option(option::CONTENT_FORMAT, 11542);
    w.uint_option(option::OBSERVE, 0);
    w.payload(b"c");
    w.uint_option(option::SIZE1, 0x0102_0304);
    w.finish();
    let msg = Message::parse(&buf).expect("written message parses");
    assert_eq!(
        msg.token(),
        [1, 2, 3, 4, 5, 6, 7, 8],
        "token truncated to 8 bytes"
    );
    assert_eq!(msg.observe(), Some(0));
    assert_eq!(msg.option(option::OBSERVE), Some(&[][..]));
    assert_eq!(msg.content_format(), Some(11542));
    assert_eq!(msg.size1(), Some(0x0102_0304));
    assert_eq!(msg.payload(), b"abc");
}

#[test]
fn write_long_values_and_large_deltas() {
    let long = vec![b'x'; 300];
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, MessageType::Con, Code::PUT, 1, &[]);
    w.option(2000, b"z")
        .option(option::URI_PATH, &long)
        .option(40, &long[..20]);
    w.finish();
    let msg = Message::parse(&buf).expect("written message parses");
    let got: Vec<(u16, usize)> = msg.options().map(|(n, v)| (n, v.len())).collect();
    assert_eq!(got, [(11, 300), (40, 20), (2000, 1)]);
}

#[test]
fn write_empty_ack_and_rst() {
    let mut buf = Vec::new();
    write_empty(&mut buf, MessageType::Ack, 0x1234);
    write_empty(&mut buf, MessageType::Rst, 0xbeef);
    assert_eq!(buf, [0x60, 0x00, 0x12, 0x34, 0x70, 0x00, 0xbe, 0xef]);
    let ack = Message::parse(&buf[..4]).expect("empty ACK parses");
    assert!(ack.code().is_empty() && ack.token().is_empty() && ack.options().next().is_none());
}

#[test]
fn uint_values() {
    assert_eq!(uint(&[]), 0);
    assert_eq!(uint(&[0x2d, 0x16]), 11542);
    assert_eq!(uint(&[1, 2, 3, 4]), 0x0102_0304);
    assert_eq!(
        uint(&[9, 1, 2, 3, 4]),
        0x0102_0304,
        "low 32 bits of a longer value"
    );
}

#[test]
fn every_parse_error() {
    use ParseError::*;
    let cases: &[(&[u8], ParseError)] = &[
        (&[0x40, 0x01, 0x00], TooShort(3)),
        (&[], TooShort(0)),
        (&[0x80, 0x01, 0, 1], BadVersion(2)),
        (&[0x00, 0x01, 0, 1], BadVersion(0)),
        (
            &[0x49, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            BadTokenLength(9),
        ),
        (&[0x4f, 0x01, 0, 1], BadTokenLength(15)),
        (&[0x44, 0x01, 0, 1, 0xaa, 0xbb], TruncatedToken),
        (&[0x41, 0x00, 0, 1, 0xaa], NonEmptyEmpty),
        (&[0x60, 0x00, 0, 1, 0xb1, b'a'], NonEmptyEmpty),
        (&[0x70, 0x00, 0, 1, 0xff, 0x01], NonEmptyEmpty),
        (&[0x40, 0x01, 0, 1, 0xf1, 0x00], ReservedOptionDelta),
        (&[0x40, 0x01, 0, 1, 0xbf], ReservedOptionLength),
        (&[0x40, 0x01, 0, 1, 0xd0], TruncatedOptionHeader),
        (&[0x40, 0x01, 0, 1, 0xe0, 0x01], TruncatedOptionHeader),
        (&[0x40, 0x01, 0, 1, 0x0d], TruncatedOptionHeader),
        (&[0x40, 0x01, 0, 1, 0x0e, 0x00], TruncatedOptionHeader),
        (
            &[0x40, 0x01, 0, 1, 0xb3, b'a', b'b'],
            TruncatedOptionValue { number: 11 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xb1, b'a', 0x0d, 0x00],
            TruncatedOptionValue { number: 11 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xe0, 0xfe, 0xf2, 0x10],
            OptionNumberOverflow,
        ),
        (&[0x40, 0x01, 0, 1, 0xe0, 0xff, 0xff], OptionNumberOverflow),
        (&[0x40, 0x01, 0, 1, 0xff], EmptyPayload),
        (&[0x40, 0x01, 0, 1, 0xb1, b'a', 0xff], EmptyPayload),
        (
            &[0x40, 0x01, 0, 1, 0xc3, 0, 0, 1],
            BadOptionLength { number: 12, len: 3 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0x64, 0, 0, 0, 1],
            BadOptionLength { number: 6, len: 4 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xd5, 47, 1, 2, 3, 4, 5],
            BadOptionLength { number: 60, len: 5 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xd4, 10, 0, 0, 0, 0x10],
            BadOptionLength { number: 23, len: 4 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xd1, 14, 0x07],
            ReservedBlockSize { number: 27 },
        ),
        (
            &[0x40, 0x01, 0, 1, 0xd1, 10, 0x1f],
            ReservedBlockSize { number: 23 },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            Message::parse(bytes).map(|_| ()),
            Err(*want),
            "{bytes:02x?}"
        );
        assert!(!want.to_string().is_empty());
    }
    assert_eq!(
        peek_header(&[0x44, 0x01, 0x12, 0x34, 0xaa]),
        Some((MessageType::Con, 0x1234))
    );
    assert_eq!(peek_header(&[0x84, 0x01, 0x12, 0x34]), None);
}

#[test]
fn boundary_option_numbers_and_lengths_parse() {
    let ok: &[&[u8]] = &[
        &[0x40, 0x01, 0, 1, 0xe0, 0xfe, 0xf2],
        &[0x40, 0x01, 0, 1, 0xd0, 0xff],
        &[0x40, 0x01, 0, 1, 0xc2, 0xff, 0xff, 0xff, 0x00],
        &[0x48, 0x01, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8],
    ];
    for bytes in ok {
        assert!(Message::parse(bytes).is_ok(), "{bytes:02x?}");
    }
    let max = Message::parse(ok[0]).expect("option 65535");
    assert_eq!(max.options().collect::<Vec<_>>(), [(65535, &[][..])]);
}

/// Walks every accessor, as the fuzz target does.
fn walk(msg: &Message) -> usize {
    let mut n = msg.token().len() + msg.payload().len() + usize::from(msg.mid());
    n += msg.options().map(|(_, v)| v.len()).sum::<usize>();
    n += msg.uri_path().count() + msg.uri_query().count() + msg.location_path().count();
    n += usize::from(msg.content_format().is_some()) + usize::from(msg.accept().is_some());
    n += usize::from(msg.observe().is_some()) + usize::from(msg.block1().is_some());
    n += usize::from(msg.block2().is_some()) + usize::from(msg.size1().is_some());
    n + usize::from(msg.code().0) + msg.ty() as usize
}

/// Option numbers whose values the parser does not constrain.
const FREE_OPTIONS: &[u16] = &[1, 3, 4, 5, 8, 11, 15, 20, 35, 39, 300, 2000, 65000, 65535];

proptest! {
    #[test]
    fn parse_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(msg) = Message::parse(&bytes) {
            walk(&msg);
        }
    }

    #[test]
    fn parse_plausible_headers_never_panics(
        tkl in 0u8..9, code in any::<u8>(), rest in proptest::collection::vec(any::<u8>(), 0..300)
    ) {
        let mut bytes = vec![0x40 | tkl, code, 0, 1];
        bytes.extend_from_slice(&rest);
        if let Ok(msg) = Message::parse(&bytes) {
            walk(&msg);
            let options: Vec<(u16, &[u8])> = msg.options().collect();
            prop_assert_eq!(reencode(&msg, &options), bytes);
        }
    }

    #[test]
    fn writer_output_parses_back(
        ty in 0u8..4, code in 1u8..=255, mid in any::<u16>(),
        token in proptest::collection::vec(any::<u8>(), 0..=8),
        options in proptest::collection::vec(
            (proptest::sample::select(FREE_OPTIONS), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let ty = MessageType::from_bits(ty);
        let mut buf = vec![0u8; 3];
        let mut w = MessageWriter::new(&mut buf, ty, Code(code), mid, &token);
        for (number, value) in &options {
            w.option(*number, value);
        }
        w.payload(&payload);
        let len = w.finish();
        prop_assert_eq!(len, buf.len() - 3);
        let msg = Message::parse(&buf[3..]).expect("writer output parses");
        prop_assert_eq!((msg.ty(), msg.code(), msg.mid()), (ty, Code(code), mid));
        prop_assert_eq!(msg.token(), &token[..]);
        prop_assert_eq!(msg.payload(), &payload[..]);
        let mut sorted: Vec<(u16, &[u8])> = options.iter().map(|(n, v)| (*n, &v[..])).collect();
        sorted.sort_by_key(|&(n, _)| n);
        prop_assert_eq!(msg.options().collect::<Vec<_>>(), sorted);
    }

    #[test]
    fn block_round_trip(num in 0u32..=MAX_BLOCK_NUM, more in any::<bool>(), szx in 0u8..7) {
        let block = Block { num, more, szx };
        let mut out = [0u8; 3];
        let len = block.encode(&mut out);
        prop_assert_eq!(Block::decode(&out[..len]), Some(block));
    }
}
