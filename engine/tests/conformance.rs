//! One test per row of the decoder and peer conformance table (docs/conformance.md):
//! each feeds the bad input through the real path (framer, peer state machine, CCR
//! decoder, error-answer encoder) and asserts the Result-Code and, where RFC 6733 asks
//! for one, the Failed-AVP bytes.

// Inputs are built from owned AVP byte vectors; `&[x.clone()]` reads better here.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;
use common::*;

use gyro_engine::diameter::cmd_flags;
use gyro_engine::diameter::frame::FrameError;
use gyro_engine::peer::{CloseReason, DuplicateKey, Event, Peer, Step};

fn close_reason(p: &mut Peer) -> Option<CloseReason> {
    let mut r = None;
    while let Some(e) = p.poll_event() {
        if let Event::Close(c) = e {
            r = Some(c);
        }
    }
    r
}

#[test]
fn row01_unsupported_version_5011() {
    let mut req = ccr(&[]);
    req[0] = 2;
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5011);
}

#[test]
fn row02_length_below_header_closes_without_answer() {
    for len in [0u32, 4, 19] {
        let mut req = ccr(&[]);
        req[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        let (answers, steps) = exchange(&req);
        assert!(answers.is_empty());
        assert_eq!(steps.last(), Some(&Step::Close));
    }
    let mut p = open_server(server_config());
    let mut buf = Vec::new();
    let steps = feed(&mut p, &mut buf, &[1, 0, 0, 8], 1);
    assert_eq!(steps, vec![Step::Close]);
    assert_eq!(
        close_reason(&mut p),
        Some(CloseReason::Framing(FrameError::LengthBelowHeader {
            length: 8
        }))
    );
}

#[test]
fn row03_length_not_multiple_of_four_5015() {
    // The message is cut at its stated length: an unknown AVP without its padding.
    let unknown = avp_raw(9999, 0, None, b"xy", None);
    let mut req2 = ccr(&[]);
    req2.extend_from_slice(&unknown[..10]); // header + 2 bytes, no padding
    let len = req2.len() as u32;
    req2[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    assert_eq!(len % 4, 2);
    let a = answer_to(&req2);
    assert_error_answer(&a, &req2, 5015);
}

#[test]
fn row04_partial_message_waits_for_deadline_then_5015_and_close() {
    let mut p = open_server(server_config());
    let req = ccr(&[]);
    let mut buf = Vec::new();
    assert_eq!(
        feed(&mut p, &mut buf, &req[..req.len() - 8], 1_000),
        vec![Step::NeedMore]
    );
    let deadline = p.poll_timeout().expect("frame deadline armed");
    assert_eq!(deadline, 1_000 + p.config().frame_deadline_ms);
    p.handle_timeout(deadline - 1);
    assert!(p.transmit().is_empty() && p.close_reason().is_none());
    p.handle_timeout(deadline);
    let answers = split(p.transmit());
    assert_eq!(answers.len(), 1);
    assert_error_answer(&answers[0], &req, 5015);
    assert_eq!(p.close_reason(), Some(CloseReason::FrameTimeout));
}

#[test]
fn row05_length_a_little_short_answers_5005_and_survives_or_closes() {
    // The last AVP (CC-Request-Number, 12 bytes) is outside the stated length, so it is
    // missing from the request and its bytes are read as the start of the next header.
    let mut req = ccr(&[]);
    let short = req.len() as u32 - 12;
    req[1..4].copy_from_slice(&short.to_be_bytes()[1..]);
    let mut stream = req.clone();
    stream.extend_from_slice(&dwr(9));
    let (answers, steps) = exchange(&stream);
    assert!(!answers.is_empty());
    assert_error_answer(&answers[0], &req, 5005);
    assert_eq!(failed_avp(&answers[0]).unwrap(), avp_u32(415, 0));
    // Whatever the garbage header leads to, it is a clean close or more framing.
    assert!(matches!(
        steps.last(),
        Some(Step::Close) | Some(Step::NeedMore)
    ));
}

#[test]
fn row06_length_above_max_closes_without_buffering() {
    let mut cfg = server_config();
    cfg.message_size_max = 64 * 1024;
    let mut p = open_server(cfg);
    // Only the first 4 bytes are given: the decision is made before any body arrives.
    let steps = feed(&mut p, &mut Vec::new(), &[1, 0x01, 0x00, 0x04], 1);
    assert_eq!(steps, vec![Step::Close]);
    assert_eq!(
        close_reason(&mut p),
        Some(CloseReason::Framing(FrameError::LengthAboveMax {
            length: 0x010004,
            max: 65536
        }))
    );
}

#[test]
fn row07_header_bits() {
    let mut e_in_request = ccr(&[]);
    e_in_request[4] |= cmd_flags::E;
    assert_error_answer(&answer_to(&e_in_request), &e_in_request, 3008);

    let mut reserved = ccr(&[]);
    reserved[4] |= 0x01;
    assert_error_answer(&answer_to(&reserved), &reserved, 5013);
}

#[test]
fn row08_unknown_command_3001_and_application_3007() {
    let req = message(cmd_flags::R, 999, 4, 1, 2, &ccr_required());
    assert_error_answer(&answer_to(&req), &req, 3001);
    let req = message(cmd_flags::R, 272, 0, 1, 2, &ccr_required());
    assert_error_answer(&answer_to(&req), &req, 3007);
}

#[test]
fn row09_avp_length_below_8_gets_5014_with_zero_padded_header() {
    for bad_len in [0u32, 5] {
        let bad = avp_raw(461, M, None, b"", Some(bad_len)); // 8 bytes, length field bad
        let mut avps = ccr_required();
        avps.push(bad);
        let req = ccr_exact(&avps);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5014);
        // Code and flags kept, length rewritten to the 8-byte minimum, no data.
        assert_eq!(failed_avp(&a).unwrap(), vec![0, 0, 1, 0xcd, M, 0, 0, 8]);
    }
}

#[test]
fn row10_vendor_bit_with_length_8_to_11_gets_5014() {
    for bad_len in 8u32..=11 {
        let mut bad = avp_raw(872, V | M, None, &[0, 0, 0x28, 0xaf], Some(bad_len));
        bad.truncate(12);
        let req = ccr(&[bad]);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5014);
        let f = failed_avp(&a).unwrap();
        assert_eq!(f, vec![0, 0, 3, 0x68, V | M, 0, 0, 12, 0, 0, 0x28, 0xaf]);
    }
}

#[test]
fn row11_avp_length_past_end_5014_before_5001() {
    for (code, flags) in [(461u32, M), (9999, 0), (9999, M)] {
        let mut bad = avp_raw(code, flags, None, b"abcd", Some(200));
        bad.truncate(12);
        let req = ccr(&[bad]);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5014);
        // Header with its length rewritten to cover the data that did arrive.
        let mut expect = avp_raw(code, flags, None, b"abcd", None);
        expect.truncate(12);
        assert_eq!(
            failed_avp(&a).unwrap(),
            expect,
            "code {code} flags {flags:#x}"
        );
    }
}

#[test]
fn row12_avp_length_too_short_for_contents_5014() {
    // CC-Request-Number claims 10 bytes: 2 bytes of data for an Unsigned32.
    let mut avps = ccr_required();
    avps.pop();
    let bad = avp_raw(415, M, None, &[0, 0, 0, 0], Some(10));
    avps.push(bad.clone());
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5014);
    assert_eq!(
        failed_avp(&a).unwrap(),
        avp_raw(415, M, None, &[0, 0], None)
    );
}

#[test]
fn row13_fixed_width_with_wrong_size_5014() {
    let mut avps = ccr_required();
    avps.pop();
    avps.push(avp(415, &[0; 12]));
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5014);
    assert_eq!(failed_avp(&a).unwrap(), avp(415, &[0; 12]));

    let bad_time = avp(55, &[0; 8]);
    let req = ccr(&[bad_time.clone()]);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5014);
    assert_eq!(failed_avp(&a).unwrap(), bad_time);
}

#[test]
fn row14_address_family_and_length_5004() {
    for data in [
        &[0u8, 1, 10, 0, 0][..],
        &[0, 2, 1, 2, 3, 4],
        &[0, 99, 1, 2, 3, 4],
    ] {
        let sgsn = avp_3gpp(1228, data);
        let req = ccr(&[group_3gpp(873, &[group_3gpp(874, &[sgsn.clone()])])]);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5004);
        // Only the offending inner AVP.
        assert_eq!(failed_avp(&a).unwrap(), sgsn);
    }
}

#[test]
fn row15_nonzero_padding_tolerated_missing_padding_5015() {
    let mut odd = avp(461, b"32251@3gpp.org!"); // 15 bytes of data, 1 byte padding
    let pad_at = odd.len() - 1;
    odd[pad_at] = 0xff;
    let mut avps = ccr_required();
    avps[5] = odd;
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_eq!(result_code(&a), Some(2001));

    let mut req = ccr(&[]);
    req.extend_from_slice(&avp(9999, b"x")[..9]); // unknown AVP without its padding
    let len = req.len() as u32;
    req[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    assert_error_answer(&answer_to(&req), &req, 5015);
}

#[test]
fn row16_unknown_mandatory_avp_5001() {
    for bad in [
        avp(9999, b"data"),
        avp_raw(1, V | M, Some(12345), b"x", None),
    ] {
        let req = ccr(&[bad.clone()]);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5001);
        assert_eq!(failed_avp(&a).unwrap(), bad);
    }
    // Inside a Grouped AVP too.
    let bad = avp(9999, b"data");
    let req = ccr(&[group(456, &[avp_u32(432, 1), bad.clone()])]);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5001);
    assert_eq!(failed_avp(&a).unwrap(), bad);
}

#[test]
fn row17_unknown_avp_without_m_is_ignored() {
    let req = ccr(&[
        avp_raw(9999, 0, None, b"data", None),
        avp_raw(7, V, Some(12345), b"x", None),
    ]);
    assert_eq!(result_code(&answer_to(&req)), Some(2001));
}

#[test]
fn row18_known_mandatory_avp_outside_grammar_5001() {
    let bad = avp_u32(273, 0); // Disconnect-Cause in a CCR
    let req = ccr(&[bad.clone()]);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5001);
    assert_eq!(failed_avp(&a).unwrap(), bad);
}

#[test]
fn row19_missing_required_avp_5005_with_zero_filled_example() {
    // (index in ccr_required, expected Failed-AVP)
    let cases: [(usize, Vec<u8>); 4] = [
        (0, avp(263, b"")),
        (4, avp_u32(258, 0)),
        (6, avp_u32(416, 0)),
        (7, avp_u32(415, 0)),
    ];
    for (i, expect) in cases {
        let mut avps = ccr_required();
        avps.remove(i);
        let req = ccr_exact(&avps);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5005);
        assert_eq!(failed_avp(&a).unwrap(), expect, "missing #{i}");
    }
}

#[test]
fn row20_avp_occurs_too_many_times_5009() {
    for copies in [2usize, 64] {
        let mut avps = ccr_required();
        for _ in 1..copies {
            avps.insert(2, avp(264, b"client.example"));
        }
        let req = ccr_exact(&avps);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5009);
        assert_eq!(failed_avp(&a).unwrap(), avp(264, b"client.example"));
    }
    // More MSCC than the fixed table holds.
    let mscc: Vec<Vec<u8>> = (0..9).map(|i| group(456, &[avp_u32(432, i)])).collect();
    let req = ccr(&mscc);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5009);
    assert_eq!(failed_avp(&a).unwrap(), mscc[8]);
}

#[test]
fn row21_grouped_payload_not_avps_5014_with_inner_avp() {
    // MSCC whose payload is 8 bytes claiming an AVP of length 64.
    let inner = [0u8, 0, 1, 0xb0, M, 0, 0, 64];
    let req = ccr(&[avp(456, &inner)]);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5014);
    assert_eq!(failed_avp(&a).unwrap(), vec![0, 0, 1, 0xb0, M, 0, 0, 8]);
    // A truncated inner AVP: Rating-Group cut after 2 data bytes.
    let rg = avp_u32(432, 7);
    let req = ccr(&[avp(456, &rg[..10])]);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5014);
    assert_eq!(
        failed_avp(&a).unwrap(),
        avp_raw(432, M, None, &[0, 0], None)
    );
}

#[test]
fn row22_deep_nesting_rejected_without_recursion() {
    // 10,000 nested Proxy-Info AVPs (80 KB): the framer's limit is raised so the depth
    // limit is what answers.
    let mut nested = avp_u32(415, 0);
    for _ in 0..10_000 {
        nested = group(284, &[nested]);
    }
    let req = ccr(&[nested]);
    let mut cfg = server_config();
    cfg.message_size_max = 1 << 20;
    let mut p = open_server(cfg);
    feed(&mut p, &mut Vec::new(), &req, 1);
    let answers = split(p.transmit());
    assert_eq!(answers.len(), 1);
    assert_error_answer(&answers[0], &req, 5004);
    // The Failed-AVP is the Proxy-Info at the depth limit (a copy, so it is long).
    let f = failed_avp(&answers[0]).unwrap();
    assert_eq!(&f[..4], &[0, 0, 1, 28]);
}

#[test]
fn row23_enumerated_out_of_range_5004() {
    for v in [0u32, 5] {
        let mut avps = ccr_required();
        avps[6] = avp_u32(416, v);
        let req = ccr_exact(&avps);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5004);
        assert_eq!(failed_avp(&a).unwrap(), avp_u32(416, v));
    }
    let ccfh = avp_u32(427, 3);
    let req = ccr(&[ccfh.clone()]);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5004);
    assert_eq!(failed_avp(&a).unwrap(), ccfh);
}

#[test]
fn row24_bad_utf8_5004() {
    for i in [0usize, 1] {
        let mut avps = ccr_required();
        let code = if i == 0 { 263 } else { 264 };
        avps[i] = avp(code, &[b'a', 0xff, 0xfe, b'b']);
        let req = ccr_exact(&avps);
        let a = answer_to(&req);
        assert_error_answer(&a, &req, 5004);
        assert_eq!(failed_avp(&a).unwrap(), avps[i]);
    }
}

#[test]
fn row25_empty_and_oversized_values_5004() {
    let mut avps = ccr_required();
    avps[1] = avp(264, b"");
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5004);
    assert_eq!(failed_avp(&a).unwrap(), avp(264, b""));

    let mut avps = ccr_required();
    let long = vec![b's'; 8192];
    avps[0] = avp(263, &long);
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5004);
    // The error answer does not echo an oversized Session-Id.
    assert_eq!(top_avp(&a, 263), None);
}

#[test]
fn row26_session_id_not_first_accepted_twice_5009() {
    let mut avps = ccr_required();
    let sid = avps.remove(0);
    avps.push(sid.clone());
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_eq!(result_code(&a), Some(2001));
    assert_eq!(top_avp(&a, 263).as_deref(), Some(SESSION_ID.as_bytes()));

    let mut avps = ccr_required();
    avps.push(sid.clone());
    let req = ccr_exact(&avps);
    let a = answer_to(&req);
    assert_error_answer(&a, &req, 5009);
    assert_eq!(failed_avp(&a).unwrap(), sid);
}

#[test]
fn row27_duplicate_key_ignores_t_flag_and_host_case() {
    // The key is the same for the original and its retransmission (T set), whatever the
    // Origin-Host's case; the charging core answers both from one decision.
    let original = ccr(&[]);
    let mut retransmit = original.clone();
    retransmit[4] |= cmd_flags::T;
    let key = |bytes: &[u8], host: &str| DuplicateKey::new(host, header(bytes).end_to_end);
    assert_eq!(
        key(&original, "client.example"),
        key(&retransmit, "CLIENT.example")
    );
    // Short and long hosts alike; hosts that differ by one byte anywhere differ.
    for host in [
        "pgw",
        "pgw.test",
        "pgw1.test",
        "pgw.epc.mnc001.mcc001.3gppnetwork.org",
    ] {
        let upper = host.to_ascii_uppercase();
        assert_eq!(key(&original, host), key(&original, &upper), "{host}");
        for i in 0..host.len() {
            let mut changed = host.as_bytes().to_vec();
            changed[i] = if changed[i] == b'x' { b'y' } else { b'x' };
            let changed = String::from_utf8(changed).unwrap();
            assert_ne!(key(&original, host), key(&original, &changed), "{changed}");
        }
        assert_ne!(key(&original, host), key(&original, &format!("{host}a")));
    }
    let mut other = original.clone();
    other[19] ^= 1;
    assert_ne!(
        key(&original, "client.example"),
        key(&other, "client.example")
    );
    // Both decode, and the retransmission keeps its T flag for the application.
    let (answers, steps) = exchange(&[original.clone(), retransmit.clone()].concat());
    assert_eq!(answers.len(), 2);
    assert!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::Request(_)))
            .count()
            == 2
    );
    assert_eq!(answers[0][8..], answers[1][8..]);
}

#[test]
fn row28_protocol_error_takes_precedence() {
    let mut avps = ccr_required();
    avps.remove(0);
    let mut req = ccr_exact(&avps);
    req[4] |= cmd_flags::E;
    assert_error_answer(&answer_to(&req), &req, 3008);
}

#[test]
fn row29_unsolicited_answers_dropped() {
    let mut p = open_server(server_config());
    let mut buf = Vec::new();
    // A DWA nobody asked for, and a CCA (application answer) for the application.
    let dwa = message(
        0,
        280,
        0,
        0xdead,
        0xbeef,
        &[avp_u32(268, 2001), avp(264, b"c"), avp(296, b"e")],
    );
    let steps = feed(&mut p, &mut buf, &dwa, 1);
    assert_eq!(steps[0], Step::Consumed(dwa.len()));
    assert!(p.transmit().is_empty());
    assert_eq!(
        p.poll_event(),
        Some(Event::UnexpectedAnswerDropped { hop_by_hop: 0xdead })
    );

    // A DWA with the right Hop-by-Hop but the wrong End-to-End is not ours either.
    p.handle_timeout(p.poll_timeout().unwrap());
    let sent = split(p.transmit());
    let dwr = &sent[0];
    let h = header(dwr);
    assert_eq!(h.command, 280);
    p.transmitted(dwr.len());
    let wrong = message(
        0,
        280,
        0,
        h.hop_by_hop,
        h.end_to_end ^ 1,
        &[avp_u32(268, 2001), avp(264, b"c"), avp(296, b"e")],
    );
    feed(&mut p, &mut buf, &wrong, 2);
    assert!(matches!(
        p.poll_event(),
        Some(Event::UnexpectedAnswerDropped { .. })
    ));
    assert!(p.close_reason().is_none());
}

#[test]
fn row30_stream_split_at_every_offset_gives_identical_results() {
    let mut stream = ccr(&[group(456, &[avp_u32(432, 1)])]);
    stream.extend_from_slice(&dwr(5));
    let mut bad = ccr(&[avp(9999, b"m")]);
    bad[19] = 9;
    stream.extend_from_slice(&bad);
    stream.extend_from_slice(&ccr(&[]));

    let (whole, _) = exchange(&stream);
    assert_eq!(whole.len(), 4);
    for cut in 0..=stream.len() {
        for chunk in [1usize, 3, 7] {
            let mut p = open_server(server_config());
            let mut buf = Vec::new();
            feed(&mut p, &mut buf, &stream[..cut], 1);
            for piece in stream[cut..].chunks(chunk) {
                feed(&mut p, &mut buf, piece, 1);
            }
            assert_eq!(split(p.transmit()), whole, "cut at {cut}, chunk {chunk}");
        }
    }
    // Many messages in one read.
    let many: Vec<u8> = (0..100).flat_map(|_| stream.clone()).collect();
    let (answers, _) = exchange(&many);
    assert_eq!(answers.len(), 400);
}
