//! Proves the codec, the CDR writer and the peer's request path allocate nothing: a
//! counting global allocator, a warm-up, then thousands of decodes, encodes, CDR lines,
//! error answers and peer round trips, and the count must not move.

mod common;

use gyro_engine::cdr::{write_cdr, Cdr, CdrKind, CdrService};
use gyro_engine::diameter::answer::{encode_error_answer, Origin};
use gyro_engine::diameter::ccr::{encode_cca, encode_ccr, sample_ccr_update, AnswerMscc, Cca, Ccr};
use gyro_engine::diameter::Message;
use gyro_engine::peer::Step;

mod counting;
use counting::{allocations, count_this_thread};

#[test]
fn codec_and_peer_request_path_do_not_allocate() {
    count_this_thread(true);
    let mut ccr_buf = [0u8; 2048];
    let n = encode_ccr(&sample_ccr_update(), &mut ccr_buf).unwrap();
    let ccr_bytes = ccr_buf[..n].to_vec();
    let bad = common::ccr(&[common::avp(9999, b"mandatory and unknown")]);
    let origin = Origin {
        host: "ocs.gyro.test",
        realm: "gyro.test",
    };
    let mut peer = common::open_server(common::server_config());
    // Two CCRs and a DWR per round, as one read.
    let dwr = common::dwr(1);
    let stream: Vec<u8> = [ccr_bytes.clone(), dwr.clone(), ccr_bytes.clone()].concat();
    // 4 KiB: a CDR line is written through the window `gyro serve` uses.
    let mut out = [0u8; 4096];

    let mut round = |peer: &mut gyro_engine::peer::Peer| {
        let msg = Message::new(&ccr_bytes).unwrap();
        let c = Ccr::decode(&msg).unwrap();
        let mscc = [
            AnswerMscc {
                rating_group: Some(10),
                result_code: 2001,
                granted: c.mscc[0].requested,
                validity_time_s: Some(600),
                ..Default::default()
            },
            AnswerMscc {
                rating_group: Some(20),
                result_code: 2001,
                ..Default::default()
            },
        ];
        let cca = Cca::answering(&c, 2001, "ocs.gyro.test", "gyro.test", &mscc);
        assert!(encode_cca(&c.header, &cca, &mut out).unwrap() > 0);
        let services = [CdrService {
            rating_group: Some(10),
            used: 8_388_608,
            result_code: 2001,
            ..CdrService::default()
        }];
        let cdr = Cdr {
            kind: CdrKind::Ccr,
            seq: 7,
            shard: 0,
            ts_ms: 1,
            ccr: &c,
            msisdn: c.subscription(0),
            imsi: None,
            company: Some("acme"),
            result_code: 2001,
            services: &services,
        };
        assert!(write_cdr(&cdr, &mut out).unwrap() > 0);
        let e = Ccr::decode(&Message::new(&bad).unwrap()).unwrap_err();
        assert!(encode_error_answer(&bad, &e, &origin, &mut out).unwrap() > 0);

        let mut at = 0;
        while at < stream.len() {
            match peer.handle_bytes(&stream[at..], 5) {
                Step::Request(n) => {
                    let req = &stream[at..at + n];
                    let c = Ccr::decode(&Message::new(req).unwrap()).unwrap();
                    peer.send_with(|b| encode_cca(&c.header, &cca, b)).unwrap();
                    at += n;
                }
                Step::Consumed(n) => at += n,
                other => panic!("{other:?}"),
            }
        }
        let pending = peer.transmit().len();
        peer.transmitted(pending);
    };

    for _ in 0..100 {
        round(&mut peer);
    }
    // The counter works: an allocation moves it.
    let probe = allocations();
    std::hint::black_box(vec![0u8; 64]);
    assert!(allocations() > probe);
    let before = allocations();
    for _ in 0..10_000 {
        round(&mut peer);
    }
    assert_eq!(allocations() - before, 0, "allocations on the request path");
}
