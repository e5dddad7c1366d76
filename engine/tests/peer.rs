//! The peer state machine driven against itself in memory with simulated time: CER/CEA,
//! allow-list and application negotiation, DWR/DWA, DPR/DPA in both directions, and the
//! RFC 3539 watchdog matrix (the remote answers 0, 1 or 2 DWRs, then goes silent).

mod common;
use common::*;

use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::peer::{
    CloseReason, Event, Peer, PeerConfig, PeerState, Step, Watchdog, WatchdogState,
};

fn client_config() -> PeerConfig {
    PeerConfig::new("client.example", "example")
}

/// Moves every pending byte from `from` to `to` and lets `to` handle it.
fn pump(from: &mut Peer, to: &mut Peer, now_ms: u64) -> Vec<Step> {
    let bytes = from.transmit().to_vec();
    from.transmitted(bytes.len());
    let mut buf = Vec::new();
    feed(to, &mut buf, &bytes, now_ms)
}

fn events(p: &mut Peer) -> Vec<Event> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

/// Initiator and responder after a successful capabilities exchange.
fn connected(server_cfg: PeerConfig) -> (Peer, Peer) {
    let mut client = Peer::initiator(client_config(), 0);
    let mut server = Peer::responder(server_cfg, 0);
    client.connection_up(0);
    pump(&mut client, &mut server, 1);
    pump(&mut server, &mut client, 2);
    (client, server)
}

#[test]
fn capabilities_exchange_opens_both_sides() {
    let (mut client, mut server) = connected(server_config());
    assert_eq!(client.state(), PeerState::Open);
    assert_eq!(server.state(), PeerState::Open);
    assert_eq!(server.remote_origin_host(), "client.example");
    assert_eq!(client.remote_origin_host(), "ocs.gyro.test");
    assert!(events(&mut client).contains(&Event::Up));
    assert!(events(&mut server).contains(&Event::Up));
    assert_eq!(client.watchdog_state(), WatchdogState::Okay);
}

#[test]
fn unknown_peer_gets_3010_and_is_closed() {
    let mut cfg = server_config();
    cfg.allowed_peers = vec!["pgw1.example".into()];
    let mut server = Peer::responder(cfg, 0);
    let req = cer("client.example", &[4]);
    feed(&mut server, &mut Vec::new(), &req, 1);
    let cea = split(server.transmit()).remove(0);
    assert_error_answer(&cea, &req, 3010);
    assert_eq!(server.close_reason(), Some(CloseReason::CerRefused(3010)));
    // Allowed, in another case.
    let mut cfg = server_config();
    cfg.allowed_peers = vec!["CLIENT.example".into()];
    let mut server = Peer::responder(cfg, 0);
    feed(&mut server, &mut Vec::new(), &req, 1);
    assert_eq!(result_code(server.transmit()), Some(2001));
}

#[test]
fn no_common_application_gets_5010_and_is_closed() {
    let mut server = Peer::responder(server_config(), 0);
    let req = cer("client.example", &[16777238]);
    feed(&mut server, &mut Vec::new(), &req, 1);
    let cea = split(server.transmit()).remove(0);
    assert_error_answer(&cea, &req, 5010);
    assert_eq!(server.close_reason(), Some(CloseReason::CerRefused(5010)));
    // Relay is a common application.
    let mut server = Peer::responder(server_config(), 0);
    feed(
        &mut server,
        &mut Vec::new(),
        &cer("client.example", &[0xffff_ffff]),
        1,
    );
    assert_eq!(result_code(server.transmit()), Some(2001));
}

#[test]
fn vendor_specific_application_id_counts_as_common() {
    let vsai = group(260, &[avp_u32(266, 10415), avp_u32(258, 4)]);
    let req = message(
        0x80,
        257,
        0,
        1,
        1,
        &[
            avp(264, b"pgw.example"),
            avp(296, b"example"),
            avp(257, &[0, 1, 10, 0, 0, 1]),
            avp_u32(266, 10415),
            avp_raw(269, 0, None, b"pgw", None),
            vsai,
        ],
    );
    let mut server = Peer::responder(server_config(), 0);
    feed(&mut server, &mut Vec::new(), &req, 1);
    assert_eq!(result_code(server.transmit()), Some(2001));
}

#[test]
fn invalid_cer_is_answered_with_its_error() {
    // Missing Product-Name: 5005 in the CEA, Failed-AVP names it.
    let req = message(
        0x80,
        257,
        0,
        1,
        1,
        &[
            avp(264, b"pgw.example"),
            avp(296, b"example"),
            avp(257, &[0, 1, 10, 0, 0, 1]),
            avp_u32(266, 0),
            avp_u32(258, 4),
        ],
    );
    let mut server = Peer::responder(server_config(), 0);
    feed(&mut server, &mut Vec::new(), &req, 1);
    let cea = split(server.transmit()).remove(0);
    assert_error_answer(&cea, &req, 5005);
    assert_eq!(failed_avp(&cea).unwrap(), avp_raw(269, 0, None, b"", None));
}

#[test]
fn first_message_not_cer_closes() {
    let mut server = Peer::responder(server_config(), 0);
    let steps = feed(&mut server, &mut Vec::new(), &ccr(&[]), 1);
    assert_eq!(steps, vec![Step::Close]);
    assert_eq!(server.close_reason(), Some(CloseReason::NoCer));
    assert!(server.transmit().is_empty());
}

#[test]
fn silent_connection_times_out_waiting_for_cer() {
    let mut server = Peer::responder(server_config(), 0);
    let t = server.poll_timeout().unwrap();
    assert_eq!(t, server.config().capabilities_timeout_ms);
    server.handle_timeout(t);
    assert_eq!(
        server.close_reason(),
        Some(CloseReason::CapabilitiesTimeout)
    );
}

#[test]
fn dwr_is_answered_and_dwa_resets_the_watchdog() {
    let (mut client, mut server) = connected(server_config());
    let t = client.poll_timeout().unwrap();
    // Tw is 30 s ± 2 s.
    assert!((28_000..=32_002).contains(&t), "first watchdog at {t}");
    client.handle_timeout(t);
    let dwr = split(client.transmit()).remove(0);
    assert_eq!(header(&dwr).command, 280);
    pump(&mut client, &mut server, t + 1);
    let dwa = split(server.transmit()).remove(0);
    assert_eq!(result_code(&dwa), Some(2001));
    assert_eq!(header(&dwa).hop_by_hop, header(&dwr).hop_by_hop);
    pump(&mut server, &mut client, t + 2);
    assert_eq!(client.watchdog_state(), WatchdogState::Okay);
    let next = client.poll_timeout().unwrap();
    assert!(next >= t + 2 + 28_000, "watchdog re-armed from the DWA");
}

#[test]
fn dpr_from_either_side_is_answered_and_closes() {
    for initiator_disconnects in [true, false] {
        let (mut client, mut server) = connected(server_config());
        let (a, b) = if initiator_disconnects {
            (&mut client, &mut server)
        } else {
            (&mut server, &mut client)
        };
        a.disconnect(disconnect_cause::REBOOTING, 10);
        assert_eq!(a.state(), PeerState::Closing);
        pump(a, b, 11);
        assert_eq!(b.close_reason(), Some(CloseReason::PeerDisconnected(0)));
        let dpa = split(b.transmit()).remove(0);
        assert_eq!(result_code(&dpa), Some(2001));
        pump(b, a, 12);
        assert_eq!(a.close_reason(), Some(CloseReason::Disconnected));
    }
}

#[test]
fn dpr_without_dpa_closes_after_timeout() {
    let (mut client, _server) = connected(server_config());
    client.disconnect(disconnect_cause::BUSY, 100);
    let t = client.poll_timeout().unwrap();
    assert_eq!(t, 100 + client.config().disconnect_timeout_ms);
    client.handle_timeout(t);
    assert_eq!(client.close_reason(), Some(CloseReason::DisconnectTimeout));
}

#[test]
fn application_requests_and_answers_pass_through() {
    let (mut client, mut server) = connected(server_config());
    let req = ccr(&[group(456, &[avp_u32(432, 10)])]);
    client
        .send_with(|b| {
            b[..req.len()].copy_from_slice(&req);
            Ok(req.len())
        })
        .unwrap();
    let steps = pump(&mut client, &mut server, 5);
    assert_eq!(steps[0], Step::Request(req.len()));
    let steps = pump(&mut server, &mut client, 6);
    assert!(matches!(steps[0], Step::Answer(_)));
}

/// Runs a client whose server answers `answered` DWRs and then goes silent; returns the
/// watchdog states seen, in order, and when the connection was declared down.
fn silent_after(answered: usize) -> (Vec<WatchdogState>, u64) {
    let (mut client, mut server) = connected(server_config());
    events(&mut client);
    let mut seen = vec![client.watchdog_state()];
    let mut dwrs = 0;
    let mut now = 0;
    for _ in 0..20 {
        now = client.poll_timeout().unwrap();
        client.handle_timeout(now);
        for e in events(&mut client) {
            if let Event::Watchdog { to, .. } = e {
                seen.push(to);
            }
        }
        if client.close_reason().is_some() {
            break;
        }
        if !client.transmit().is_empty() {
            if dwrs < answered {
                pump(&mut client, &mut server, now);
                pump(&mut server, &mut client, now);
            } else {
                let n = client.transmit().len();
                client.transmitted(n);
            }
            dwrs += 1;
        }
    }
    assert_eq!(client.close_reason(), Some(CloseReason::WatchdogDown));
    (seen, now)
}

#[test]
fn watchdog_matrix_peer_answers_0_1_2_dwrs_then_silent() {
    for answered in 0..=2usize {
        let (seen, down_at) = silent_after(answered);
        assert_eq!(
            seen,
            vec![
                WatchdogState::Okay,
                WatchdogState::Suspect,
                WatchdogState::Down
            ],
            "answered {answered}"
        );
        // Each answered DWR buys one more Tw; then 3 Tw of silence: DWR, SUSPECT, DOWN.
        let tws = answered as u64 + 3;
        assert!(
            down_at >= tws * 28_000 && down_at <= tws * 32_000 + 10,
            "answered {answered}: down at {down_at}"
        );
    }
}

#[test]
fn watchdog_reopen_needs_three_dwas() {
    // RFC 3539 §3.4.1 on a reconnected transport: answered 0, 1 or 2 DWRs then silent,
    // the connection never becomes OKAY and goes DOWN; the third DWA fails back.
    for answered in 0..=3 {
        let mut w = Watchdog::new(30_000, 0, 7);
        w.connection_up(0);
        w.timer_expired(30_000);
        w.timer_expired(60_000);
        w.timer_expired(90_000);
        assert_eq!(w.state(), WatchdogState::Down);
        let mut now = 90_000;
        let a = w.connection_up(now);
        assert!(a.send_dwr);
        assert_eq!(w.state(), WatchdogState::Reopen);
        let mut answers = 0;
        let mut became_okay = false;
        for _ in 0..10 {
            if answers < answered {
                let a = w.receive_dwa(now + 1);
                answers += 1;
                became_okay |= a.failback;
            }
            if w.state() != WatchdogState::Reopen {
                break;
            }
            now = w.deadline_ms();
            w.timer_expired(now);
            if w.state() == WatchdogState::Down {
                break;
            }
        }
        if answered == 3 {
            assert!(became_okay);
            assert_eq!(w.state(), WatchdogState::Okay);
        } else {
            assert!(!became_okay);
            assert_eq!(w.state(), WatchdogState::Down, "answered {answered}");
        }
    }
}

#[test]
fn watchdog_failback_on_any_traffic_in_suspect() {
    let mut w = Watchdog::new(30_000, 0, 1);
    w.connection_up(0);
    assert!(w.timer_expired(30_000).send_dwr);
    assert!(w.timer_expired(60_000).failover);
    assert_eq!(w.state(), WatchdogState::Suspect);
    assert!(w.receive_other(61_000).failback);
    assert_eq!(w.state(), WatchdogState::Okay);
}

#[test]
fn watchdog_jitter_stays_within_two_seconds() {
    let mut w = Watchdog::new(30_000, 2_000, 12345);
    w.connection_up(0);
    let mut now = 0;
    let mut min = u64::MAX;
    let mut max = 0;
    for _ in 0..1000 {
        let d = w.deadline_ms() - now;
        min = min.min(d);
        max = max.max(d);
        now = w.deadline_ms();
        w.receive_other(now);
    }
    assert!(min >= 28_000 && max <= 32_000, "{min}..{max}");
    assert!(max - min > 3_000, "jitter is used");
}

#[test]
fn a_grouped_avp_ending_in_a_partial_header_is_5014() {
    // Vendor-Specific-Application-Id whose data ends with 4 stray bytes: fewer than an
    // AVP header is left in the group, though the message goes on after it.
    let mut vsai = group(260, &[avp_u32(266, 10415), avp_u32(258, 4)]);
    let stray = [0u8, 0, 1, 2];
    let len = (vsai.len() + 4) as u32;
    vsai[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
    vsai.extend_from_slice(&stray);
    let req = message(
        0x80,
        257,
        0,
        1,
        1,
        &[
            avp(264, b"pgw.example"),
            avp(296, b"example"),
            vsai,
            // What follows the group must not leak into the Failed-AVP's header.
            avp_raw(0xff00_0001, 0, None, b"next", None),
            avp(257, &[0, 1, 10, 0, 0, 1]),
            avp_u32(266, 10415),
            avp_raw(269, 0, None, b"pgw", None),
        ],
    );
    let mut server = Peer::responder(server_config(), 0);
    feed(&mut server, &mut Vec::new(), &req, 1);
    let cea = split(server.transmit()).remove(0);
    assert_error_answer(&cea, &req, 5014);
    // Failed-AVP: the stray bytes' header, zero-padded to 8 with its length rewritten.
    assert_eq!(failed_avp(&cea).unwrap(), vec![0, 0, 1, 2, 0, 0, 0, 8]);
}

#[test]
fn a_peer_that_does_not_read_is_cut_off_at_the_transmit_limit() {
    // The transmit buffer is fixed; answers pile up while the socket is not written,
    // and the one that does not fit marks the peer as a slow reader to be closed.
    let mut cfg = server_config();
    cfg.tx_buffer_bytes = 4096;
    let mut server = open_server(cfg);
    let mut buf = Vec::new();
    let mut requests = 0;
    while server.close_reason().is_none() && requests < 1000 {
        feed(&mut server, &mut buf, &dwr(requests), 1);
        requests += 1;
    }
    assert_eq!(server.close_reason(), Some(CloseReason::SlowReader));
    assert!(server.transmit().len() <= 4096);
    assert!(
        requests > 10,
        "dozens of answers fit before the limit ({requests})"
    );
    assert_eq!(feed(&mut server, &mut buf, &dwr(0), 2), vec![Step::Close]);
}

#[test]
fn a_second_cer_is_refused_with_a_complete_cea() {
    let mut server = open_server(server_config());
    let again = cer("client.example", &[4]);
    feed(&mut server, &mut Vec::new(), &again, 5);
    let cea = split(server.transmit()).remove(0);
    assert_error_answer(&cea, &again, 5012);
    // The CEA grammar's capability AVPs are there, and the connection stays open.
    let msg = gyro_engine::diameter::Message::new(&cea).unwrap();
    let caps = gyro_engine::diameter::base::decode_capabilities(&msg).expect("a valid CEA");
    assert_eq!(caps.origin_host, "ocs.gyro.test");
    assert_eq!(server.state(), PeerState::Open);
}

/// The transport can go down while part of an answer is written and the rest waits:
/// the rest is dropped, nothing overflows.
#[test]
fn the_connection_going_down_after_a_partial_write_drops_the_rest() {
    let mut client = Peer::initiator(client_config(), 0);
    client.connection_up(0);
    let pending = client.transmit().len();
    assert!(pending > 8, "the CER waits to be written");
    client.transmitted(5);
    assert_eq!(client.transmit().len(), pending - 5);
    client.connection_down(1);
    assert!(client.transmit().is_empty());
    assert_eq!(client.state(), PeerState::Closed);
}
