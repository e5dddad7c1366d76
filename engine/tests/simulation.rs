//! Deterministic simulation of four shards sharing companies through escrow, replayable
//! from a seed.
//!
//! Random companies, packages (some expire during the run) and subscribers; sessions
//! with one or two services (data, voice), CCR-I/U/T, lost CCR-Ts closed by Tcc, events
//! (SMS debit, refund, balance check, price enquiry), duplicates and retransmissions
//! (with and without the T flag, before and after the original was answered), top-ups
//! on the owner shard, packages bought at run time; escrow messages are delivered first
//! in first out per channel and in random order across channels; now and then every
//! shard "crashes": the messages in flight and the requests waiting are lost, the shards
//! go on from the state their journals rebuild, and what was sent and never taken is
//! delivered again.
//!
//! Checked after every step, for every company the step touched: money and units are
//! conserved exactly (owner remainder + slices + in flight == provisioned + top-ups +
//! refunds); no slice holds less than nothing and no owner leases beyond the credit
//! limit (no grant beyond the company's means); what the slices settled equals what the
//! answered requests' CDRs charged (nothing charged twice); a duplicate changes nothing;
//! a 4012 comes only when all the money the company has left cannot pay one block
//! (money in flight excepted; not checked while a recall gathers the company's money
//! for another shard, nor for requests decided after waiting `WAITS_MAX` times).
//! Every record the shards emit is replayed at once through a second set of engines
//! started empty; their balances must equal the live ones at every checkpoint.
//!
//! `GYRO_SIM_OPS` (default 200,000) and `GYRO_SIM_SEED` (default 1) choose the run;
//! `cargo test --release -p gyro-engine --test simulation -- --nocapture` with
//! `GYRO_SIM_OPS=10000000` is the long one.

use std::collections::{HashMap, VecDeque};

use gyro_engine::charging::engine::{shard_of, Engine, EngineConfig, Outcome};
use gyro_engine::charging::escrow::{Envelope, MONEY};
use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, RequestedAction, SubscriptionId,
    Units,
};
use gyro_engine::diameter::{cmd_flags, Message};
use gyro_engine::journal::{self, Control};
use gyro_engine::provision::{import_ndjson, Dataset, OnError};
use gyro_engine::segment::RecordKind;

const SHARDS: u16 = 4;
const COMPANIES: usize = 10;
const SUBSCRIBERS: usize = 64;
const T0: u64 = 1_790_000_000_000;
const MIB: u64 = 1 << 20;
const BLOCK_COST: [(u32, i64); 3] = [(10, 2_000), (20, 7_000), (30, 10_000)];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Unix seconds as an RFC 3339 UTC time.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn package_line(rng: &mut Rng, id: &str, company: usize) -> String {
    let valid = rfc3339(T0 / 1000 + 600 + rng.below(6 * 3600));
    if rng.chance(70) {
        let rgs = if rng.chance(50) { "[10]" } else { "[]" };
        format!(
            r#"{{"type":"package","id":"{id}","company":"c{company}","unit":"octets","amount":{},"rating_groups":{rgs},"valid_until":"{valid}","priority":{}}}"#,
            rng.below(400) * MIB,
            rng.below(3)
        )
    } else {
        format!(
            r#"{{"type":"package","id":"{id}","company":"c{company}","unit":"seconds","amount":{},"valid_until":"{valid}","priority":{}}}"#,
            rng.below(20_000),
            rng.below(3)
        )
    }
}

fn dataset(rng: &mut Rng) -> Dataset {
    let mut s = String::from(
        r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":2000}
{"type":"tariff","rating_group":20,"unit":"octets","unit_size":1048576,"price":7000}
{"type":"tariff","rating_group":30,"unit":"seconds","unit_size":60,"price":10000}
{"type":"tariff","service_identifier":1,"unit":"units","unit_size":1,"price":50000}
"#,
    );
    for c in 0..COMPANIES {
        let limit = if rng.chance(30) { 1_000_000 } else { 0 };
        s.push_str(&format!(
            "{{\"type\":\"company\",\"id\":\"c{c}\",\"balance\":{},\"credit_limit\":{limit}}}\n",
            rng.below(3_000_000)
        ));
        for p in 0..rng.below(3) {
            s.push_str(&package_line(rng, &format!("c{c}-p{p}"), c));
            s.push('\n');
        }
    }
    for i in 0..SUBSCRIBERS {
        s.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"4917{i:08}\",\"company\":\"c{}\"}}\n",
            rng.below(COMPANIES as u64)
        ));
    }
    let mut bytes = s.into_bytes();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    imp.dataset
}

fn config() -> EngineConfig {
    EngineConfig {
        default_quota_octets: MIB,
        validity_time_s: 30,
        ..EngineConfig::default()
    }
}

/// One service of a session: rating group, unit (true: seconds) and what it holds.
#[derive(Clone, Copy)]
struct Service {
    rating_group: u32,
    seconds: bool,
    granted: u64,
}

struct Session {
    id: String,
    msisdn: String,
    next: u32,
    services: Vec<Service>,
    /// A request of it waits for an answer.
    busy: bool,
    ended: bool,
}

/// Requests sent, by number; the old ones nothing refers to any more are forgotten
/// (long runs would not fit in memory otherwise).
#[derive(Default)]
struct SentLog {
    base: usize,
    items: VecDeque<Sent>,
}

impl SentLog {
    fn push(&mut self, s: Sent) {
        self.items.push_back(s);
    }
    fn len(&self) -> usize {
        self.base + self.items.len()
    }
    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Forgets requests numbered below `keep_from`.
    fn forget_before(&mut self, keep_from: usize) {
        while self.base < keep_from && !self.items.is_empty() {
            self.items.pop_front();
            self.base += 1;
        }
    }
}

impl std::ops::Index<usize> for SentLog {
    type Output = Sent;
    fn index(&self, i: usize) -> &Sent {
        &self.items[i - self.base]
    }
}

/// A request sent and what we know of it.
struct Sent {
    bytes: Vec<u8>,
    session: Option<usize>,
}

struct Sim {
    rng: Rng,
    now: u64,
    dataset: Dataset,
    live: Vec<Engine>,
    shadow: Vec<Engine>,
    channels: Vec<VecDeque<Envelope>>,
    /// Per shard, requests waiting for escrow: company, request, times waited.
    parked: Vec<Vec<(u32, usize, u32)>>,
    sent: SentLog,
    sessions: Vec<Session>,
    /// Per (company, bucket): provisioned + top-ups + refunds, what CDRs charged, and
    /// what is in flight.
    credited: HashMap<(u32, u16), i64>,
    charged: HashMap<(u32, u16), i64>,
    in_flight: HashMap<(u32, u16), i64>,
    e2e: u32,
    last_expire: u64,
    touched: Vec<u32>,
    stats: HashMap<&'static str, u64>,
    /// The request being answered, for failure messages: shard, request, and the
    /// company's state on that shard before it.
    current: (u16, String, String),
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let dataset = dataset(&mut rng);
        let mk = |d: &Dataset| -> Vec<Engine> {
            (0..SHARDS)
                .map(|s| Engine::new_shard(d.clone(), config(), s, SHARDS))
                .collect()
        };
        let mut credited = HashMap::new();
        for (i, c) in dataset.companies.iter().enumerate() {
            credited.insert((i as u32, MONEY), c.balance);
        }
        let mut count = [0u16; COMPANIES];
        for p in &dataset.packages {
            let c = p.company as usize;
            count[c] += 1;
            credited.insert((c as u32, count[c]), p.amount as i64);
        }
        Sim {
            rng,
            now: T0,
            live: mk(&dataset),
            shadow: mk(&dataset),
            dataset,
            channels: (0..SHARDS * SHARDS).map(|_| VecDeque::new()).collect(),
            parked: (0..SHARDS).map(|_| Vec::new()).collect(),
            sent: SentLog::default(),
            sessions: Vec::new(),
            credited,
            charged: HashMap::new(),
            in_flight: HashMap::new(),
            e2e: 1,
            last_expire: T0,
            touched: Vec::new(),
            stats: HashMap::new(),
            current: Default::default(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// A record a shard emitted: replayed at once by its shadow.
    fn record(&mut self, shard: u16, kind: RecordKind, payload: &[u8]) {
        let s = &mut self.shadow[usize::from(shard)];
        journal::replay(s, kind, payload).expect("every emitted record replays");
        s.outbox().for_each(drop);
    }

    fn post(&mut self, shard: u16) {
        let out: Vec<Envelope> = self.live[usize::from(shard)].outbox().collect();
        for e in out {
            *self
                .in_flight
                .entry((e.msg.company(), e.msg.bucket()))
                .or_default() += e.msg.amount();
            self.channels[usize::from(e.from) * usize::from(SHARDS) + usize::from(e.to)]
                .push_back(e);
        }
    }

    /// Delivers the oldest message of a random non-empty channel.
    fn deliver(&mut self) {
        let busy: Vec<usize> = (0..self.channels.len())
            .filter(|&i| !self.channels[i].is_empty())
            .collect();
        if busy.is_empty() {
            return;
        }
        let ch = busy[self.rng.below(busy.len() as u64) as usize];
        let e = self.channels[ch].pop_front().expect("not empty");
        let key = (e.msg.company(), e.msg.bucket());
        *self.in_flight.entry(key).or_default() -= e.msg.amount();
        if (key.0 as usize) < COMPANIES {
            self.touched.push(key.0);
        }
        let now = self.now;
        let rec = Control::Escrow {
            now_ms: now,
            envelope: e,
        }
        .encode();
        self.record(e.to, RecordKind::Control, &rec);
        let leased = self.live[usize::from(e.to)].receive(e, now);
        self.post(e.to);
        self.count("escrow messages");
        if let Some(company) = leased {
            // Requests of that company that waited go again.
            let waiting = std::mem::take(&mut self.parked[usize::from(e.to)]);
            for (c, req, waits) in waiting {
                if c == company {
                    self.handle_as(e.to, req, false, waits);
                } else {
                    self.parked[usize::from(e.to)].push((c, req, waits));
                }
            }
        }
    }

    fn fingerprint(&self, shard: u16, company: u32) -> String {
        format!("{:?}", self.live[usize::from(shard)].escrow_state(company))
    }

    /// Sends request `req` to the shard that owns its session.
    fn handle(&mut self, shard: u16, req: usize, expect_duplicate: bool) {
        self.handle_as(shard, req, expect_duplicate, 0);
    }

    /// The same, for a request that waited `waits` times already: after
    /// `WAITS_MAX`, the shard decides it on what it holds (as the server does).
    fn handle_as(&mut self, shard: u16, req: usize, expect_duplicate: bool, waits: u32) {
        let decided = waits >= gyro_engine::charging::engine::WAITS_MAX;
        let bytes = self.sent[req].bytes.clone();
        let now = self.now;
        let mut input = vec![0u8; bytes.len() + 16];
        let n = journal::encode_input_as(now, &bytes, decided, &mut input).expect("fits");
        self.record(shard, RecordKind::Input, &input[..n]);
        let msg = Message::new(&bytes).expect("a whole message");
        let ccr = Ccr::decode(&msg).expect("a valid CCR");
        let company_before = self.company_of(&ccr);
        let before = self.fingerprint(shard, company_before);
        self.current = (
            shard,
            format!(
                "{:?} {} {:?}",
                ccr.request_type,
                ccr.request_number,
                ccr.mscc()
            ),
            before.clone(),
        );
        let o = if decided {
            self.count("decided after waiting");
            self.live[usize::from(shard)].decide(&ccr, now)
        } else {
            self.live[usize::from(shard)].handle(&ccr, now)
        };
        self.post(shard);
        if o.wait {
            self.count("waits");
            let company = o.company.expect("a waiting request has a company");
            self.parked[usize::from(shard)].push((company, req, waits + 1));
            return;
        }
        if o.duplicate {
            self.count("duplicates answered");
            assert_eq!(
                before,
                self.fingerprint(shard, company_before),
                "a duplicate changed the company's balances"
            );
        } else {
            assert!(!expect_duplicate, "a repeated request was handled as new");
        }
        self.answered(shard, req, &ccr, &o, decided);
    }

    fn company_of(&self, ccr: &Ccr<'_>) -> u32 {
        let msisdn = ccr
            .subscription(subscription_id_type::END_USER_E164)
            .unwrap_or("");
        let i: usize = msisdn[4..].parse().unwrap_or(0);
        self.dataset.subscribers[i].company
    }

    fn answered(&mut self, shard: u16, req: usize, ccr: &Ccr<'_>, o: &Outcome, decided: bool) {
        let Some(company) = o.company else {
            return;
        };
        self.touched.push(company);
        if !o.duplicate {
            for (i, s) in o.services().iter().enumerate() {
                if s.cost > 0 {
                    *self.charged.entry((company, MONEY)).or_default() += s.cost;
                } else if s.cost < 0 {
                    *self.credited.entry((company, MONEY)).or_default() -= s.cost;
                }
                if let Some(p) = o.package[i] {
                    *self.charged.entry((company, p + 1)).or_default() += s.package_units as i64;
                }
                if s.result_code == 4012 && !decided {
                    self.refused_only_when_poor(company, s.rating_group);
                }
            }
        }
        // The session follows its answers.
        let Some(si) = self.sent[req].session else {
            return;
        };
        let sess = &mut self.sessions[si];
        if ccr.request_number + 1 != sess.next {
            return; // an older request's duplicate
        }
        sess.busy = false;
        if ccr.request_type == RequestType::Termination || o.result_code != 2001 {
            sess.ended = true;
            return;
        }
        for m in o.mscc() {
            if let Some(svc) = sess
                .services
                .iter_mut()
                .find(|s| Some(s.rating_group) == m.rating_group)
            {
                svc.granted = m
                    .granted
                    .and_then(|g| g.total_octets.or(g.time_s.map(u64::from)))
                    .unwrap_or(0);
            }
        }
        let _ = shard;
    }

    /// A 4012 for money: all the company has left across the shards cannot pay one
    /// block of the rating group.
    fn refused_only_when_poor(&mut self, company: u32, rating_group: Option<u32>) {
        let Some(block) = BLOCK_COST
            .iter()
            .find(|(rg, _)| Some(*rg) == rating_group)
            .map(|b| b.1)
        else {
            return;
        };
        // While a recall is under way, everything unreserved is being gathered for the
        // shard that asked: in flight. (A shard that held the money all in may refuse
        // in that time, before the recall reaches it.)
        let owner = self.live[usize::from(self.live[0].owner_of(company))].escrow_state(company)[0]
            .2
            .expect("the owner holds the remainder");
        if owner.outstanding != 0 {
            self.count("4012 during a recall");
            return;
        }
        let mut room = owner.room();
        for e in &self.live {
            room += e.escrow_state(company)[0].0.available;
        }
        // Packages that could have paid are empty or expired: the money decided.
        assert!(
            room < block,
            "company {company} refused (4012) with {room} left, a block costs {block}: {:?}\nrequest {:?}",
            self.live
                .iter()
                .map(|e| e.escrow_state(company)[0])
                .collect::<Vec<_>>(),
            self.current
        );
        self.count("4012 checked");
    }

    fn ccr_bytes(&mut self, c: &Ccr<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = encode_ccr(c, &mut buf).expect("encodes");
        buf.truncate(n);
        buf
    }

    fn send_session_request(&mut self, si: usize, kind: RequestType) {
        let (id, msisdn, number, services) = {
            let s = &self.sessions[si];
            (s.id.clone(), s.msisdn.clone(), s.next, s.services.clone())
        };
        let voice = services[0].seconds;
        let mut ccr = Ccr {
            session_id: &id,
            origin_host: "pgw.sim",
            origin_realm: "sim",
            destination_realm: "ocs",
            service_context_id: if voice {
                "32260@3gpp.org"
            } else {
                "32251@3gpp.org"
            },
            request_type: kind,
            request_number: number,
            subscription_id_count: 1,
            mscc_count: services.len() as u8,
            ..Ccr::default()
        };
        ccr.header.end_to_end = self.e2e;
        ccr.header.hop_by_hop = self.e2e;
        self.e2e += 1;
        ccr.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: &msisdn,
        };
        for (i, s) in services.iter().enumerate() {
            let units = |v: u64| {
                if s.seconds {
                    Units {
                        time_s: Some(v as u32),
                        ..Units::default()
                    }
                } else {
                    Units {
                        total_octets: Some(v),
                        ..Units::default()
                    }
                }
            };
            let ask = if s.seconds {
                1 + self.rng.below(300)
            } else {
                1 + self.rng.below(4 * MIB)
            };
            let requested = match kind {
                RequestType::Termination => None,
                _ if self.rng.chance(20) => None, // the default quota
                _ => Some(units(ask)),
            };
            let used = match kind {
                RequestType::Initial => None,
                _ => Some(units(self.rng.below(s.granted + 1))),
            };
            ccr.mscc[i] = Mscc {
                rating_group: Some(s.rating_group),
                service_identifier: None,
                requested: if kind == RequestType::Initial {
                    requested.or(Some(units(ask)))
                } else {
                    requested
                },
                used,
                reporting_reason: None,
            };
        }
        let bytes = self.ccr_bytes(&ccr);
        self.sessions[si].next += 1;
        self.sessions[si].busy = true;
        self.sent.push(Sent {
            bytes,
            session: Some(si),
        });
        let shard = shard_of(id.as_bytes(), SHARDS);
        self.handle(shard, self.sent.len() - 1, false);
    }

    fn new_session(&mut self) {
        let sub = self.rng.below(SUBSCRIBERS as u64) as usize;
        let id = format!("pgw.sim;{};{}", self.now, self.sessions.len());
        let services = if self.rng.chance(25) {
            vec![Service {
                rating_group: 30,
                seconds: true,
                granted: 0,
            }]
        } else if self.rng.chance(50) {
            vec![
                Service {
                    rating_group: 10,
                    seconds: false,
                    granted: 0,
                },
                Service {
                    rating_group: 20,
                    seconds: false,
                    granted: 0,
                },
            ]
        } else {
            vec![Service {
                rating_group: 10,
                seconds: false,
                granted: 0,
            }]
        };
        self.sessions.push(Session {
            id,
            msisdn: format!("4917{sub:08}"),
            next: 0,
            services,
            busy: false,
            ended: false,
        });
        self.send_session_request(self.sessions.len() - 1, RequestType::Initial);
    }

    fn event(&mut self) {
        let sub = self.rng.below(SUBSCRIBERS as u64) as usize;
        let msisdn = format!("4917{sub:08}");
        let id = format!("smsc.sim;{};{}", self.now, self.e2e);
        let action = match self.rng.below(10) {
            0 => RequestedAction::RefundAccount,
            1 => RequestedAction::CheckBalance,
            2 => RequestedAction::PriceEnquiry,
            _ => RequestedAction::DirectDebiting,
        };
        let mut ccr = Ccr {
            session_id: &id,
            origin_host: "smsc.sim",
            origin_realm: "sim",
            destination_realm: "ocs",
            service_context_id: "32274@3gpp.org",
            request_type: RequestType::Event,
            request_number: 0,
            requested_action: Some(action),
            service_identifier: Some(1),
            requested: Some(Units {
                service_specific: Some(1 + self.rng.below(3)),
                ..Units::default()
            }),
            subscription_id_count: 1,
            ..Ccr::default()
        };
        ccr.header.end_to_end = self.e2e;
        ccr.header.hop_by_hop = self.e2e;
        self.e2e += 1;
        ccr.subscription_ids[0] = SubscriptionId {
            id_type: subscription_id_type::END_USER_E164,
            data: &msisdn,
        };
        // Retransmitted (T flag) copies may arrive first.
        let mut copy = ccr;
        copy.header.flags |= cmd_flags::T;
        let (first, second) = if self.rng.chance(50) {
            (ccr, copy)
        } else {
            (copy, ccr)
        };
        let shard = shard_of(id.as_bytes(), SHARDS);
        let a = self.ccr_bytes(&first);
        self.sent.push(Sent {
            bytes: a,
            session: None,
        });
        let req = self.sent.len() - 1;
        self.handle(shard, req, false);
        if self.rng.chance(20) {
            let b = self.ccr_bytes(&second);
            self.sent.push(Sent {
                bytes: b,
                session: None,
            });
            let waiting = self.parked[usize::from(shard)].iter().any(|p| p.1 == req);
            let req2 = self.sent.len() - 1;
            self.handle(shard, req2, !waiting);
            self.count("event retransmissions");
        }
    }

    /// A request sent again as it was (a lost answer; a retransmission).
    fn duplicate(&mut self) {
        if self.sent.is_empty() {
            return;
        }
        let recent = (self.sent.len() - self.sent.base).min(50);
        let req = self.sent.len() - 1 - self.rng.below(recent as u64) as usize;
        let msg = Message::new(&self.sent[req].bytes).expect("whole");
        let ccr = Ccr::decode(&msg).expect("valid");
        let shard = shard_of(ccr.session_id.as_bytes(), SHARDS);
        let waiting = self.parked[usize::from(shard)].iter().any(|p| p.1 == req);
        // Only the last request of an open session, or an event, is answered again.
        let replayable = match self.sent[req].session {
            Some(si) => {
                let s = &self.sessions[si];
                !s.ended && ccr.request_number + 1 == s.next
            }
            None => ccr.request_type == RequestType::Event,
        };
        if !replayable {
            return;
        }
        let again = self.sent[req].bytes.clone();
        self.sent.push(Sent {
            bytes: again,
            session: self.sent[req].session,
        });
        let req2 = self.sent.len() - 1;
        self.handle(shard, req2, !waiting);
        self.count("duplicates sent");
    }

    fn top_up(&mut self) {
        let c = self.rng.below(COMPANIES as u64) as u32;
        let amount = 1 + self.rng.below(300_000) as i64;
        let owner = self.live[0].owner_of(c);
        assert!(self.live[usize::from(owner)].top_up(c, amount));
        let rec = format!(r#"{{"kind":"topup","company":"c{c}","amount":{amount}}}"#);
        self.record(owner, RecordKind::Balance, rec.as_bytes());
        self.post(owner);
        *self.credited.entry((c, MONEY)).or_default() += amount;
        self.touched.push(c);
        self.count("top-ups");
    }

    fn buy_package(&mut self) {
        let c = self.rng.below(COMPANIES as u64) as usize;
        let id = format!("bought-{}", self.e2e);
        self.e2e += 1;
        let line = package_line(&mut self.rng, &id, c);
        let mut copy = line.clone().into_bytes();
        let (package, _) = gyro_engine::provision::parse_package(&mut copy).expect("valid");
        let amount = package.amount as i64;
        let mut index = 0;
        for s in 0..SHARDS {
            assert!(self.live[usize::from(s)].add_package(c as u32, package.clone()));
            index = self.live[usize::from(s)].escrow_state(c as u32).len() - 1;
            let rec = format!(r#"{{"kind":"package","company":"c{c}","package":{line}}}"#);
            self.record(s, RecordKind::Balance, rec.as_bytes());
        }
        self.credited.insert((c as u32, index as u16), amount);
        self.touched.push(c as u32);
        self.count("packages bought");
    }

    fn expire(&mut self) {
        let now = self.now;
        for s in 0..SHARDS {
            let n = self.live[usize::from(s)].expire(now, |_, _| {});
            if n > 0 || self.live[usize::from(s)].has_mail() {
                let rec = Control::Expired { now_ms: now }.encode();
                self.record(s, RecordKind::Control, &rec);
                *self.stats.entry("sessions expired").or_default() += n as u64;
            }
            self.post(s);
        }
        self.touched.extend(0..COMPANIES as u32);
    }

    /// Every shard stops at once: messages in flight and waiting requests are lost.
    /// The shards go on from what their journals rebuild (the shadows), and what was
    /// sent and not taken is delivered again.
    fn crash(&mut self) {
        self.checkpoint();
        std::mem::swap(&mut self.live, &mut self.shadow);
        for ch in &mut self.channels {
            ch.clear();
        }
        self.in_flight.clear();
        for a in 0..SHARDS {
            for b in 0..SHARDS {
                let got = self.live[usize::from(b)].received_from(a);
                let again: Vec<Envelope> = self.live[usize::from(a)].undelivered(b, got).collect();
                for e in again {
                    *self
                        .in_flight
                        .entry((e.msg.company(), e.msg.bucket()))
                        .or_default() += e.msg.amount();
                    self.channels[usize::from(a) * usize::from(SHARDS) + usize::from(b)]
                        .push_back(e);
                    self.count("redelivered after a crash");
                }
            }
        }
        // The peers send their unanswered requests again.
        let waiting: Vec<(u16, usize)> = (0..SHARDS)
            .flat_map(|s| {
                std::mem::take(&mut self.parked[usize::from(s)])
                    .into_iter()
                    .map(move |(_, r, _)| (s, r))
            })
            .collect();
        for (s, r) in waiting {
            self.handle(s, r, false);
        }
        self.touched.extend(0..COMPANIES as u32);
        self.count("crashes");
    }

    /// Live and replayed engines agree, and a snapshot restores the same state.
    fn checkpoint(&mut self) {
        for s in 0..usize::from(SHARDS) {
            for c in 0..COMPANIES as u32 {
                assert_eq!(
                    self.live[s].escrow_state(c),
                    self.shadow[s].escrow_state(c),
                    "shard {s} company {c}: the replayed journal disagrees"
                );
            }
            assert_eq!(self.live[s].open_sessions(), self.shadow[s].open_sessions());
            for o in 0..SHARDS {
                assert_eq!(
                    self.live[s].received_from(o),
                    self.shadow[s].received_from(o)
                );
            }
        }
    }

    fn snapshot_round_trip(&self) {
        for s in 0..usize::from(SHARDS) {
            let bytes = self.live[s].snapshot(0, 0).encode();
            let back = Engine::restore(
                self.dataset.clone(),
                gyro_engine::charging::engine::EngineSnapshot::decode(&bytes).expect("decodes"),
            )
            .expect("restores");
            for c in 0..COMPANIES as u32 {
                assert_eq!(self.live[s].escrow_state(c), back.escrow_state(c));
            }
            assert_eq!(self.live[s].open_sessions(), back.open_sessions());
        }
    }

    fn check(&mut self, step: u64) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &c in &touched {
            let states: Vec<_> = self.live.iter().map(|e| e.escrow_state(c)).collect();
            let buckets = states[0].len();
            for b in 0..buckets {
                let key = (c, b as u16);
                let mut total = self.in_flight.get(&key).copied().unwrap_or(0);
                let mut settled = 0;
                for (s, state) in states.iter().enumerate() {
                    let (bucket, _, owner) = state[b];
                    assert!(
                        bucket.is_conserved(),
                        "step {step}: shard {s} slice {key:?}"
                    );
                    assert!(
                        bucket.available >= 0,
                        "step {step}: shard {s} slice {key:?} granted beyond what it held: {bucket:?}"
                    );
                    total += bucket.credited;
                    settled += bucket.settled;
                    if let Some(o) = owner {
                        assert!(o.remainder >= -o.floor, "step {step}: owner {key:?} {o:?}");
                        total += o.remainder;
                    }
                }
                assert_eq!(
                    total,
                    self.credited.get(&key).copied().unwrap_or(0),
                    "step {step}: company {c} bucket {b} not conserved"
                );
                assert_eq!(
                    settled,
                    self.charged.get(&key).copied().unwrap_or(0),
                    "step {step}: company {c} bucket {b}: settled differs from the CDRs"
                );
            }
        }
    }

    fn step(&mut self, step: u64) {
        self.now += self.rng.below(40);
        let open: Vec<usize> = (self.sessions.len().saturating_sub(200)..self.sessions.len())
            .filter(|&i| !self.sessions[i].ended && !self.sessions[i].busy)
            .collect();
        match self.rng.below(100) {
            0..=19 => self.new_session(),
            20..=44 if !open.is_empty() => {
                let si = open[self.rng.below(open.len() as u64) as usize];
                self.send_session_request(si, RequestType::Update);
            }
            45..=54 if !open.is_empty() => {
                let si = open[self.rng.below(open.len() as u64) as usize];
                self.send_session_request(si, RequestType::Termination);
            }
            55..=57 if !open.is_empty() => {
                // The CCR-T is lost: Tcc closes the session.
                let si = open[self.rng.below(open.len() as u64) as usize];
                self.sessions[si].ended = true;
                self.count("sessions abandoned");
            }
            58..=65 => self.event(),
            66..=70 => self.duplicate(),
            71..=72 => self.top_up(),
            73 if self.rng.chance(2) => self.buy_package(),
            _ => {}
        }
        // Messages travel faster than requests come (but not always).
        for _ in 0..self.rng.below(8) {
            self.deliver();
        }
        if self.now - self.last_expire >= 1_000 {
            self.last_expire = self.now;
            self.expire();
        }
        if self.rng.below(100_000) == 0 {
            self.crash();
        }
        self.check(step);
        if step.is_multiple_of(10_000) {
            self.checkpoint();
            let oldest_waiting = self
                .parked
                .iter()
                .flatten()
                .map(|p| p.1)
                .min()
                .unwrap_or(usize::MAX);
            self.sent
                .forget_before(oldest_waiting.min(self.sent.len().saturating_sub(1_000)));
        }
        if step.is_multiple_of(100_000) {
            self.snapshot_round_trip();
        }
    }
}

#[test]
fn four_shards_conserve_money_and_replay_exactly() {
    let ops: u64 = std::env::var("GYRO_SIM_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let seed: u64 = std::env::var("GYRO_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut sim = Sim::new(seed);
    let t0 = std::time::Instant::now();
    for step in 1..=ops {
        sim.step(step);
    }
    // Drain: every message delivered, every waiting request answered.
    for _ in 0..1_000_000 {
        if sim.channels.iter().all(VecDeque::is_empty) {
            break;
        }
        sim.deliver();
        sim.check(ops);
    }
    assert!(sim.channels.iter().all(VecDeque::is_empty));
    let waiting: usize = sim.parked.iter().map(Vec::len).sum();
    assert_eq!(
        waiting, 0,
        "requests still wait after every message was delivered"
    );
    sim.crash();
    sim.checkpoint();
    sim.snapshot_round_trip();
    let retained: usize = sim.live.iter().map(|e| e.undelivered_count()).sum();
    println!("messages kept for redelivery at the end: {retained}");
    let mut stats: Vec<_> = sim.stats.iter().collect();
    stats.sort();
    println!(
        "seed {seed}: {ops} operations in {:.1} s; {stats:?}",
        t0.elapsed().as_secs_f64()
    );
    for what in [
        "waits",
        "escrow messages",
        "duplicates answered",
        "top-ups",
        "sessions expired",
        "4012 checked",
    ] {
        assert!(
            sim.stats.get(what).copied().unwrap_or(0) > 0,
            "the run never exercised {what}: {stats:?}"
        );
    }
}
