//! The Diameter peer state machine, sans-IO: capabilities exchange (CER/CEA), the
//! RFC 3539 watchdog (DWR/DWA), disconnection (DPR/DPA), answers matched by
//! Hop-by-Hop-Identifier, and the checks every received request passes before the
//! application sees it.
//!
//! The runtime gives it bytes (`handle_bytes`) and the time (`handle_timeout`, with
//! `poll_timeout` saying when), and takes from it bytes to send (`transmit`), events
//! (`poll_event`) and application messages (the `Step::Request`/`Step::Answer` results of
//! `handle_bytes`). Answers from the application go in through `send_with`.
//!
//! The RFC 3539 §3.4.1 watchdog algorithm itself (`Watchdog`) is in `watchdog`,
//! re-exported here.

use core::net::IpAddr;

use crate::diameter::answer::{encode_error_answer, Origin};
use crate::diameter::base::{self, Capabilities, LocalIdentity};
use crate::diameter::dict;
use crate::diameter::encode::EncodeError;
use crate::diameter::error::ProtocolError;
use crate::diameter::frame::{Frame, FrameError, Framer};
use crate::diameter::message::{Header, Message};
use crate::diameter::validate::check_request_header;
use crate::diameter::{application, command, result_code as rc, HEADER_LEN};

mod watchdog;

pub use watchdog::{Watchdog, WatchdogActions, WatchdogState};

/// Configuration of the local peer. Built once at start-up and cloned per connection.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub origin_host: String,
    pub origin_realm: String,
    pub host_ip_addresses: Vec<IpAddr>,
    pub vendor_id: u32,
    pub product_name: String,
    pub firmware_revision: u32,
    pub origin_state_id: u32,
    /// Origin-Hosts allowed to connect; empty allows any peer.
    pub allowed_peers: Vec<String>,
    /// RFC 3539 Tw: watchdog interval before jitter.
    pub watchdog_tw_ms: u64,
    /// Jitter applied to Tw, ± this much (RFC 3539 §3.4.1: ±2 s).
    pub watchdog_jitter_ms: u64,
    /// How long a new connection may stay silent before its CER (or a CER its CEA).
    pub capabilities_timeout_ms: u64,
    /// How long to wait for a DPA before closing anyway.
    pub disconnect_timeout_ms: u64,
    /// How long a started message may take to arrive completely (CONFORMANCE row 4).
    pub frame_deadline_ms: u64,
    pub message_size_max: u32,
    /// Bytes of answers that may wait for the socket; beyond it the peer is too slow.
    pub tx_buffer_bytes: usize,
    /// Seed for the watchdog jitter (deterministic in simulation).
    pub seed: u64,
}

impl PeerConfig {
    /// A configuration with the RFC defaults and the given identity.
    pub fn new(origin_host: &str, origin_realm: &str) -> PeerConfig {
        PeerConfig {
            origin_host: origin_host.to_owned(),
            origin_realm: origin_realm.to_owned(),
            host_ip_addresses: vec![IpAddr::from([127, 0, 0, 1])],
            vendor_id: 0,
            product_name: "gyro".to_owned(),
            firmware_revision: 1,
            origin_state_id: 1,
            allowed_peers: Vec::new(),
            watchdog_tw_ms: 30_000,
            watchdog_jitter_ms: 2_000,
            capabilities_timeout_ms: 10_000,
            disconnect_timeout_ms: 5_000,
            frame_deadline_ms: 10_000,
            message_size_max: crate::diameter::limits::MESSAGE_SIZE_DEFAULT_MAX,
            tx_buffer_bytes: 1 << 20,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn identity(&self) -> LocalIdentity<'_> {
        LocalIdentity {
            origin_host: &self.origin_host,
            origin_realm: &self.origin_realm,
            host_ip_addresses: &self.host_ip_addresses,
            vendor_id: self.vendor_id,
            product_name: &self.product_name,
            firmware_revision: self.firmware_revision,
            origin_state_id: self.origin_state_id,
        }
    }

    fn allows(&self, origin_host: &str) -> bool {
        self.allowed_peers.is_empty()
            || self
                .allowed_peers
                .iter()
                .any(|p| p.eq_ignore_ascii_case(origin_host))
    }
}

/// Whether this side opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Connection state (RFC 6733 §5.6, one connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// No transport.
    Closed,
    /// Initiator: CER sent, waiting for the CEA.
    WaitCea,
    /// Responder: connected, waiting for the CER.
    WaitCer,
    Open,
    /// DPR sent, waiting for the DPA.
    Closing,
}

/// Why the connection must be closed (the runtime closes it once `transmit` is empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The byte stream cannot be framed any more.
    Framing(FrameError),
    /// A started message did not complete before the frame deadline.
    FrameTimeout,
    /// The first message was not a CER.
    NoCer,
    /// The CER was refused (Result-Code sent in the CEA).
    CerRefused(u32),
    /// Our CER was answered with this Result-Code, or the CEA was invalid.
    CeaRefused(u32),
    /// No CER/CEA within the capabilities timeout.
    CapabilitiesTimeout,
    /// The peer sent DPR (its Disconnect-Cause) and was answered.
    PeerDisconnected(u32),
    /// Our DPR was answered with a DPA.
    Disconnected,
    /// Our DPR was not answered within the disconnect timeout.
    DisconnectTimeout,
    /// The watchdog declared the peer DOWN.
    WatchdogDown,
    /// The peer does not read its answers: the transmit buffer is full.
    SlowReader,
}

/// Something the runtime or operators should know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Capabilities exchanged; the peer is open for application messages.
    Up,
    Watchdog {
        from: WatchdogState,
        to: WatchdogState,
    },
    /// The initiator should open a new transport (watchdog DOWN timer).
    AttemptOpen,
    Close(CloseReason),
    /// An answer nobody asked for was dropped (unknown Hop-by-Hop, CONFORMANCE row 29).
    UnexpectedAnswerDropped {
        hop_by_hop: u32,
    },
}

/// What `Peer::handle_all` hands to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A request (CCR) that passed the header checks.
    Request,
    /// An answer to a request this side sent.
    Answer,
}

/// What `handle_bytes` found at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not a whole message yet; nothing consumed.
    NeedMore,
    /// A message of this many bytes was handled by the peer itself (or dropped).
    Consumed(usize),
    /// An application request (CCR) of this many bytes at the start of the buffer passed
    /// the header checks; the application validates its AVPs and answers via `send_with`.
    Request(usize),
    /// An answer to an application request this side sent.
    Answer(usize),
    /// The connection must close; see `poll_event` and `close_reason`.
    Close,
}

/// The key of RFC 6733 §6.5 duplicate detection: (Origin-Host, End-to-End-Identifier).
/// The Origin-Host is hashed eight bytes at a time with ASCII letters folded to lower
/// case (a DiameterIdentity compares without case), so the key is `Copy` and
/// fixed-size, and costs a few instructions per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DuplicateKey {
    pub origin_host_hash: u64,
    pub end_to_end: u32,
}

impl DuplicateKey {
    pub fn new(origin_host: &str, end_to_end: u32) -> DuplicateKey {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        // Setting bit 5 of every byte lowers ASCII capitals (and leaves digits, '-'
        // and '.' as they are); other bytes may fold together, which a hash allows.
        const FOLD: u64 = 0x2020_2020_2020_2020;
        let b = origin_host.as_bytes();
        let word = |c: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w) | FOLD
        };
        let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(31);
        let mut h = mix(K, b.len() as u64);
        if b.len() >= 8 {
            let mut chunks = b.chunks_exact(8);
            for c in &mut chunks {
                h = mix(h, word(c));
            }
            // The last eight bytes, overlapping what came before (the length is in).
            if !chunks.remainder().is_empty() {
                h = mix(h, word(&b[b.len() - 8..]));
            }
        } else {
            let mut w = 0u64;
            for (i, &c) in b.iter().enumerate() {
                w |= u64::from(c | 0x20) << (8 * i);
            }
            h = mix(h, w);
        }
        h ^= h >> 29;
        DuplicateKey {
            origin_host_hash: h.wrapping_mul(K),
            end_to_end,
        }
    }
}

/// A fixed-capacity byte queue for outgoing messages.
#[derive(Debug)]
struct TxBuffer {
    buf: Box<[u8]>,
    head: usize,
    tail: usize,
}

impl TxBuffer {
    fn new(size: usize) -> TxBuffer {
        TxBuffer {
            buf: vec![0; size].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }
    fn pending(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }
    fn consume(&mut self, n: usize) {
        // `n` may be `usize::MAX` (everything), with part of the buffer already sent.
        self.head = self.head.saturating_add(n).min(self.tail);
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }
    fn write_with<F>(&mut self, f: F) -> Result<usize, EncodeError>
    where
        F: FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    {
        if self.head > 0 && self.head * 2 >= self.buf.len() {
            self.buf.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
        let n = f(&mut self.buf[self.tail..])?;
        self.tail += n;
        Ok(n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outstanding {
    Cer,
    Dwr,
    Dpr,
}

/// Counters of one peer connection, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub dwr_sent: u64,
    pub dwa_received: u64,
    pub dwr_received: u64,
    /// Application requests handed to the application.
    pub requests_received: u64,
    /// Application answers handed to the application.
    pub answers_received: u64,
    /// Error answers written by the peer itself (header errors, 3001, 3007, 5xxx).
    pub errors_sent: u64,
    /// Answers that matched no request (dropped).
    pub answers_dropped: u64,
}

const OUTSTANDING_MAX: usize = 4;
const EVENTS_MAX: usize = 16;

/// One Diameter peer connection.
#[derive(Debug)]
pub struct Peer {
    config: PeerConfig,
    role: Role,
    state: PeerState,
    framer: Framer,
    watchdog: Watchdog,
    tx: TxBuffer,
    next_hop_by_hop: u32,
    next_end_to_end: u32,
    outstanding: [Option<(u32, u32, Outstanding)>; OUTSTANDING_MAX],
    /// Since when an incomplete message has been waiting, and its header if it is in.
    partial_since_ms: Option<u64>,
    partial_header: Option<[u8; HEADER_LEN]>,
    state_deadline_ms: u64,
    remote_origin_host: String,
    events: [Option<Event>; EVENTS_MAX],
    events_head: usize,
    events_len: usize,
    close: Option<CloseReason>,
    stats: PeerStats,
}

impl Peer {
    fn new(config: PeerConfig, role: Role, now_ms: u64) -> Peer {
        let framer = Framer::new(config.message_size_max);
        let watchdog = Watchdog::new(
            config.watchdog_tw_ms,
            config.watchdog_jitter_ms,
            config.seed,
        );
        let tx = TxBuffer::new(config.tx_buffer_bytes);
        // RFC 6733 §3: the high 12 bits of End-to-End are from the clock, the rest random.
        let e2e_base = ((now_ms as u32) << 20) ^ (config.seed as u32 & 0x000f_ffff);
        let h2h_base = (config.seed >> 32) as u32;
        Peer {
            config,
            role,
            state: PeerState::Closed,
            framer,
            watchdog,
            tx,
            next_hop_by_hop: h2h_base,
            next_end_to_end: e2e_base,
            outstanding: [None; OUTSTANDING_MAX],
            partial_since_ms: None,
            partial_header: None,
            state_deadline_ms: u64::MAX,
            remote_origin_host: String::new(),
            events: [None; EVENTS_MAX],
            events_head: 0,
            events_len: 0,
            close: None,
            stats: PeerStats::default(),
        }
    }

    /// A peer for an accepted connection: waits for the CER.
    pub fn responder(config: PeerConfig, now_ms: u64) -> Peer {
        let mut p = Peer::new(config, Role::Responder, now_ms);
        p.state = PeerState::WaitCer;
        p.state_deadline_ms = now_ms.saturating_add(p.config.capabilities_timeout_ms);
        p
    }

    /// A peer that opens connections; call `connection_up` when the transport is up.
    pub fn initiator(config: PeerConfig, now_ms: u64) -> Peer {
        Peer::new(config, Role::Initiator, now_ms)
    }

    pub fn state(&self) -> PeerState {
        self.state
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn watchdog_state(&self) -> WatchdogState {
        self.watchdog.state()
    }
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }
    /// The Origin-Host of the remote peer, once capabilities are exchanged.
    pub fn remote_origin_host(&self) -> &str {
        &self.remote_origin_host
    }
    /// Counters since the peer was created.
    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// Set when the connection must be closed once `transmit` has been written.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close
    }

    /// Bytes waiting to be written to the socket.
    pub fn transmit(&self) -> &[u8] {
        self.tx.pending()
    }
    /// `n` bytes of `transmit()` were written.
    pub fn transmitted(&mut self, n: usize) {
        self.tx.consume(n);
    }

    /// Next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.events_len == 0 {
            return None;
        }
        let e = self.events[self.events_head].take();
        self.events_head = (self.events_head + 1) % EVENTS_MAX;
        self.events_len -= 1;
        e
    }

    fn event(&mut self, e: Event) {
        if self.events_len == EVENTS_MAX {
            // Oldest events are dropped rather than growing: they are for observation only.
            self.events_head = (self.events_head + 1) % EVENTS_MAX;
            self.events_len -= 1;
        }
        let at = (self.events_head + self.events_len) % EVENTS_MAX;
        self.events[at] = Some(e);
        self.events_len += 1;
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.close.is_none() {
            self.close = Some(reason);
            self.event(Event::Close(reason));
        }
    }

    fn watchdog_actions(&mut self, from: WatchdogState, a: WatchdogActions, now_ms: u64) {
        let to = self.watchdog.state();
        if from != to {
            self.event(Event::Watchdog { from, to });
        }
        if a.send_dwr {
            self.send_dwr(now_ms);
        }
        if a.close {
            self.close_with(CloseReason::WatchdogDown);
        }
        if a.attempt_open {
            self.event(Event::AttemptOpen);
        }
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.state_deadline_ms;
        if self.state == PeerState::Open || self.state == PeerState::Closing {
            t = t.min(self.watchdog.deadline_ms());
        }
        if let Some(since) = self.partial_since_ms {
            t = t.min(since.saturating_add(self.config.frame_deadline_ms));
        }
        (t != u64::MAX).then_some(t)
    }

    /// Timers: capabilities and disconnect timeouts, the frame deadline, the watchdog.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if now_ms >= self.state_deadline_ms {
            self.state_deadline_ms = u64::MAX;
            match self.state {
                PeerState::WaitCer | PeerState::WaitCea => {
                    self.close_with(CloseReason::CapabilitiesTimeout)
                }
                PeerState::Closing => self.close_with(CloseReason::DisconnectTimeout),
                _ => {}
            }
        }
        if let Some(since) = self.partial_since_ms {
            if now_ms >= since.saturating_add(self.config.frame_deadline_ms) {
                self.partial_since_ms = None;
                // A request whose header arrived is answered 5015 before the close, as
                // OTP's diameter_tcp does with `length_errors = handle`.
                if let Some(h) = self.partial_header.take() {
                    let hdr = Header::decode(&h);
                    if hdr.is_some_and(|h| h.is_request()) {
                        self.send_error(&h, &ProtocolError::bare(rc::INVALID_MESSAGE_LENGTH));
                    }
                }
                self.close_with(CloseReason::FrameTimeout);
            }
        }
        if matches!(self.state, PeerState::Open | PeerState::Closing) {
            let from = self.watchdog.state();
            let a = self.watchdog.timer_expired(now_ms);
            self.watchdog_actions(from, a, now_ms);
        }
    }

    /// The initiator's transport is up: send the CER.
    pub fn connection_up(&mut self, now_ms: u64) {
        self.close = None;
        self.state = PeerState::WaitCea;
        self.state_deadline_ms = now_ms.saturating_add(self.config.capabilities_timeout_ms);
        let (h2h, e2e) = self.next_ids();
        let id = self.config.identity();
        let sent = self.tx.write_with(|b| base::encode_cer(&id, h2h, e2e, b));
        if sent.is_ok() {
            self.remember(h2h, e2e, Outstanding::Cer);
        } else {
            self.close_with(CloseReason::SlowReader);
        }
    }

    /// The transport went down (closed by either side).
    pub fn connection_down(&mut self, now_ms: u64) {
        let from = self.watchdog.state();
        // Failover (OKAY to DOWN) is told by the watchdog transition event.
        self.watchdog.connection_down(now_ms);
        let to = self.watchdog.state();
        if from != to {
            self.event(Event::Watchdog { from, to });
        }
        self.state = PeerState::Closed;
        self.outstanding = [None; OUTSTANDING_MAX];
        self.partial_since_ms = None;
        self.partial_header = None;
        self.tx.consume(usize::MAX);
    }

    /// Starts an orderly disconnect: DPR now, close on DPA or after the timeout.
    pub fn disconnect(&mut self, cause: u32, now_ms: u64) {
        if self.state != PeerState::Open {
            self.close_with(CloseReason::Disconnected);
            return;
        }
        let (h2h, e2e) = self.next_ids();
        let id = self.config.identity();
        if self
            .tx
            .write_with(|b| base::encode_dpr(&id, cause, h2h, e2e, b))
            .is_ok()
        {
            self.remember(h2h, e2e, Outstanding::Dpr);
            self.state = PeerState::Closing;
            self.state_deadline_ms = now_ms.saturating_add(self.config.disconnect_timeout_ms);
        } else {
            self.close_with(CloseReason::SlowReader);
        }
    }

    /// Fresh Hop-by-Hop and End-to-End identifiers for a request this side sends.
    pub fn next_ids(&mut self) -> (u32, u32) {
        self.next_hop_by_hop = self.next_hop_by_hop.wrapping_add(1);
        self.next_end_to_end = self.next_end_to_end.wrapping_add(1);
        (self.next_hop_by_hop, self.next_end_to_end)
    }

    fn remember(&mut self, h2h: u32, e2e: u32, what: Outstanding) {
        // Oldest slot is reused when all are taken: at most a few base requests are ever
        // outstanding (one CER, one DWR per Tw, one DPR).
        let slot = self
            .outstanding
            .iter()
            .position(Option::is_none)
            .unwrap_or(0);
        self.outstanding[slot] = Some((h2h, e2e, what));
    }

    /// The request an answer belongs to: both identifiers must match (RFC 6733 §3).
    fn take_outstanding(&mut self, h2h: u32, e2e: u32) -> Option<Outstanding> {
        let slot = self
            .outstanding
            .iter()
            .position(|o| matches!(o, Some((h, e, _)) if *h == h2h && *e == e2e))?;
        self.outstanding[slot].take().map(|(_, _, w)| w)
    }

    fn send_dwr(&mut self, _now_ms: u64) {
        let (h2h, e2e) = self.next_ids();
        let id = self.config.identity();
        if self
            .tx
            .write_with(|b| base::encode_dwr(&id, h2h, e2e, b))
            .is_ok()
        {
            self.stats.dwr_sent += 1;
            self.remember(h2h, e2e, Outstanding::Dwr);
        } else {
            self.close_with(CloseReason::SlowReader);
        }
    }

    /// Writes an answer (or a request) from the application into the transmit buffer.
    /// A full buffer means the peer does not read: the connection is marked for closing
    /// and `Err` returned (CONFORMANCE "slow reader").
    pub fn send_with<F>(&mut self, f: F) -> Result<usize, EncodeError>
    where
        F: FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    {
        let r = self.tx.write_with(f);
        if r.is_err() {
            self.close_with(CloseReason::SlowReader);
        }
        r
    }

    /// Answers the request `req` (its bytes) with the error `err`.
    pub fn send_error(&mut self, req: &[u8], err: &ProtocolError) {
        self.stats.errors_sent += 1;
        let origin = Origin {
            host: &self.config.origin_host,
            realm: &self.config.origin_realm,
        };
        let r = self
            .tx
            .write_with(|b| encode_error_answer(req, err, &origin, b));
        if r.is_err() {
            self.close_with(CloseReason::SlowReader);
        }
    }

    /// Handles every whole message at the start of `buf` (the unconsumed bytes of the
    /// stream), handing application requests and answers to `on` with their bytes;
    /// returns how many bytes were consumed (what the caller drops from its buffer).
    pub fn handle_all(
        &mut self,
        buf: &[u8],
        now_ms: u64,
        mut on: impl FnMut(&mut Peer, Incoming, &[u8]),
    ) -> usize {
        let mut at = 0;
        loop {
            match self.handle_bytes(&buf[at..], now_ms) {
                Step::NeedMore | Step::Close => return at,
                Step::Consumed(n) => at += n,
                Step::Request(n) => {
                    on(self, Incoming::Request, &buf[at..at + n]);
                    at += n;
                }
                Step::Answer(n) => {
                    on(self, Incoming::Answer, &buf[at..at + n]);
                    at += n;
                }
            }
        }
    }

    /// Frames and handles the first message in `buf` (the unconsumed bytes of the
    /// stream). Call repeatedly until `NeedMore` or `Close` (or use `handle_all`).
    pub fn handle_bytes(&mut self, buf: &[u8], now_ms: u64) -> Step {
        if self.close.is_some() {
            return Step::Close;
        }
        let len = match self.framer.frame(buf) {
            Ok(Frame::Message(len)) => len,
            Ok(Frame::Partial { .. }) => {
                if buf.is_empty() {
                    self.partial_since_ms = None;
                    self.partial_header = None;
                } else {
                    if self.partial_since_ms.is_none() {
                        self.partial_since_ms = Some(now_ms);
                    }
                    if buf.len() >= HEADER_LEN && self.partial_header.is_none() {
                        let mut h = [0u8; HEADER_LEN];
                        h.copy_from_slice(&buf[..HEADER_LEN]);
                        self.partial_header = Some(h);
                    }
                }
                return Step::NeedMore;
            }
            Err(e) => {
                self.close_with(CloseReason::Framing(e));
                return Step::Close;
            }
        };
        self.partial_since_ms = None;
        self.partial_header = None;
        let bytes = &buf[..len];
        let step = self.handle_message(bytes, now_ms);
        if self.close.is_some() && step == Step::Consumed(len) {
            return Step::Close;
        }
        step
    }

    fn handle_message(&mut self, bytes: &[u8], now_ms: u64) -> Step {
        let len = bytes.len();
        // The framer guarantees a whole header and a matching length.
        let Some(msg) = Message::new(bytes) else {
            return Step::Consumed(len);
        };
        let h = msg.header;
        if !h.is_request() {
            return self.handle_answer(&msg, now_ms);
        }
        if let Err(e) = check_request_header(&h) {
            if self.state == PeerState::WaitCer {
                self.close_with(CloseReason::NoCer);
                return Step::Close;
            }
            self.send_error(bytes, &e);
            return Step::Consumed(len);
        }
        match self.state {
            PeerState::WaitCer => {
                if h.command != command::CAPABILITIES_EXCHANGE {
                    self.close_with(CloseReason::NoCer);
                    return Step::Close;
                }
                self.handle_cer(&msg, now_ms);
                Step::Consumed(len)
            }
            PeerState::Closed | PeerState::WaitCea => {
                // Requests before the capabilities exchange completed are not served.
                self.close_with(CloseReason::NoCer);
                Step::Close
            }
            PeerState::Open | PeerState::Closing => {
                let from = self.watchdog.state();
                let a = self.watchdog.receive_other(now_ms);
                self.watchdog_actions(from, a, now_ms);
                if a.throwaway {
                    return Step::Consumed(len);
                }
                self.handle_open_request(&msg)
            }
        }
    }

    fn handle_open_request(&mut self, msg: &Message<'_>) -> Step {
        let bytes = msg.bytes();
        let len = bytes.len();
        let h = msg.header;
        let id = self.config.identity();
        match h.command {
            command::DEVICE_WATCHDOG => {
                self.stats.dwr_received += 1;
                let r = match crate::diameter::validate::validate(msg, &dict::DWR) {
                    Ok(()) => self
                        .tx
                        .write_with(|b| base::encode_dwa(&id, &h, rc::SUCCESS, b)),
                    Err(e) => {
                        self.send_error(bytes, &e);
                        Ok(0)
                    }
                };
                if r.is_err() {
                    self.close_with(CloseReason::SlowReader);
                }
                Step::Consumed(len)
            }
            command::DISCONNECT_PEER => {
                match base::decode_disconnect_cause(msg) {
                    Ok(cause) => {
                        if self
                            .tx
                            .write_with(|b| base::encode_dpa(&id, &h, rc::SUCCESS, b))
                            .is_err()
                        {
                            self.close_with(CloseReason::SlowReader);
                        }
                        self.close_with(CloseReason::PeerDisconnected(cause));
                    }
                    Err(e) => self.send_error(bytes, &e),
                }
                Step::Consumed(len)
            }
            command::CAPABILITIES_EXCHANGE => {
                // A second CER on an open connection (RFC 6733 §5.3 allows it only once):
                // refused with a complete CEA, and the connection stays as it is.
                self.stats.errors_sent += 1;
                if self
                    .tx
                    .write_with(|b| base::encode_cea(&id, &h, rc::UNABLE_TO_COMPLY, None, b))
                    .is_err()
                {
                    self.close_with(CloseReason::SlowReader);
                }
                Step::Consumed(len)
            }
            command::CREDIT_CONTROL => {
                if h.application_id != application::CREDIT_CONTROL {
                    self.send_error(bytes, &ProtocolError::bare(rc::APPLICATION_UNSUPPORTED));
                    return Step::Consumed(len);
                }
                self.stats.requests_received += 1;
                Step::Request(len)
            }
            _ => {
                self.send_error(bytes, &ProtocolError::bare(rc::COMMAND_UNSUPPORTED));
                Step::Consumed(len)
            }
        }
    }

    fn handle_cer(&mut self, msg: &Message<'_>, now_ms: u64) {
        let id = self.config.identity();
        let h = msg.header;
        let bytes = msg.bytes();
        let (result, failed, caps): (u32, Option<ProtocolError>, Option<Capabilities<'_>>) =
            match base::decode_capabilities(msg) {
                Err(e) => (e.result_code, Some(e), None),
                Ok(c) if !self.config.allows(c.origin_host) => (rc::UNKNOWN_PEER, None, Some(c)),
                Ok(c) if !c.has_common_application() => (rc::NO_COMMON_APPLICATION, None, Some(c)),
                Ok(c) => (rc::SUCCESS, None, Some(c)),
            };
        let failed_ref = failed.as_ref().map(|e| (bytes, e));
        let r = self
            .tx
            .write_with(|b| base::encode_cea(&id, &h, result, failed_ref, b));
        // Kept for the logs of a refused peer too (the decoder bounded its length).
        if let Some(c) = caps {
            self.remote_origin_host.clear();
            self.remote_origin_host.push_str(c.origin_host);
        }
        if r.is_err() {
            self.close_with(CloseReason::SlowReader);
            return;
        }
        if result != rc::SUCCESS {
            self.close_with(CloseReason::CerRefused(result));
            return;
        }
        self.open(now_ms);
    }

    fn open(&mut self, now_ms: u64) {
        self.state = PeerState::Open;
        self.state_deadline_ms = u64::MAX;
        self.event(Event::Up);
        let from = self.watchdog.state();
        let a = self.watchdog.connection_up(now_ms);
        self.watchdog_actions(from, a, now_ms);
    }

    fn handle_answer(&mut self, msg: &Message<'_>, now_ms: u64) -> Step {
        let len = msg.bytes().len();
        let h = msg.header;
        let base_command = matches!(
            h.command,
            command::CAPABILITIES_EXCHANGE | command::DEVICE_WATCHDOG | command::DISCONNECT_PEER
        );
        if !base_command {
            if self.state == PeerState::Open || self.state == PeerState::Closing {
                let from = self.watchdog.state();
                let a = self.watchdog.receive_other(now_ms);
                self.watchdog_actions(from, a, now_ms);
                if !a.throwaway {
                    self.stats.answers_received += 1;
                    return Step::Answer(len);
                }
            }
            return Step::Consumed(len);
        }
        let Some(what) = self.take_outstanding(h.hop_by_hop, h.end_to_end) else {
            self.stats.answers_dropped += 1;
            self.event(Event::UnexpectedAnswerDropped {
                hop_by_hop: h.hop_by_hop,
            });
            return Step::Consumed(len);
        };
        match (what, h.command) {
            (Outstanding::Cer, command::CAPABILITIES_EXCHANGE) => {
                match base::decode_capabilities(msg) {
                    Ok(c) if c.result_code == Some(rc::SUCCESS) && c.has_common_application() => {
                        self.remote_origin_host.clear();
                        self.remote_origin_host.push_str(c.origin_host);
                        self.open(now_ms);
                    }
                    Ok(c) => self.close_with(CloseReason::CeaRefused(c.result_code.unwrap_or(0))),
                    Err(e) => self.close_with(CloseReason::CeaRefused(e.result_code)),
                }
            }
            (Outstanding::Dwr, command::DEVICE_WATCHDOG) => {
                // An invalid DWA is not a sign of life: it is dropped (row 29).
                if base::decode_result_code(msg, &dict::DWA).is_ok() {
                    self.stats.dwa_received += 1;
                    let from = self.watchdog.state();
                    let a = self.watchdog.receive_dwa(now_ms);
                    self.watchdog_actions(from, a, now_ms);
                }
            }
            (Outstanding::Dpr, command::DISCONNECT_PEER) => {
                self.close_with(CloseReason::Disconnected);
            }
            (other, _) => {
                // The Hop-by-Hop matched a request of another command: not ours.
                self.remember(h.hop_by_hop, h.end_to_end, other);
                self.stats.answers_dropped += 1;
                self.event(Event::UnexpectedAnswerDropped {
                    hop_by_hop: h.hop_by_hop,
                });
            }
        }
        Step::Consumed(len)
    }
}
