//! Test helpers: raw message builders (so tests can write bytes our encoder never would),
//! an in-memory server loop around the peer state machine, and answer readers.
#![allow(dead_code)]

pub mod net;
pub mod pcap;

use gyro_engine::diameter::avp::AvpIter;
use gyro_engine::diameter::ccr::{encode_cca, AnswerMscc, Cca, Ccr};
use gyro_engine::diameter::{cmd_flags, Header, Message, HEADER_LEN};
use gyro_engine::peer::{Peer, PeerConfig, Step};

pub const M: u8 = 0x40;
pub const V: u8 = 0x80;

/// One AVP as raw bytes, padded. `length` overrides the AVP Length field.
pub fn avp_raw(
    code: u32,
    flags: u8,
    vendor: Option<u32>,
    data: &[u8],
    length: Option<u32>,
) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&code.to_be_bytes());
    let header_len = if vendor.is_some() { 12 } else { 8 };
    let len = length.unwrap_or((header_len + data.len()) as u32);
    v.extend_from_slice(&((u32::from(flags) << 24) | (len & 0xff_ffff)).to_be_bytes());
    if let Some(vid) = vendor {
        v.extend_from_slice(&vid.to_be_bytes());
    }
    v.extend_from_slice(data);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}
pub fn avp(code: u32, data: &[u8]) -> Vec<u8> {
    avp_raw(code, M, None, data, None)
}
pub fn avp_u32(code: u32, v: u32) -> Vec<u8> {
    avp(code, &v.to_be_bytes())
}
pub fn avp_3gpp(code: u32, data: &[u8]) -> Vec<u8> {
    avp_raw(code, V | M, Some(10415), data, None)
}
pub fn group(code: u32, members: &[Vec<u8>]) -> Vec<u8> {
    avp(code, &members.concat())
}
pub fn group_3gpp(code: u32, members: &[Vec<u8>]) -> Vec<u8> {
    avp_3gpp(code, &members.concat())
}

/// A message from a header and raw AVPs; the length is computed unless given.
pub fn message(flags: u8, command: u32, app: u32, h2h: u32, e2e: u32, avps: &[Vec<u8>]) -> Vec<u8> {
    let body = avps.concat();
    let len = (HEADER_LEN + body.len()) as u32;
    let h = Header {
        version: 1,
        length: len,
        flags,
        command,
        application_id: app,
        hop_by_hop: h2h,
        end_to_end: e2e,
    };
    let mut out = [0u8; HEADER_LEN];
    h.encode(&mut out);
    let mut v = out.to_vec();
    v.extend_from_slice(&body);
    v
}

pub const SESSION_ID: &str = "client.example;1;2;3";

/// The AVPs every CCR needs, in RFC 8506 order.
pub fn ccr_required() -> Vec<Vec<u8>> {
    vec![
        avp(263, SESSION_ID.as_bytes()),
        avp(264, b"client.example"),
        avp(296, b"example"),
        avp(283, b"ocs.example"),
        avp_u32(258, 4),
        avp(461, b"32251@3gpp.org"),
        avp_u32(416, 1),
        avp_u32(415, 0),
    ]
}

/// A CCR with the required AVPs followed by `extra`.
pub fn ccr(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut avps = ccr_required();
    avps.extend_from_slice(extra);
    message(cmd_flags::R | cmd_flags::P, 272, 4, 0x0101, 0x0202, &avps)
}

/// A CCR from a list of AVPs as given (nothing added).
pub fn ccr_exact(avps: &[Vec<u8>]) -> Vec<u8> {
    message(cmd_flags::R | cmd_flags::P, 272, 4, 0x0101, 0x0202, avps)
}

pub fn cer(origin_host: &str, apps: &[u32]) -> Vec<u8> {
    let mut avps = vec![
        avp(264, origin_host.as_bytes()),
        avp(296, b"example"),
        avp(257, &[0, 1, 127, 0, 0, 1]),
        avp_u32(266, 0),
        avp_raw(269, 0, None, b"test client", None),
    ];
    for a in apps {
        avps.push(avp_u32(258, *a));
    }
    message(cmd_flags::R, 257, 0, 0x77, 0x88, &avps)
}

pub fn dwr(h2h: u32) -> Vec<u8> {
    message(
        cmd_flags::R,
        280,
        0,
        h2h,
        h2h,
        &[avp(264, b"client.example"), avp(296, b"example")],
    )
}

pub fn server_config() -> PeerConfig {
    PeerConfig::new("ocs.gyro.test", "gyro.test")
}

/// A responder that has accepted a CER from `client.example`; its CEA is drained.
pub fn open_server(config: PeerConfig) -> Peer {
    let mut p = Peer::responder(config, 0);
    let c = cer("client.example", &[4]);
    assert_eq!(p.handle_bytes(&c, 0), Step::Consumed(c.len()));
    let n = p.transmit().len();
    assert_eq!(result_code(p.transmit()), Some(2001));
    p.transmitted(n);
    while p.poll_event().is_some() {}
    p
}

/// What a CCR gets from the stand-in application: 2001 and a GSU per MSCC when it
/// decodes, the error answer when it does not.
pub fn answer_request(peer: &mut Peer, bytes: &[u8]) {
    let msg = Message::new(bytes).expect("framed");
    match Ccr::decode(&msg) {
        Ok(c) => {
            let mut mscc = [AnswerMscc::default(); 8];
            for (i, m) in c.mscc().iter().enumerate() {
                mscc[i] = AnswerMscc {
                    rating_group: m.rating_group,
                    result_code: 2001,
                    granted: m.requested,
                    ..AnswerMscc::default()
                };
            }
            let cca = Cca::answering(
                &c,
                2001,
                "ocs.gyro.test",
                "gyro.test",
                &mscc[..c.mscc().len()],
            );
            peer.send_with(|b| encode_cca(&c.header, &cca, b))
                .expect("room for the answer");
        }
        Err(e) => peer.send_error(bytes, &e),
    }
}

/// Feeds `input` into the peer as one read and answers requests; returns the steps.
pub fn feed(peer: &mut Peer, buf: &mut Vec<u8>, input: &[u8], now_ms: u64) -> Vec<Step> {
    buf.extend_from_slice(input);
    let mut steps = Vec::new();
    loop {
        let step = peer.handle_bytes(buf, now_ms);
        steps.push(step);
        match step {
            Step::NeedMore | Step::Close => break,
            Step::Consumed(n) | Step::Answer(n) => {
                buf.drain(..n);
            }
            Step::Request(n) => {
                let req: Vec<u8> = buf[..n].to_vec();
                answer_request(peer, &req);
                buf.drain(..n);
            }
        }
    }
    steps
}

/// Sends `input` to a freshly opened server and returns every message it sent back.
pub fn exchange(input: &[u8]) -> (Vec<Vec<u8>>, Vec<Step>) {
    let mut p = open_server(server_config());
    let mut buf = Vec::new();
    let steps = feed(&mut p, &mut buf, input, 1);
    (split(p.transmit()), steps)
}

/// Splits a byte stream of whole messages.
pub fn split(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let h = Header::decode(bytes).unwrap();
        let n = h.length as usize;
        out.push(bytes[..n].to_vec());
        bytes = &bytes[n..];
    }
    out
}

/// The single answer to `input`.
pub fn answer_to(input: &[u8]) -> Vec<u8> {
    let (answers, _) = exchange(input);
    assert_eq!(
        answers.len(),
        1,
        "expected exactly one answer, got {}",
        answers.len()
    );
    answers.into_iter().next().unwrap()
}

pub fn top_avp(msg: &[u8], code: u32) -> Option<Vec<u8>> {
    let end = Header::decode(msg)?.length as usize;
    AvpIter::new(msg, HEADER_LEN, end)
        .flatten()
        .find(|a| a.code == code && a.vendor_id == 0)
        .map(|a| a.data().to_vec())
}

pub fn result_code(msg: &[u8]) -> Option<u32> {
    top_avp(msg, 268).map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
}

/// The contents of Failed-AVP (the offending AVP as the answer carries it).
pub fn failed_avp(msg: &[u8]) -> Option<Vec<u8>> {
    top_avp(msg, 279)
}

pub fn header(msg: &[u8]) -> Header {
    Header::decode(msg).unwrap()
}

/// Checks the invariants of every error answer: E bit exactly for 3xxx, Origin-Host
/// and Origin-Realm present, identifiers echoed.
pub fn assert_error_answer(answer: &[u8], request: &[u8], code: u32) {
    assert_eq!(result_code(answer), Some(code), "Result-Code");
    let a = header(answer);
    let r = header(request);
    assert!(!a.is_request());
    assert_eq!(
        a.is_error(),
        (3000..4000).contains(&code),
        "E bit for {code}"
    );
    assert_eq!((a.hop_by_hop, a.end_to_end), (r.hop_by_hop, r.end_to_end));
    assert_eq!(a.command, r.command);
    assert_eq!(top_avp(answer, 264).as_deref(), Some(&b"ocs.gyro.test"[..]));
    assert_eq!(top_avp(answer, 296).as_deref(), Some(&b"gyro.test"[..]));
    assert_eq!(a.length as usize, answer.len());
    assert_eq!(answer.len() % 4, 0);
}

/// Whether an external tool is on PATH. When `GYRO_REQUIRE_PEERS=1` (set by the test
/// command, which installs them) a missing tool fails the test instead of skipping it.
pub fn have_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("GYRO_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{name} is required (GYRO_REQUIRE_PEERS=1) but not installed"
        );
        eprintln!("{name} not installed: this interop check did not run");
    }
    found
}
