//! Deterministic simulation of four shard cores sharing companies through escrow,
//! replayable from a seed. The code simulated is the code that runs: each shard is a
//! `gyro_engine::shard::ShardCore`, driven as `gyro serve`'s loop drives it (a request,
//! then the end of the batch), with the mesh between the cores as queues the simulation
//! delivers from, and each core's log as the records it appends.
//!
//! Random companies, packages (some expire during the run) and subscribers; sessions
//! with one or two services (data, voice), CCR-I/U/T, lost CCR-Ts closed by Tcc, events
//! (SMS debit, refund, balance check, price enquiry), duplicates and retransmissions
//! (with and without the T flag, before and after the original was answered), requests
//! that arrive on a shard that does not own their session (they cross the mesh and their
//! answers come back), top-ups on the owner shard, packages bought at run time; mesh
//! messages are delivered first in first out per channel and in random order across
//! channels; now and then every shard "crashes": the messages in flight, the requests
//! waiting for escrow and the answers not yet out are lost, each shard goes on from a
//! core rebuilt by replaying its log, what was sent and never taken is delivered again
//! and the peers send their unanswered requests again.
//!
//! Checked after every step, for every company the step touched: money and units are
//! conserved exactly (owner remainder + slices + in flight == provisioned + top-ups +
//! refunds); no slice holds less than nothing and no owner leases beyond the credit
//! limit (no grant beyond the company's means); what the slices settled equals what the
//! CDRs in the logs charged; no request gets two CDRs; a duplicate answered at once
//! changes nothing; a 4012 comes only when all the money the company has left cannot
//! pay one block (money in flight excepted; not checked while a recall gathers the
//! company's money for another shard, nor in a batch that decided a request after it
//! waited `WAITS_MAX` times). Every record a core appends is replayed at once by a
//! standby core (`ShardCore::replay`); its balances must equal the live core's at every
//! checkpoint, and at a crash the standby becomes the shard.
//!
//! `GYRO_SIM_OPS` (default 200,000) and `GYRO_SIM_SEED` (default 1) choose the run;
//! `cargo test --release -p gyro-engine --test simulation -- --nocapture` with
//! `GYRO_SIM_OPS=10000000` is the long one.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use gyro_engine::charging::engine::{shard_of, Engine, EngineConfig};
use gyro_engine::charging::escrow::MONEY;
use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, RequestedAction, SubscriptionId,
    Units,
};
use gyro_engine::diameter::{cmd_flags, Message};
use gyro_engine::provision::{import_ndjson, Dataset, OnError};
use gyro_engine::segment::RecordKind;
use gyro_engine::shard::{Action, ConnRef, CoreConfig, LogPolicy, MeshMsg, Out, ShardCore};
use simd_json::prelude::*;

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
    /// 0: a single-service session's service (RFC 8506 §5.1.2: no MSCC; service 1,
    /// counted in units, at the top level).
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

/// What a batch of a core's actions came to.
#[derive(Default)]
struct Batch {
    /// Answers, by request: Result-Code and a hash of the AVPs.
    answers: Vec<(usize, u32, u64)>,
    /// CDR lines: (Session-Id, CC-Request-Number) and, per service, rating group and
    /// granted units (for the sessions to follow).
    cdrs: Vec<CdrSeen>,
}

/// A CDR's (Session-Id, CC-Request-Number) and, per service, its rating group and the
/// units granted.
type CdrSeen = (String, u32, Vec<(u32, u64)>);

fn core_config(shard: u16) -> CoreConfig {
    CoreConfig {
        shard,
        shards: SHARDS,
        origin_host: "ocs.sim".into(),
        origin_realm: "sim".into(),
        log: LogPolicy::Tick,
        run: u64::from(shard) + 1,
    }
}

fn key_hash(id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

struct Sim {
    rng: Rng,
    now: u64,
    dataset: Dataset,
    live: Vec<ShardCore>,
    /// Per shard, a core replaying every record the live one appends.
    standby: Vec<ShardCore>,
    out: Out,
    /// Mesh messages, per (from, to).
    channels: Vec<VecDeque<MeshMsg>>,
    /// Requests not answered yet (waiting for escrow, or their answers in the mesh).
    pending: BTreeMap<usize, u16>,
    /// Requests sent again that must not get a CDR of their own.
    expect_duplicate: HashSet<usize>,
    sent: SentLog,
    sessions: Vec<Session>,
    /// Per (company, bucket): provisioned + top-ups + refunds, what CDRs charged, and
    /// what is in flight.
    credited: HashMap<(u32, u16), i64>,
    charged: HashMap<(u32, u16), i64>,
    in_flight: HashMap<(u32, u16), i64>,
    /// Per (company, bucket), what services charged with overuse (usage beyond the
    /// grant, within the allowance) settled: slices may be below zero by that much.
    overused: HashMap<(u32, u16), i64>,
    /// Every CDR id seen (hashed): none twice.
    cdr_ids: HashSet<u64>,
    /// CDRs whose request's answer has not come yet (it may cross the mesh after the
    /// batch that wrote the CDR): per (Session-Id, CC-Request-Number), what was granted.
    unanswered_cdrs: HashMap<(String, u32), Vec<(u32, u64)>>,
    /// The recent original answers (hashed), by (Session-Id, CC-Request-Number)
    /// (hashed), oldest first in `answer_order`.
    answers: HashMap<u64, u64>,
    answer_order: VecDeque<u64>,
    e2e: u32,
    /// What is being done, for failure messages.
    current: String,
    touched: Vec<u32>,
    stats: HashMap<&'static str, u64>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let dataset = dataset(&mut rng);
        let live = (0..SHARDS)
            .map(|s| {
                let e = Engine::new_shard(dataset.clone(), config(), s, SHARDS);
                ShardCore::new(e, core_config(s), 0, T0)
            })
            .collect();
        let standby = (0..SHARDS)
            .map(|s| {
                ShardCore::replaying(Engine::new_shard(dataset.clone(), config(), s, SHARDS), 0)
            })
            .collect();
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
            live,
            standby,
            dataset,
            out: Out::new(),
            channels: (0..SHARDS * SHARDS).map(|_| VecDeque::new()).collect(),
            pending: BTreeMap::new(),
            expect_duplicate: HashSet::new(),
            sent: SentLog::default(),
            sessions: Vec::new(),
            credited,
            charged: HashMap::new(),
            in_flight: HashMap::new(),
            overused: HashMap::new(),
            cdr_ids: HashSet::new(),
            unanswered_cdrs: HashMap::new(),
            answers: HashMap::new(),
            answer_order: VecDeque::new(),
            e2e: 1,
            current: String::new(),
            touched: Vec::new(),
            stats: HashMap::new(),
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn engine(&self, shard: u16) -> &Engine {
        self.live[usize::from(shard)].engine()
    }

    /// Runs `f` on shard `shard`'s core, then the end of the batch (as the server's
    /// loop does), and performs what the core asked.
    fn run(&mut self, shard: u16, f: impl FnOnce(&mut ShardCore, &mut Out, u64)) {
        let now = self.now;
        let s = usize::from(shard);
        let decided_before = self.live[s].metrics().decided_after_waiting;
        f(&mut self.live[s], &mut self.out, now);
        self.live[s].flush(now, &mut self.out);
        let decided = self.live[s].metrics().decided_after_waiting != decided_before;
        let mut out = std::mem::take(&mut self.out);
        let mut batch = Batch::default();
        let mut cdrs: Vec<Vec<u8>> = Vec::new();
        let standby = &mut self.standby[s];
        let (channels, in_flight) = (&mut self.channels, &mut self.in_flight);
        out.drain(|action, arena| match action {
            Action::Append { kind, seq, at } => {
                let payload = at.of(arena);
                standby
                    .replay(kind, seq, payload)
                    .expect("every appended record replays");
                if kind == RecordKind::Cdr {
                    cdrs.push(payload.to_vec());
                }
            }
            Action::Answer { to, at } => {
                let bytes = at.of(arena);
                let code = Message::new(bytes)
                    .and_then(|m| m.avps().flatten().find(|a| a.code == 268))
                    .and_then(|a| a.u32().ok())
                    .unwrap_or(0);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.get(20..).unwrap_or(&[]).hash(&mut h);
                batch.answers.push((to.conn as usize, code, h.finish()));
            }
            Action::Post { to, msg } => {
                if let MeshMsg::Escrow(e) = &msg {
                    *in_flight
                        .entry((e.msg.company(), e.msg.bucket()))
                        .or_default() += e.msg.amount();
                }
                channels[s * usize::from(SHARDS) + usize::from(to)].push_back(msg);
            }
            Action::WriteOut | Action::Sync => {}
        });
        self.out = out;
        // The 4012 check compares a refusal with what the company has after the batch:
        // exact only when the batch charged that one request (a lease can let several
        // waiting requests go in one batch, the later ones changing what the earlier
        // ones saw).
        let several = cdrs.len() > 1;
        if several {
            self.count("batches of several requests (4012 not checked)");
        }
        for line in cdrs {
            self.charged_by(line, decided || several, &mut batch);
        }
        for (sid, n, granted) in std::mem::take(&mut batch.cdrs) {
            self.unanswered_cdrs.insert((sid, n), granted);
        }
        for (req, code, hash) in std::mem::take(&mut batch.answers) {
            self.answered(req, code, hash);
        }
    }

    /// What a CDR charged, as billing reads it.
    fn charged_by(&mut self, mut line: Vec<u8>, decided: bool, batch: &mut Batch) {
        let v = simd_json::to_owned_value(&mut line).expect("a CDR is JSON");
        let id = v["id"].as_str().expect("an id").to_string();
        // No request is charged twice, nor written twice for billing: a copy of a
        // request, however late, gets no CDR of its own.
        assert!(
            self.cdr_ids.insert(key_hash(&id)),
            "two CDRs for {id}: {v:?}"
        );
        let Some(company) = v.get("company").and_then(|c| c.as_str()) else {
            return;
        };
        let c: u32 = company[1..].parse().expect("c<N>");
        self.touched.push(c);
        let mut granted = Vec::new();
        for s in v["services"].as_array().expect("services") {
            let cost = s["cost"].as_i64().expect("cost");
            let overuse = s["overuse"].as_bool() == Some(true);
            if overuse {
                *self.overused.entry((c, MONEY)).or_default() += cost.max(0);
            }
            if cost > 0 {
                *self.charged.entry((c, MONEY)).or_default() += cost;
            } else if cost < 0 {
                *self.credited.entry((c, MONEY)).or_default() -= cost;
            }
            if let Some(p) = s.get("package").and_then(|p| p.as_str()) {
                let e = self.engine(0);
                let n = e.escrow_state(c).len() as u16 - 1;
                let index = (0..n)
                    .find(|&i| e.package_id(c, i) == p)
                    .expect("a package of the company");
                let units = s["package_units"].as_u64().expect("units") as i64;
                *self.charged.entry((c, index + 1)).or_default() += units;
                if overuse {
                    *self.overused.entry((c, index + 1)).or_default() += units;
                }
            }
            let rg = s["rating_group"].as_u64().map(|r| r as u32);
            if s["result_code"].as_u64() == Some(4012) && !decided {
                self.current = format!("{}; the CDR: {v:?}", self.current);
                self.refused_only_when_poor(c, rg);
            }
            // A single-service session's service has no rating group: 0 here.
            let service = rg.or_else(|| (s["service_identifier"].as_u64() == Some(1)).then_some(0));
            if let Some(rg) = service {
                granted.push((rg, s["granted"].as_u64().unwrap_or(0)));
            }
        }
        let number = v.get("request_number").and_then(|n| n.as_u64());
        if let (Some(sid), Some(n)) = (v["session_id"].as_str(), number) {
            batch.cdrs.push((sid.to_string(), n as u32, granted));
        }
    }

    /// Sends request `req` to a shard: the owner of its session mostly, another shard
    /// (which forwards it) now and then.
    fn send(&mut self, req: usize, expect_duplicate: bool) {
        let (owner, company) = {
            let msg = Message::new(&self.sent[req].bytes).expect("a whole message");
            let ccr = Ccr::decode(&msg).expect("a valid CCR");
            (
                shard_of(ccr.session_id.as_bytes(), SHARDS),
                self.company_of(&ccr),
            )
        };
        let entry = if self.rng.chance(25) {
            self.rng.below(u64::from(SHARDS)) as u16
        } else {
            owner
        };
        self.pending.insert(req, entry);

        if expect_duplicate {
            self.expect_duplicate.insert(req);
        }
        let before = format!("{:?}", self.engine(owner).escrow_state(company));
        let bytes = self.sent[req].bytes.clone();
        self.current = {
            let msg = Message::new(&bytes).expect("a whole message");
            let ccr = Ccr::decode(&msg).expect("a valid CCR");
            format!(
                "request {req} on shard {entry} (owner {owner}): {:?} #{} {:?} {:?}",
                ccr.request_type,
                ccr.request_number,
                ccr.mscc(),
                ccr.requested_action
            )
        };
        let from = ConnRef {
            conn: req as u32,
            gen: 0,
        };
        self.run(entry, |core, out, now| {
            core.handle_request(now, from, &bytes, out)
        });
        self.sent.items[req - self.sent.base].bytes = bytes;
        if expect_duplicate && entry == owner && !self.pending.contains_key(&req) {
            assert_eq!(
                before,
                format!("{:?}", self.engine(owner).escrow_state(company)),
                "a duplicate changed the company's balances"
            );
        }
    }

    fn company_of(&self, ccr: &Ccr<'_>) -> u32 {
        let msisdn = ccr
            .subscription(subscription_id_type::END_USER_E164)
            .unwrap_or("");
        let i: usize = msisdn[4..].parse().unwrap_or(0);
        self.dataset.subscribers[i].company
    }

    /// Request `req` was answered with `code`; its session follows the answer.
    fn answered(&mut self, req: usize, code: u32, hash: u64) {
        assert!(
            self.pending.remove(&req).is_some(),
            "request {req} answered twice or never sent"
        );
        if req < self.sent.base {
            return;
        }
        let (sid, number, kind) = {
            let msg = Message::new(&self.sent[req].bytes).expect("a whole message");
            let ccr = Ccr::decode(&msg).expect("a valid CCR");
            (
                ccr.session_id.to_string(),
                ccr.request_number,
                ccr.request_type,
            )
        };
        let request = key_hash(&format!("{sid}#{number}"));
        let cdr = self.unanswered_cdrs.remove(&(sid, number));
        if self.expect_duplicate.remove(&req) {
            assert!(cdr.is_none(), "a repeated request was handled as new");
        }
        if cdr.is_some() {
            // The original answer: a copy answered from what gyro keeps must be it.
            self.answers.insert(request, hash);
            self.answer_order.push_back(request);
            if self.answer_order.len() > 100_000 {
                let old = self.answer_order.pop_front().expect("not empty");
                self.answers.remove(&old);
            }
        } else {
            self.count("answered without a CDR (duplicates)");
            // 5012: its answer is no longer kept; 3004: the mesh was too busy.
            if let (Some(&original), false) =
                (self.answers.get(&request), matches!(code, 5012 | 3004))
            {
                assert_eq!(
                    original, hash,
                    "a duplicate got another answer than the original ({code}) while handling {}",
                    self.current
                );
                self.count("duplicates answered as the original");
            }
        }
        let Some(si) = self.sent[req].session else {
            return;
        };
        let sess = &mut self.sessions[si];
        if number + 1 != sess.next {
            return; // an older request's duplicate
        }
        sess.busy = false;
        if kind == RequestType::Termination || code != 2001 {
            sess.ended = true;
            return;
        }
        if let Some(granted) = cdr {
            for (rg, g) in granted {
                if let Some(svc) = sess.services.iter_mut().find(|s| s.rating_group == rg) {
                    svc.granted = g;
                }
            }
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
        let msg = self.channels[ch].pop_front().expect("not empty");
        let to = (ch % usize::from(SHARDS)) as u16;
        if let MeshMsg::Escrow(e) = &msg {
            let key = (e.msg.company(), e.msg.bucket());
            *self.in_flight.entry(key).or_default() -= e.msg.amount();
            if (key.0 as usize) < COMPANIES {
                self.touched.push(key.0);
            }
            self.count("escrow messages");
        }
        self.current = format!("a mesh message to shard {to}: {msg:?}");
        self.run(to, |core, out, now| core.handle_mesh(now, msg, out));
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
        let owner = self
            .engine(self.engine(0).owner_of(company))
            .escrow_state(company)[0]
            .2
            .expect("the owner holds the remainder");
        if owner.outstanding != 0 {
            self.count("4012 during a recall");
            return;
        }
        let mut room = owner.room();
        for s in 0..SHARDS {
            room += self.engine(s).escrow_state(company)[0].0.available;
        }
        // Packages that could have paid are empty or expired: the money decided.
        assert!(
            room < block,
            "company {company} refused (4012) with {room} left, a block costs {block}: {:?}\nwhile handling {}",
            (0..SHARDS)
                .map(|s| self.engine(s).escrow_state(company)[0])
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
        let single = services[0].rating_group == 0;
        let mut ccr = Ccr {
            session_id: &id,
            origin_host: "pgw.sim",
            origin_realm: "sim",
            destination_realm: "ocs",
            service_context_id: if single {
                "32270@3gpp.org"
            } else if voice {
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
                if single {
                    Units {
                        service_specific: Some(v),
                        ..Units::default()
                    }
                } else if s.seconds {
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
            let ask = if single {
                1 + self.rng.below(5)
            } else if s.seconds {
                1 + self.rng.below(300)
            } else {
                1 + self.rng.below(4 * MIB)
            };
            let requested = match kind {
                RequestType::Termination => None,
                _ if self.rng.chance(20) => None, // the default quota
                // Absurd requests: granted at most the grant maximum.
                _ if self.rng.chance(2) => {
                    self.count("absurd requests sent");
                    let absurd = [u64::from(u32::MAX), i64::MAX as u64, u64::MAX];
                    Some(units(absurd[self.rng.below(3) as usize]))
                }
                _ => Some(units(ask)),
            };
            let used = match kind {
                RequestType::Initial => None,
                // An adversarial peer: nothing, or absurd values beyond any allowance
                // (refused with 5004, nothing charged). Overuse within the allowance
                // takes a slice below zero by design, which this simulation's "no
                // slice below zero" check does not allow: it is tested over sockets
                // (`shards/tests/money.rs`).
                // Boundary and absurd values: 0, 1 and granted + 1 (within the
                // allowance when the grant is 10 or more: charged, the slice may go
                // below zero by what overuse charged), then beyond any allowance
                // (refused with 5004, nothing charged).
                _ if self.rng.chance(3) => {
                    self.count("boundary and absurd usage sent");
                    let values = [
                        0,
                        1,
                        s.granted + 1,
                        u64::from(u32::MAX),
                        i64::MAX as u64,
                        u64::MAX,
                    ];
                    Some(units(values[self.rng.below(6) as usize]))
                }
                // Overuse within the allowance (10% of the grant).
                _ if self.rng.chance(3) && s.granted >= 10 => {
                    self.count("overuse within the allowance sent");
                    Some(units(s.granted + 1 + self.rng.below(s.granted / 10)))
                }
                _ => Some(units(self.rng.below(s.granted + 1))),
            };
            let requested = if kind == RequestType::Initial {
                requested.or(Some(units(ask)))
            } else {
                requested
            };
            if single {
                ccr.mscc_count = 0;
                ccr.service_identifier = Some(1);
                ccr.requested = requested;
                ccr.used = used;
                continue;
            }
            ccr.mscc[i] = Mscc {
                rating_group: Some(s.rating_group),
                service_identifier: None,
                requested,
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
        self.send(self.sent.len() - 1, false);
    }

    fn new_session(&mut self) {
        let sub = self.rng.below(SUBSCRIBERS as u64) as usize;
        let id = format!("pgw.sim;{};{}", self.now, self.sessions.len());
        let services = if self.rng.chance(10) {
            self.count("single-service sessions");
            vec![Service {
                rating_group: 0,
                seconds: false,
                granted: 0,
            }]
        } else if self.rng.chance(25) {
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
                // Now and then an absurd refund (2^63-1 units): refused, nothing credited.
                service_specific: Some(if self.rng.chance(3) {
                    i64::MAX as u64
                } else {
                    1 + self.rng.below(3)
                }),
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
        let a = self.ccr_bytes(&first);
        self.sent.push(Sent {
            bytes: a,
            session: None,
        });
        let req = self.sent.len() - 1;
        self.send(req, false);
        if self.rng.chance(20) {
            let b = self.ccr_bytes(&second);
            self.sent.push(Sent {
                bytes: b,
                session: None,
            });
            let waiting = self.pending.contains_key(&req);
            let req2 = self.sent.len() - 1;
            self.send(req2, !waiting);
            self.count("event retransmissions");
        }
    }

    /// A request sent again as it was (a lost answer; a retransmission).
    fn duplicate(&mut self) {
        if self.sent.is_empty() {
            return;
        }
        // An adversarial peer sends any of its recent requests again, in any order,
        // whatever became of it: nothing may be charged twice.
        if self.rng.chance(30) {
            let recent = (self.sent.len() - self.sent.base).min(200);
            let req = self.sent.len() - 1 - self.rng.below(recent as u64) as usize;
            let mut again = self.sent[req].bytes.clone();
            // As it was (with the T flag now and then), or sent anew with new
            // Hop-by-Hop and End-to-End ids: the (Session-Id, CC-Request-Number) key
            // must find it then.
            match self.rng.below(3) {
                0 => again[4] |= cmd_flags::T,
                1 => {
                    again[12..16].copy_from_slice(&self.e2e.to_be_bytes());
                    again[16..20].copy_from_slice(&self.e2e.to_be_bytes());
                    self.e2e += 1;
                    self.count("copies sent with new ids");
                }
                _ => {}
            }
            self.sent.push(Sent {
                bytes: again,
                session: self.sent[req].session,
            });
            let req2 = self.sent.len() - 1;
            self.send(req2, false);
            self.count("adversarial copies sent");
            return;
        }
        let recent = (self.sent.len() - self.sent.base).min(50);
        let req = self.sent.len() - 1 - self.rng.below(recent as u64) as usize;
        let msg = Message::new(&self.sent[req].bytes).expect("whole");
        let ccr = Ccr::decode(&msg).expect("valid");
        let waiting = self.pending.contains_key(&req);
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
        self.send(req2, !waiting);
        self.count("duplicates sent");
    }

    fn top_up(&mut self) {
        let c = self.rng.below(COMPANIES as u64) as u32;
        let amount = 1 + self.rng.below(300_000) as i64;
        let owner = self.engine(0).owner_of(c);
        let id = format!("c{c}");
        let mut made = Err(String::new());
        self.run(owner, |core, out, now| {
            made = core.top_up(now, &id, amount, None, out);
            core.confirm(now, out);
        });
        assert_eq!(made, Ok(true), "a top-up on the owner shard");
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
        let company = format!("c{c}");
        for s in 0..SHARDS {
            let body = line.clone().into_bytes();
            let mut made = Err((0, String::new()));
            self.run(s, |core, out, now| {
                made = core.add_package(now, &company, body, out);
                core.confirm(now, out);
            });
            assert_eq!(made, Ok(()), "a package added on shard {s}");
        }
        let index = self.engine(0).escrow_state(c as u32).len() - 1;
        self.credited
            .insert((c as u32, index as u16), package.amount as i64);
        self.touched.push(c as u32);
        self.count("packages bought");
    }

    /// Supervision, when a core's timer is due.
    fn timers(&mut self) {
        for s in 0..SHARDS {
            if self.now >= self.live[usize::from(s)].poll_timeout() {
                let before = self.live[usize::from(s)].metrics().expired_sessions;
                self.run(s, |core, out, now| core.handle_timeout(now, out));
                let n = self.live[usize::from(s)].metrics().expired_sessions - before;
                *self.stats.entry("sessions expired").or_default() += n;
                self.touched.extend(0..COMPANIES as u32);
            }
        }
    }

    /// Every shard stops at once: messages in flight, requests waiting for escrow and
    /// answers not yet out are lost. Each shard goes on from the core its log rebuilt
    /// (the standby), and what was sent and not taken is delivered again; the old
    /// core's state follows the log from here on as the new standby.
    fn crash(&mut self) {
        self.checkpoint();
        let live = std::mem::take(&mut self.live);
        let standby = std::mem::take(&mut self.standby);
        for (s, (old, mut replayed)) in live.into_iter().zip(standby).enumerate() {
            let mut out = Out::new();
            replayed.finish_replay(&mut out);
            assert!(out.is_empty(), "shard {s}: a record the standby never saw");
            let next = replayed.next_seq();
            assert_eq!(next, old.next_seq(), "shard {s}: the standby is behind");
            *self.stats.entry("waits").or_default() += old.metrics().waits;
            *self.stats.entry("forwarded").or_default() += old.metrics().forwarded;
            let engine = replayed.into_engine();
            self.live.push(ShardCore::new(
                engine,
                core_config(s as u16),
                next,
                self.now,
            ));
            self.standby.push(old.into_standby());
        }
        for ch in &mut self.channels {
            ch.clear();
        }
        self.in_flight.clear();
        for a in 0..SHARDS {
            for b in 0..SHARDS {
                let got = self.engine(b).received_from(a);
                let again: Vec<_> = self.engine(a).undelivered(b, got).collect();
                for e in again {
                    *self
                        .in_flight
                        .entry((e.msg.company(), e.msg.bucket()))
                        .or_default() += e.msg.amount();
                    self.channels[usize::from(a) * usize::from(SHARDS) + usize::from(b)]
                        .push_back(MeshMsg::Escrow(e));
                    self.count("redelivered after a crash");
                }
            }
        }
        // The peers send their unanswered requests again.
        let unanswered: Vec<usize> = std::mem::take(&mut self.pending).into_keys().collect();
        for r in unanswered {
            let dup = self.expect_duplicate.remove(&r);
            self.send(r, dup);
        }
        self.touched.extend(0..COMPANIES as u32);
        self.count("crashes");
    }

    /// Live and standby cores agree, and a snapshot restores the same state.
    fn checkpoint(&mut self) {
        for s in 0..usize::from(SHARDS) {
            let (live, standby) = (self.live[s].engine(), self.standby[s].engine());
            for c in 0..COMPANIES as u32 {
                assert_eq!(
                    live.escrow_state(c),
                    standby.escrow_state(c),
                    "shard {s} company {c}: the replayed journal disagrees"
                );
            }
            assert_eq!(live.open_sessions(), standby.open_sessions());
            for o in 0..SHARDS {
                assert_eq!(live.received_from(o), standby.received_from(o));
            }
        }
    }

    fn snapshot_round_trip(&self) {
        for s in 0..SHARDS {
            let e = self.engine(s);
            let bytes = e.snapshot(0, 0).encode();
            let back = Engine::restore(
                self.dataset.clone(),
                gyro_engine::charging::engine::EngineSnapshot::decode(&bytes).expect("decodes"),
            )
            .expect("restores");
            for c in 0..COMPANIES as u32 {
                assert_eq!(e.escrow_state(c), back.escrow_state(c));
            }
            assert_eq!(e.open_sessions(), back.open_sessions());
        }
    }

    fn check(&mut self, step: u64) {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &c in &touched {
            let states: Vec<_> = (0..SHARDS)
                .map(|s| self.engine(s).escrow_state(c))
                .collect();
            let buckets = states[0].len();
            for b in 0..buckets {
                let key = (c, b as u16);
                let mut total = self.in_flight.get(&key).copied().unwrap_or(0);
                let mut settled = 0;
                let mut below_zero = 0;
                let overused = self.overused.get(&key).copied().unwrap_or(0);
                for (s, state) in states.iter().enumerate() {
                    let (bucket, _, owner) = state[b];
                    assert!(
                        bucket.is_conserved(),
                        "step {step}: shard {s} slice {key:?}"
                    );
                    below_zero -= bucket.available.min(0);
                    assert!(
                        below_zero <= overused,
                        "step {step}: shard {s} slice {key:?} granted beyond what it held \
                         ({overused} charged as overuse): {bucket:?}"
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
                    "step {step}: company {c} bucket {b} not conserved, after {}",
                    self.current
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
        self.timers();
        if self.rng.below(100_000) == 0 {
            self.crash();
        }
        self.check(step);
        if step.is_multiple_of(10_000) {
            self.checkpoint();
            let oldest_waiting = self.pending.keys().next().copied().unwrap_or(usize::MAX);
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
    assert!(
        sim.pending.is_empty(),
        "requests still unanswered after every message was delivered: {:?}",
        sim.pending.keys().take(10).collect::<Vec<_>>()
    );
    sim.crash();
    sim.checkpoint();
    sim.snapshot_round_trip();
    // The test does not move the clock without a step: nothing more expires, so the
    // cores after the last crash have waited and forwarded nothing yet.
    let retained: usize = (0..SHARDS).map(|s| sim.engine(s).undelivered_count()).sum();
    println!("messages kept for redelivery at the end: {retained}");
    let mut stats: Vec<_> = sim.stats.iter().collect();
    stats.sort();
    println!(
        "seed {seed}: {ops} operations in {:.1} s; {stats:?}",
        t0.elapsed().as_secs_f64()
    );
    for what in [
        "boundary and absurd usage sent",
        "overuse within the allowance sent",
        "absurd requests sent",
        "copies sent with new ids",
        "single-service sessions",
        "duplicates answered as the original",
        "adversarial copies sent",
        "waits",
        "forwarded",
        "escrow messages",
        "answered without a CDR (duplicates)",
        "top-ups",
        "sessions expired",
        "4012 checked",
        "crashes",
    ] {
        assert!(
            sim.stats.get(what).copied().unwrap_or(0) > 0,
            "the run never exercised {what}: {stats:?}"
        );
    }
}
