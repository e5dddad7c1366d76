//! Everything gyro's encoder writes (base messages, CCR, CCA, and error answers with
//! each kind of Failed-AVP) is put in a capture and read by tshark, an independent
//! decoder; it must report no malformed packet and no warning-level expert item. The one
//! exception is by design: an error answer's Failed-AVP carries the peer's offending AVP
//! (RFC 6733 §7.5), and an answer to an unknown command carries its code; tshark's
//! remark on that content must be the only one, and exactly the expected one.

mod common;
use common::*;

use gyro_engine::diameter::answer::{encode_error_answer, Origin};
use gyro_engine::diameter::base::{self, LocalIdentity};
use gyro_engine::diameter::ccr::{
    encode_cca, encode_ccr, sample_ccr_update, AnswerMscc, Cca, Ccr, Units,
};
use gyro_engine::diameter::{Header, Message};

const PORT: u16 = 3868;

fn encoded(f: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = f(&mut buf);
    buf.truncate(n);
    buf
}

/// (sent by the server, bytes, the one expert remark expected on this frame)
fn gyro_messages() -> Vec<(bool, Vec<u8>, Option<&'static str>)> {
    let ips = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let id = LocalIdentity {
        origin_host: "ocs.gyro.test",
        origin_realm: "gyro.test",
        host_ip_addresses: &ips,
        vendor_id: 0,
        product_name: "gyro",
        firmware_revision: 1,
        origin_state_id: 7,
    };
    let mut out = Vec::new();
    let cer = encoded(|b| base::encode_cer(&id, 1, 2, b).unwrap());
    let cer_h = Header::decode(&cer).unwrap();
    out.push((false, cer.clone(), None));
    out.push((
        true,
        encoded(|b| base::encode_cea(&id, &cer_h, 2001, None, b).unwrap()),
        None,
    ));
    let dwr = encoded(|b| base::encode_dwr(&id, 3, 4, b).unwrap());
    out.push((false, dwr.clone(), None));
    out.push((
        true,
        encoded(|b| base::encode_dwa(&id, &Header::decode(&dwr).unwrap(), 2001, b).unwrap()),
        None,
    ));

    let sample = encoded(|b| encode_ccr(&sample_ccr_update(), b).unwrap());
    out.push((false, sample.clone(), None));
    let c = Ccr::decode(&Message::new(&sample).unwrap()).unwrap();
    let mscc = [
        AnswerMscc {
            rating_group: Some(10),
            result_code: 2001,
            granted: Some(Units {
                total_octets: Some(10_485_760),
                ..Units::default()
            }),
            validity_time_s: Some(600),
            final_unit_action: Some(0),
            volume_quota_threshold: Some(1_048_576),
            quota_holding_time_s: Some(60),
            ..AnswerMscc::default()
        },
        AnswerMscc {
            rating_group: Some(20),
            result_code: 4012,
            ..AnswerMscc::default()
        },
    ];
    let cca = Cca {
        cost_micros: Some(1_250_000),
        currency_code: Some(978),
        check_balance_result: Some(0),
        ..Cca::answering(&c, 2001, "ocs.gyro.test", "gyro.test", &mscc)
    };
    out.push((
        true,
        encoded(|b| encode_cca(&c.header, &cca, b).unwrap()),
        None,
    ));

    // Error answers with each kind of Failed-AVP, to requests that tshark sees too.
    let origin = Origin {
        host: "ocs.gyro.test",
        realm: "gyro.test",
    };
    let mut missing = ccr_required();
    missing.remove(6);
    let bad_requests = [
        // 5005: Failed-AVP is a zero-filled example.
        (ccr_exact(&missing), None),
        // 5001: Failed-AVP is the unknown AVP.
        (ccr(&[avp(9999, b"data")]), Some("Unknown AVP 9999 (vendor=Reserved), if you know what this is you can add it to dictionary.xml")),
        // 5014: Failed-AVP is the inner AVP with the wrong size.
        (ccr(&[group(456, &[avp(432, &[0; 12])])]), Some("Bad Unsigned32 Length (12)")),
        // 3001 with the E bit: the answer carries the unknown command code.
        (message(0x80, 999, 4, 9, 9, &ccr_required()), Some("Unknown command, if you know what this is you can add it to dictionary.xml")),
        // 5014: Failed-AVP is the header of an AVP whose length was 0.
        (ccr(&[avp_raw(461, M, None, b"", Some(0))]), Some("Data is empty")),
        // 5004: an IPv4 Address of 3 bytes, nested in Service-Information.
        (ccr(&[group_3gpp(873, &[group_3gpp(874, &[avp_3gpp(1228, &[0, 1, 10, 0, 0])])])]), Some("Wrong length for IPv4 Address: 3 instead of 4")),
    ];
    for (req, remark) in bad_requests {
        let (answers, _) = exchange(&req);
        assert_eq!(answers.len(), 1);
        let e = match Ccr::decode(&Message::new(&req).unwrap()) {
            Err(e) => e,
            Ok(_) => gyro_engine::diameter::ProtocolError::bare(3001),
        };
        let direct = encoded(|b| encode_error_answer(&req, &e, &origin, b).unwrap());
        assert_eq!(direct, answers[0]);
        // The malformed request itself is not sent to tshark (it would rightly complain);
        // only gyro's answer is.
        out.push((true, answers[0].clone(), remark));
    }
    let dpr = encoded(|b| base::encode_dpr(&id, 0, 5, 6, b).unwrap());
    out.push((false, dpr.clone(), None));
    out.push((
        true,
        encoded(|b| base::encode_dpa(&id, &Header::decode(&dpr).unwrap(), 2001, b).unwrap()),
        None,
    ));
    out
}

#[test]
fn tshark_finds_nothing_malformed_in_what_gyro_encodes() {
    if !have_tool("tshark") {
        return;
    }
    let messages = gyro_messages();
    let frames: Vec<(bool, Vec<u8>)> = messages.iter().map(|(s, b, _)| (*s, b.clone())).collect();
    let capture = common::pcap::write_capture(&frames, PORT);
    let dir = std::env::temp_dir().join(format!("gyro-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gyro.pcap");
    std::fs::write(&path, &capture).unwrap();
    let run = |filter: &str, fields: &[&str]| {
        let mut cmd = std::process::Command::new("tshark");
        cmd.arg("-n")
            .arg("-r")
            .arg(&path)
            .arg("-d")
            .arg(format!("tcp.port=={PORT},diameter"))
            .arg("-Y")
            .arg(filter);
        if !fields.is_empty() {
            cmd.arg("-T").arg("fields");
            for f in fields {
                cmd.arg("-e").arg(f);
            }
        }
        let out = cmd.output().expect("tshark runs");
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let bad = run(
        r#"_ws.malformed || (diameter && _ws.expert.severity >= "warning" && !tcp.analysis.flags)"#,
        &["frame.number", "_ws.expert.message"],
    );
    let expected: String = messages
        .iter()
        .enumerate()
        .filter_map(|(i, (_, _, remark))| remark.map(|r| format!("{}\t{r}\n", i + 1)))
        .collect();
    assert_eq!(
        bad, expected,
        "tshark's remarks differ from the expected ones"
    );
    // tshark decoded every message as Diameter, with the commands we sent.
    let codes = run("diameter", &["diameter.cmd.code"]);
    let decoded: Vec<&str> = codes.lines().collect();
    assert_eq!(decoded.len(), messages.len(), "{codes}");
    let verbose = run("diameter", &["diameter.Result-Code"]);
    assert!(
        verbose.contains("5005") && verbose.contains("5001") && verbose.contains("3001"),
        "{verbose}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
