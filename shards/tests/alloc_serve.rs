//! What the shards' threads allocate after warm-up, over a real socket: the server runs
//! in this process on its pinned shard threads, a counting global allocator counts what
//! those threads allocate, and a client sends thousands of CCR-Us (decode, charge,
//! journal, CDR, answer, socket I/O, the mesh between shards) after a warm-up.
//!
//! Nothing is allocated at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, SubscriptionId, Units,
};
use gyro_engine::diameter::Message;
use gyro_engine::peer::{Peer, PeerConfig, PeerState, Step};
use gyro_shards::config::{Durability, Runtime};

struct Counting;

static SHARD_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The tests share the counter: one server at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// 0 not known yet, 1 a shard's thread ("gyro-shard-N"), 2 another.
    static IS_SHARD: Cell<u8> = const { Cell::new(0) };
    static CHECKING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    let _ = IS_SHARD.try_with(|s| {
        if s.get() == 0 {
            // Naming the thread may allocate: not counted, not recursed into.
            if CHECKING.with(|c| c.replace(true)) {
                return;
            }
            let shard = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("gyro-shard-"));
            CHECKING.with(|c| c.set(false));
            s.set(if shard { 1 } else { 2 });
        }
        if s.get() == 1 {
            SHARD_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SESSIONS: usize = 64;

/// CCR-Us for `SESSIONS` sessions whose CC-Request-Number is bumped in place.
struct Requests {
    bytes: Vec<(Vec<u8>, usize, u32)>,
}

fn encode(s: usize, t: RequestType) -> Vec<u8> {
    let id = format!("pgw.alloc;1;{s}");
    let msisdn = gyro_loadgen::dataset::msisdn(s as u64);
    let mut c = Ccr {
        session_id: &id,
        origin_host: "pgw.alloc",
        origin_realm: "test",
        destination_realm: "gyro.local",
        service_context_id: "32251@3gpp.org",
        request_type: t,
        request_number: 0,
        subscription_id_count: 1,
        mscc_count: 1,
        ..Ccr::default()
    };
    c.header.hop_by_hop = s as u32;
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: &msisdn,
    };
    let kib = Units {
        total_octets: Some(1024),
        ..Units::default()
    };
    c.mscc[0] = Mscc {
        rating_group: Some(10),
        requested: Some(kib),
        // A little usage per CCR-U: the companies' money lasts for the whole run.
        used: (t == RequestType::Update).then_some(Units {
            total_octets: Some(16),
            ..Units::default()
        }),
        ..Mscc::default()
    };
    let mut buf = vec![0u8; 4096];
    let n = encode_ccr(&c, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

impl Requests {
    fn new() -> Requests {
        let bytes = (0..SESSIONS)
            .map(|s| {
                let u = encode(s, RequestType::Update);
                let at = Message::new(&u)
                    .and_then(|m| m.avps().flatten().find(|a| a.code == 415))
                    .map(|a| a.offset as usize + 8)
                    .unwrap();
                (u, at, 0)
            })
            .collect();
        Requests { bytes }
    }
}

/// Sends one CCR-U per session and reads every answer (checking each is 2001).
fn round(stream: &mut TcpStream, reqs: &mut Requests, buf: &mut [u8]) {
    for (bytes, at, number) in reqs.bytes.iter_mut() {
        *number += 1;
        bytes[*at..*at + 4].copy_from_slice(&number.to_be_bytes());
        stream.write_all(bytes).unwrap();
    }
    let (mut answers, mut filled) = (0, 0);
    while answers < SESSIONS {
        let n = stream.read(&mut buf[filled..]).unwrap();
        assert!(n > 0, "gyro closed the connection");
        filled += n;
        let mut at = 0;
        while filled - at >= 20 {
            let len = u32::from_be_bytes([0, buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if filled - at < len {
                break;
            }
            let code = Message::new(&buf[at..at + len])
                .and_then(|m| m.avps().flatten().find(|a| a.code == 268))
                .and_then(|a| a.u32().ok());
            assert_eq!(code, Some(2001));
            answers += 1;
            at += len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}

#[test]
fn the_epoll_shards_allocate_nothing_after_warm_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // One shard; then two, where half the sessions are owned by the shard that did not
    // accept the connection (requests and answers cross the mesh in pooled buffers) and
    // company balances move between them in escrow messages. Each run lasts long enough
    // for housekeeping (operations calls, peer timers, session supervision once a
    // second) to run on the shards as well.
    for shards in [1, 2] {
        for durability in [Durability::None, Durability::Tick] {
            let (allocations, requests) = allocations(
                shards,
                Runtime::Epoll,
                durability,
                Duration::from_millis(1500),
            );
            assert_eq!(
                allocations, 0,
                "{shards} shards, durability {durability:?}: {allocations} allocations on the \
                 shards' threads for {requests} CCR-Us after warm-up"
            );
        }
    }
}

/// Allocations on the shards' threads after warm-up, and the CCR-Us they answered
/// meanwhile (at least 200 rounds of `SESSIONS`, and for at least `at_least`).
fn allocations(
    shards: usize,
    runtime: Runtime,
    durability: Durability,
    at_least: Duration,
) -> (u64, u64) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "alloc-serve-{}-{shards}-{runtime:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // Four companies with money for far more than the run uses (a CCR-U's usage costs
    // 16 micro-units), and the test's subscribers spread over them.
    std::fs::create_dir_all(&dir).unwrap();
    let mut dataset = String::from(
        "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1,\"price\":1}\n",
    );
    for c in 0..4 {
        dataset.push_str(&format!(
            "{{\"type\":\"company\",\"id\":\"c{c}\",\"balance\":1000000000000}}\n"
        ));
    }
    for s in 0..SESSIONS {
        dataset.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"{}\",\"company\":\"c{}\"}}\n",
            gyro_loadgen::dataset::msisdn(s as u64),
            s % 4
        ));
    }
    let dataset_path = dir.join("dataset.ndjson");
    std::fs::write(&dataset_path, dataset).unwrap();
    let config = gyro_shards::config::ServeConfig {
        dataset: Some(dataset_path),
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        data_dir: dir.join("data"),
        // Small segments: the log rolls to new ones during the run.
        segment_size_mib: 4,
        shards,
        runtime,
        durability,
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            gyro_shards::server::run_until(config, stop, false, |at| {
                let _ = tx.send(at);
            })
        })
    };
    let at = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("gyro serve starts");

    let mut stream = TcpStream::connect(at.diameter).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // CER/CEA with a client peer, then the sessions opened.
    let mut peer = Peer::initiator(PeerConfig::new("pgw.alloc", "test"), 0);
    peer.connection_up(0);
    stream.write_all(peer.transmit()).unwrap();
    let n = peer.transmit().len();
    peer.transmitted(n);
    let mut buf = vec![0u8; 1 << 20];
    let mut filled = 0;
    while peer.state() != PeerState::Open {
        filled += stream.read(&mut buf[filled..]).unwrap();
        if let Step::Consumed(k) = peer.handle_bytes(&buf[..filled], 0) {
            buf.copy_within(k..filled, 0);
            filled -= k;
        }
    }
    for s in 0..SESSIONS {
        stream.write_all(&encode(s, RequestType::Initial)).unwrap();
    }
    let mut got = 0;
    while got < SESSIONS {
        filled += stream.read(&mut buf[filled..]).unwrap();
        let mut at = 0;
        while filled - at >= 20 {
            let len = u32::from_be_bytes([0, buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if filled - at < len {
                break;
            }
            got += 1;
            at += len;
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }

    let mut reqs = Requests::new();
    for _ in 0..50 {
        round(&mut stream, &mut reqs, &mut buf);
    }
    let before = SHARD_ALLOCATIONS.load(Ordering::SeqCst);
    let segments_before = segments(&dir, shards);
    let started = std::time::Instant::now();
    let mut rounds = 0;
    // With the epoll runtime the run lasts until every shard's log has rolled to a new
    // segment as well (a new file and its name).
    let rolled = |dir: &std::path::Path| {
        runtime != Runtime::Epoll
            || segments(dir, shards)
                .iter()
                .zip(&segments_before)
                .all(|(now, then)| now > then)
    };
    while rounds < 200 || started.elapsed() < at_least || !rolled(&dir) {
        round(&mut stream, &mut reqs, &mut buf);
        rounds += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the logs did not roll in 2 minutes"
        );
    }
    let after = SHARD_ALLOCATIONS.load(Ordering::SeqCst);
    let requests = (rounds * SESSIONS) as u64;
    stop.store(true, Ordering::SeqCst);
    drop(stream);
    server.join().unwrap().unwrap();
    assert!(
        before > 0,
        "the counter sees the shards' threads (start-up allocates)"
    );
    let segments = segments(&dir, shards);
    eprintln!(
        "{shards} shards, {runtime:?}, {durability:?}: {} allocations on the shards' threads \
         for {requests} CCR-Us after warm-up; segments per shard {segments_before:?} -> \
         {segments:?}",
        after - before
    );
    let _ = std::fs::remove_dir_all(&dir);
    (after - before, requests)
}

/// Segment files in each shard's log directory.
fn segments(dir: &std::path::Path, shards: usize) -> Vec<usize> {
    (0..shards)
        .map(|s| {
            std::fs::read_dir(dir.join("data").join(format!("shard-{s}")))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                        .count()
                })
                .unwrap_or(0)
        })
        .collect()
}
