//! The properties the fuzz targets check (`fuzz/fuzz_targets/`), kept here so that
//! `cargo test` replays the committed corpora through exactly the same code on the
//! stable toolchain. Each function panics when a property is violated.

use crate::diameter::answer::{encode_error_answer, Origin};
use crate::diameter::avp::AvpIter;
use crate::diameter::ccr::{encode_ccr, Ccr};
use crate::diameter::result_code as rc;
use crate::diameter::validate::{check_request_header, walk};
use crate::diameter::{FailedAvp, Header, Message, ProtocolError, HEADER_LEN};
use crate::peer::{Peer, PeerConfig, Step};

/// Result-Codes a decoding error may carry.
const ALLOWED: &[u32] = &[
    rc::AVP_UNSUPPORTED,
    rc::INVALID_AVP_VALUE,
    rc::MISSING_AVP,
    rc::AVP_OCCURS_TOO_MANY_TIMES,
    rc::INVALID_AVP_LENGTH,
    rc::INVALID_MESSAGE_LENGTH,
    rc::UNSUPPORTED_VERSION,
    rc::INVALID_HDR_BITS,
    rc::INVALID_BIT_IN_HEADER,
];

fn check_error(input: &[u8], e: &ProtocolError) {
    assert!(
        ALLOWED.contains(&e.result_code),
        "unexpected Result-Code {}",
        e.result_code
    );
    match e.failed_avp {
        FailedAvp::Copy { offset, len } => {
            assert!(
                offset as usize + len as usize <= input.len(),
                "Failed-AVP out of bounds"
            );
            assert!(offset as usize >= HEADER_LEN);
        }
        FailedAvp::Reframe {
            offset, data_len, ..
        } => {
            assert!((offset as usize) < input.len().max(HEADER_LEN + 1));
            assert!(data_len as usize <= input.len());
        }
        FailedAvp::Missing { .. } | FailedAvp::None => {}
    }
}

/// Any bytes as a CCR body: decoding either fails with an allowed Result-Code whose
/// error answer encodes and re-parses, or succeeds, and then encode → decode gives the
/// same CCR.
pub fn ccr_roundtrip(input: &[u8]) {
    let Some(h) = Header::decode(input) else {
        return;
    };
    // Treat the input as one framed message whose length field is right.
    let mut bytes = input.to_vec();
    let len = bytes.len() as u32;
    if len > 0x00ff_ffff {
        return;
    }
    bytes[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    // The peer hands only Credit-Control requests of application 4 to the decoder
    // (answers go elsewhere; other commands are answered 3001/3007 before it), so the
    // input is made one.
    bytes[4] |= crate::diameter::cmd_flags::R;
    bytes[5..8].copy_from_slice(&crate::diameter::command::CREDIT_CONTROL.to_be_bytes()[1..]);
    bytes[8..12].copy_from_slice(&crate::diameter::application::CREDIT_CONTROL.to_be_bytes());
    let Some(msg) = Message::new(&bytes) else {
        return;
    };
    let result = check_request_header(&msg.header).and_then(|()| Ccr::decode(&msg));
    if check_request_header(&msg.header).is_ok() {
        same_as_full_decoder(&msg, &result);
    }
    match result {
        Err(e) => {
            check_error(&bytes, &e);
            let mut out = vec![0u8; bytes.len() * 2 + 1024];
            let origin = Origin {
                host: "ocs.gyro.test",
                realm: "gyro.test",
            };
            let n = encode_error_answer(&bytes, &e, &origin, &mut out).expect("error answer fits");
            let answer = Message::new(&out[..n]).expect("error answer frames");
            assert_eq!(answer.header.hop_by_hop, h.hop_by_hop);
            let code = answer
                .avps()
                .flatten()
                .find(|a| a.code == 268 && a.vendor_id == 0)
                .and_then(|a| a.u32().ok());
            assert_eq!(code, Some(e.result_code));
            // The answer is well framed all the way down.
            walk_all(answer.bytes());
        }
        Ok(c) => {
            let mut out = vec![0u8; bytes.len() * 2 + 4096];
            let n = encode_ccr(&c, &mut out).expect("re-encode fits");
            let again = Ccr::decode(&Message::new(&out[..n]).expect("frames")).expect("re-decodes");
            assert_eq!(again, c, "encode(decode(x)) decodes to the same CCR");
        }
    }
}

/// The decoder's result (its fast path, or the full decoder where the fast path gives
/// up) is the full decoder's alone, field for field and error for error; also when the
/// value decoded into still holds an earlier, different request.
fn same_as_full_decoder<'a>(msg: &Message<'a>, result: &Result<Ccr<'a>, ProtocolError>) {
    let mut full = Ccr::default();
    let expected = full.decode_full_into(msg).map(|()| full);
    assert_eq!(result, &expected, "fast path and full decoder disagree");
    let sample = crate::diameter::ccr::sample_ccr_update();
    let mut buf = [0u8; 1024];
    let n = encode_ccr(&sample, &mut buf).expect("sample encodes");
    let earlier = Message::new(&buf[..n]).expect("sample frames");
    let mut reused = Ccr::default();
    reused.decode_into(&earlier).expect("sample decodes");
    let again = reused.decode_into(msg).map(|()| reused);
    assert_eq!(again, expected, "a reused Ccr decodes as a fresh one");
}

/// Walks the AVPs gyro wrote (the top level and the members of Failed-AVP) without the
/// dictionary's value checks: framing must hold and stay within the bytes.
fn walk_all(msg: &[u8]) {
    let mut stack = vec![AvpIter::new(msg, HEADER_LEN, msg.len())];
    while let Some(it) = stack.last_mut() {
        match it.next() {
            None => {
                stack.pop();
            }
            Some(Err(e)) => panic!("encoded answer is badly framed: {e:?}"),
            Some(Ok(a)) => {
                assert!(a.offset as usize + a.length as usize <= msg.len());
                // Into gyro's Failed-AVP, one level: what it holds is the peer's AVP,
                // whose own contents may be as bad as the peer sent them.
                if a.code == 279 && stack.len() == 1 {
                    stack.push(a.group());
                }
            }
        }
    }
}

/// The AVP walk over arbitrary bytes: offsets only grow, every AVP lies inside the
/// input, and an error carries an allowed Result-Code with an in-bounds Failed-AVP.
pub fn avp_walk(input: &[u8]) {
    let mut last = 0u32;
    let mut depth_seen = 0usize;
    let r = walk(AvpIter::new(input, 0, input.len()), |v| {
        let end = v.avp.offset as usize + v.avp.length as usize;
        assert!(end <= input.len(), "AVP past the input");
        assert!(
            v.avp.offset >= last || v.depth > 0 || last == 0,
            "offsets go back"
        );
        if v.depth == 0 {
            last = v.avp.offset;
        }
        depth_seen = depth_seen.max(v.depth);
        Ok(())
    });
    assert!(depth_seen <= crate::diameter::limits::GROUP_DEPTH_MAX);
    if let Err(e) = r {
        // A walk from offset 0 has no header: offsets are checked against the input.
        assert!(
            ALLOWED.contains(&e.result_code),
            "unexpected Result-Code {}",
            e.result_code
        );
        if let FailedAvp::Copy { offset, len } = e.failed_avp {
            assert!(offset as usize + len as usize <= input.len());
        }
    }
}

/// A byte stream cut into chunks (sizes from the first bytes of the input) gives the
/// same answers, steps and close reason as the same stream in one read; nothing is
/// consumed beyond what was given.
pub fn framing(input: &[u8]) {
    let (sizes, stream) = input.split_at(input.len().min(8));
    let whole = serve(stream, &[stream.len().max(1)]);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b % 64) + 1).collect();
    let chunked = serve(stream, &sizes);
    assert_eq!(whole, chunked, "chunking changed the outcome");
}

fn open_peer() -> Peer {
    let mut cfg = PeerConfig::new("ocs.gyro.test", "gyro.test");
    cfg.message_size_max = 4096;
    cfg.tx_buffer_bytes = 1 << 20;
    let mut p = Peer::responder(cfg, 0);
    // A minimal valid CER from "fuzz.example".
    let mut cer = Vec::new();
    let avp = |code: u32, flags: u8, data: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&((u32::from(flags) << 24) | (8 + data.len() as u32)).to_be_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    let mut body = Vec::new();
    avp(264, 0x40, b"fuzz.example", &mut body);
    avp(296, 0x40, b"example", &mut body);
    avp(257, 0x40, &[0, 1, 127, 0, 0, 1], &mut body);
    avp(266, 0x40, &[0, 0, 0, 0], &mut body);
    avp(269, 0, b"fuzz", &mut body);
    avp(258, 0x40, &[0, 0, 0, 4], &mut body);
    let h = Header {
        version: 1,
        length: (HEADER_LEN + body.len()) as u32,
        flags: 0x80,
        command: 257,
        application_id: 0,
        hop_by_hop: 1,
        end_to_end: 1,
    };
    let mut hb = [0u8; HEADER_LEN];
    h.encode(&mut hb);
    cer.extend_from_slice(&hb);
    cer.extend_from_slice(&body);
    assert_eq!(p.handle_bytes(&cer, 0), Step::Consumed(cer.len()));
    let n = p.transmit().len();
    p.transmitted(n);
    p
}

/// Feeds `stream` in chunks of the given sizes (cycled), answering CCRs as a stand-in
/// application does; returns everything observable.
fn serve(stream: &[u8], sizes: &[usize]) -> (Vec<u8>, Vec<Step>, Option<crate::peer::CloseReason>) {
    let mut p = open_peer();
    let mut buf: Vec<u8> = Vec::new();
    let mut steps = Vec::new();
    let mut given = 0usize;
    let mut i = 0usize;
    let mut out = Vec::new();
    'outer: while given < stream.len() {
        let n = sizes[i % sizes.len()].min(stream.len() - given);
        i += 1;
        buf.extend_from_slice(&stream[given..given + n]);
        given += n;
        loop {
            let step = p.handle_bytes(&buf, 1);
            match step {
                Step::NeedMore => break,
                Step::Close => {
                    steps.push(step);
                    break 'outer;
                }
                Step::Consumed(n) | Step::Answer(n) | Step::Request(n) => {
                    assert!(n <= buf.len(), "consumed more than given");
                    if let Step::Request(_) = step {
                        let req = &buf[..n];
                        let msg = Message::new(req).expect("framed");
                        if let Err(e) = Ccr::decode(&msg) {
                            p.send_error(req, &e);
                        }
                    }
                    steps.push(step);
                    buf.drain(..n);
                }
            }
        }
        out.extend_from_slice(p.transmit());
        let t = p.transmit().len();
        p.transmitted(t);
    }
    out.extend_from_slice(p.transmit());
    (out, steps, p.close_reason())
}
