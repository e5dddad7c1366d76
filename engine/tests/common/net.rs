//! Driving a peer state machine over a real TCP socket with the wall clock, for the
//! interop tests against independent stacks.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gyro_engine::peer::{Event, Peer, Step};

/// Runs `peer` on `stream` until `done` says so, the peer must close (and its last bytes
/// are written), the remote closes, or `max` passes. Returns every event seen.
pub fn drive(
    stream: &mut TcpStream,
    peer: &mut Peer,
    start: Instant,
    max: Duration,
    mut done: impl FnMut(&mut Peer, &[Event]) -> bool,
) -> Vec<Event> {
    stream
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut events = Vec::new();
    let deadline = Instant::now() + max;
    loop {
        while !peer.transmit().is_empty() {
            let n = stream.write(peer.transmit()).expect("write");
            peer.transmitted(n);
        }
        while let Some(e) = peer.poll_event() {
            events.push(e);
        }
        if peer.close_reason().is_some() || done(peer, &events) || Instant::now() > deadline {
            return events;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                peer.connection_down(now_ms());
                events.push(Event::Close(gyro_engine::peer::CloseReason::Disconnected));
                return events;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match peer.handle_bytes(&buf, now_ms()) {
                        Step::NeedMore | Step::Close => break,
                        Step::Consumed(n) | Step::Answer(n) => {
                            buf.drain(..n);
                        }
                        Step::Request(n) => {
                            let req: Vec<u8> = buf[..n].to_vec();
                            super::answer_request(peer, &req);
                            buf.drain(..n);
                        }
                    }
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
        if peer.poll_timeout().is_some_and(|t| t <= now_ms()) {
            peer.handle_timeout(now_ms());
        }
    }
}
