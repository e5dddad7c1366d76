//! The demo's loopback exchange over real TCP sockets: every pipelined CCR is decoded
//! by the server and answered 2001, and the DPR/DPA closes both sides cleanly.

use gyro_engine::peer::CloseReason;

#[test]
fn loopback_exchange_answers_every_ccr_and_disconnects_cleanly() {
    let r = gyro_shards::loopback::run(20_000, 64).expect("loopback run");
    assert_eq!(r.requests_sent, 20_000);
    assert_eq!(r.answers_received, 20_000);
    assert_eq!(r.answers_by_result, vec![(2001, 20_000)]);
    assert_eq!(r.client_close, Some(CloseReason::Disconnected));
    assert_eq!(r.server_close, Some(CloseReason::PeerDisconnected(0)));
}
