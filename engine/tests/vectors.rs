//! Decodes every message of a capture made between independent Diameter stacks
//! (python-diameter 0.9.0, Erlang/OTP diameter 2.2.7 client and server): each must be
//! accepted by the decoder for its command, and every CCR must survive
//! decode → encode → decode unchanged.

mod common;
use common::pcap::diameter_messages;

use gyro_engine::diameter::base::{decode_capabilities, decode_result_code};
use gyro_engine::diameter::ccr::{encode_ccr, Ccr, RequestType};
use gyro_engine::diameter::validate::{check_request_header, validate};
use gyro_engine::diameter::{dict, Message};

const CAPTURE: &[u8] = include_bytes!("data/gy-peers.pcap");

#[test]
fn every_message_of_the_independent_capture_decodes() {
    let messages = diameter_messages(CAPTURE, 3895);
    assert_eq!(messages.len(), 44);
    let mut ccrs = 0;
    let mut events = 0;
    let mut with_3gpp = 0;
    for bytes in &messages {
        let msg = Message::new(bytes).expect("framed");
        let h = msg.header;
        if h.is_request() {
            check_request_header(&h).expect("header");
        }
        match (h.command, h.is_request()) {
            (257, _) => {
                let c = decode_capabilities(&msg).expect("CER/CEA");
                assert!(c.has_common_application());
            }
            (280, true) => validate(&msg, &dict::DWR).unwrap(),
            (280, false) => assert_eq!(decode_result_code(&msg, &dict::DWA), Ok(2001)),
            (282, true) => validate(&msg, &dict::DPR).unwrap(),
            (282, false) => assert_eq!(decode_result_code(&msg, &dict::DPA), Ok(2001)),
            (272, true) => {
                let c = Ccr::decode(&msg).unwrap_or_else(|e| panic!("CCR {e:?}"));
                ccrs += 1;
                assert!(!c.session_id.is_empty());
                if c.request_type == RequestType::Event {
                    events += 1;
                }
                if c.ps.charging_id.is_some() {
                    with_3gpp += 1;
                    assert!(c.ps.called_station_id.is_some());
                }
                let mut buf = [0u8; 4096];
                let n = encode_ccr(&c, &mut buf).unwrap();
                let again = Ccr::decode(&Message::new(&buf[..n]).unwrap()).unwrap();
                assert_eq!(again, c);
            }
            (272, false) => validate(&msg, &dict::CCA).unwrap(),
            other => panic!("unexpected command {other:?}"),
        }
    }
    assert_eq!(ccrs, 12);
    assert_eq!(events, 2);
    assert_eq!(with_3gpp, 4);
}

#[test]
fn python_ccr_fields_are_read() {
    let messages = diameter_messages(CAPTURE, 3895);
    let first_ccr = messages
        .iter()
        .find(|m| Message::new(m).unwrap().header.command == 272)
        .expect("a CCR");
    let c = Ccr::decode(&Message::new(first_ccr).unwrap()).unwrap();
    assert_eq!(c.request_type, RequestType::Initial);
    assert_eq!(c.service_context_id, "32251@3gpp.org");
    assert_eq!(c.subscription_ids().len(), 2);
    assert_eq!(c.mscc().len(), 1);
    assert_eq!(c.mscc()[0].rating_group, Some(100));
    assert!(c.mscc()[0].requested.is_some());
    assert!(c.ps.charging_id.is_some());
    assert!(c.ps.rat_type.is_some());
}
