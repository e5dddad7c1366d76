//! Starting and stopping `gyro serve`: dataset, data directory, operations endpoint,
//! signals, the shard threads.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::ServeConfig;
use crate::recovery::{self, Started};
use crate::serve::{load_dataset, mesh, ShardInit, MESH_CAPACITY};
use gyro_engine::charging::engine::EngineConfig;
use gyro_engine::segment::RecordKind;

/// Where a started server listens.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub diameter: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

/// Runs the server until SIGTERM or SIGINT; returns why it could not start or run.
pub fn run(config: ServeConfig) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let (origin_host, origin_realm) = (config.origin_host.clone(), config.origin_realm.clone());
    let (durability, shards, runtime) = (config.durability, config.shards, config.runtime);
    let log_dir = config.data_dir.join("shard-N");
    run_until(config, stop, true, |at| {
        tracing::info!(
            target: "gyro",
            "Diameter on {}, operations on http://{} (origin {origin_host} / \
             {origin_realm}, {shards} shard{} on the {} runtime, durability {}, CDR logs in {})",
            at.diameter,
            at.admin,
            if shards == 1 { "" } else { "s" },
            runtime.as_str(),
            durability.as_str(),
            log_dir.display()
        )
    })?;
    tracing::info!(target: "gyro", "stopped; CDR log synced");
    Ok(())
}

/// Runs the server until `stop` is set; `ready` is told where it listens once it does.
/// `log` prints the start-up lines (the dataset, warnings).
pub fn run_until(
    config: ServeConfig,
    stop: Arc<AtomicBool>,
    log: bool,
    ready: impl FnOnce(Listening),
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let shards = u16::try_from(config.shards).unwrap_or(u16::MAX);
    let engine_config = EngineConfig {
        default_quota_octets: config.default_quota_octets,
        default_quota_seconds: config.default_quota_seconds,
        default_quota_units: config.default_quota_units,
        validity_time_s: config.validity_time_s,
        sessions_max: config.sessions_max,
        ..EngineConfig::default()
    };
    let segment_size = config.segment_size_mib << 20;
    let dirs: Vec<_> = (0..shards)
        .map(|i| config.data_dir.join(format!("shard-{i}")))
        .collect();
    let logs: Vec<bool> = dirs.iter().map(|d| recovery::has_log(d)).collect();
    let beyond = recovery::has_log(&config.data_dir.join(format!("shard-{shards}")));
    if logs.iter().any(|l| *l) && (logs.iter().any(|l| !*l) || beyond) {
        return Err(format!(
            "{} was written by a server with another number of shards than {shards}: start \
             with that number (the shards share the companies' balances), or start a new \
             data directory",
            config.data_dir.display()
        ));
    }
    let mut starts: Vec<Started> = Vec::with_capacity(dirs.len());
    if logs.first() == Some(&true) {
        if log {
            tracing::info!(target: "gyro", "{} holds the logs of {shards} shard{}: recovering from them and \
                 the dataset they started from{}",
                config.data_dir.display(),
                if shards == 1 { "" } else { "s" },
                if config.dataset.is_some() {
                    " (--dataset is not applied again)"
                } else {
                    ""
                }
            );
        }
        for (i, dir) in dirs.iter().enumerate() {
            let s = recovery::recover_with(
                dir,
                &config.data_dir,
                i as u16,
                segment_size,
                engine_config.clone(),
                config.quarantine,
            )?;
            if s.engine.shard() != (i as u16, shards) {
                return Err(format!(
                    "{}: written as shard {} of {}, not {i} of {shards}",
                    dir.display(),
                    s.engine.shard().0,
                    s.engine.shard().1
                ));
            }
            if let (true, Some(r)) = (log, &s.recovery) {
                if let Some(seq) = r.from_snapshot {
                    tracing::info!(target: "gyro", "shard {i}: starting from the engine snapshot at sequence {seq}"
                    );
                }
                tracing::info!(target: "gyro", "shard {i}: recovered {} records ({} requests, {} supervision \
                     runs, {} balance changes, {} escrow messages) in {:.2} s; {} sessions open",
                    r.records,
                    r.requests,
                    r.expiries,
                    r.balance_changes,
                    r.escrow_messages,
                    r.elapsed.as_secs_f64(),
                    s.engine.open_sessions()
                );
                if let Some((file, offset, reason)) = &r.torn {
                    tracing::warn!(target: "gyro", "torn tail in {} at offset {offset} ({reason}): truncated",
                        file.display()
                    );
                }
            }
            starts.push(s);
        }
        let again = redeliver(&mut starts)?;
        if log && again > 0 {
            tracing::info!(target: "gyro", "{again} escrow messages sent before the stop and never taken: delivered now");
        }
    } else {
        let (dataset, what) = load_dataset(&config)?;
        if log {
            tracing::info!(target: "gyro", "loaded {what} in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        for (i, dir) in dirs.iter().enumerate() {
            starts.push(recovery::start_fresh(
                dir,
                &config.data_dir,
                i as u16,
                shards,
                segment_size,
                dataset.clone(),
                engine_config.clone(),
            )?);
        }
    }
    if config.allowed_peers.is_empty() && log {
        tracing::warn!(target: "gyro", "any peer may connect (configure allowed_peers or \
             --allow-peer to restrict by Origin-Host)"
        );
    }
    let admin = std::net::TcpListener::bind(config.admin.as_str()).map_err(|e| {
        format!(
            "cannot listen on {} (operations endpoint): {e}",
            config.admin
        )
    })?;
    let admin_addr = admin.local_addr().map_err(|e| e.to_string())?;
    // One listening socket; a thread accepts and hands the connections to the shards in
    // turn (each runs the peer state machine of its connections; sessions, not
    // connections, decide where a request is charged).
    let listener = std::net::TcpListener::bind(config.listen.as_str())
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let mut admin_txs = Vec::with_capacity(starts.len());
    let mut intakes = Vec::with_capacity(starts.len());
    // A poller per shard, whose wake-up the other shards use.
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for i in 0..starts.len() {
        let poll = mio::Poll::new()
            .map_err(|e| format!("shard {i}: cannot create an epoll instance: {e}"))?;
        let waker = mio::Waker::new(poll.registry(), crate::serve::evloop::WAKE)
            .map_err(|e| format!("shard {i}: cannot create an eventfd: {e}"))?;
        wakers.push(std::sync::Arc::new(waker));
        polls.push(poll);
    }
    let mut polls = polls.into_iter();
    let mut meshes = mesh(starts.len(), MESH_CAPACITY, &wakers).into_iter();
    let mut handles = Vec::with_capacity(starts.len());
    for (i, start) in starts.into_iter().enumerate() {
        let (admin_tx, admin_rx) = crossbeam_channel::bounded(64);
        admin_txs.push(admin_tx);
        let (intake_tx, intake_rx) = crossbeam_channel::bounded(1024);
        intakes.push(intake_tx);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let init = ShardInit {
            id: i as u16,
            shards,
            config: config.clone(),
            engine: start.engine,
            writer: start.writer,
            dataset_crc: start.dataset_crc,
            stop: stop.clone(),
            admin: admin_rx,
            mesh: meshes.next().expect("one mesh end per shard"),
            intake: intake_rx,
            local_addr,
            ready: ready_tx,
        };
        let cpu = config.first_cpu + i;
        let poll = polls.next().ok_or("one poller per shard")?;
        let shard =
            crate::runtime::spawn_thread(i, cpu, move || crate::serve::evloop::run(init, poll))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(e);
            }
            Err(_) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(shard.join().and_then(|r| r).err().unwrap_or_default());
            }
        }
        handles.push(shard);
    }
    let acceptor = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("gyro-accept".into())
            .spawn(move || accept(listener, intakes, stop))
            .map_err(|e| e.to_string())?
    };
    let listen = Some(local_addr);
    let Some(listen) = listen else {
        return Err("no shard".into());
    };
    ready(Listening {
        diameter: listen,
        admin: admin_addr,
    });
    let admin_thread = {
        let stop = stop.clone();
        let token = config.admin_token.clone();
        let limits = crate::admin::Limits::of(&config);
        std::thread::Builder::new()
            .name("gyro-admin".into())
            .spawn(move || crate::admin::run(admin, token, admin_txs, stop, limits))
            .map_err(|e| e.to_string())?
    };
    let mut result = Ok(());
    let _ = acceptor.join();
    for shard in handles {
        let r = shard.join().and_then(|r| r);
        if result.is_ok() {
            result = r;
        }
        // One shard stopping (or failing) stops the others.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // The shard returns when it was told to stop (or failed): the endpoint goes too.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = admin_thread.join();
    result
}

/// Escrow messages a shard sent before the stop that the other never took (in flight
/// at a crash): delivered now, each journaled by its receiver as if it had just come.
/// Returns how many.
fn redeliver(starts: &mut [Started]) -> Result<usize, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut n = 0;
    for a in 0..starts.len() {
        for b in 0..starts.len() {
            let got = starts[b].engine.received_from(a as u16);
            let again: Vec<_> = starts[a].engine.undelivered(b as u16, got).collect();
            for env in again {
                let mut rec = [0u8; gyro_engine::journal::ESCROW_LEN];
                gyro_engine::journal::encode_escrow(now, &env, &mut rec);
                starts[b]
                    .writer
                    .append(RecordKind::Control, &rec)
                    .map_err(|e| format!("journaling a redelivered escrow message: {e}"))?;
                starts[b].engine.receive(env, now);
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Accepts connections until `stop` and hands them to the shards in turn (a shard that
/// cannot take one, its intake full, has it handed to the next).
fn accept(
    listener: std::net::TcpListener,
    shards: Vec<crossbeam_channel::Sender<std::net::TcpStream>>,
    stop: std::sync::Arc<AtomicBool>,
) {
    let mut next = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                for _ in 0..shards.len() {
                    let to = next % shards.len();
                    next = next.wrapping_add(1);
                    match shards[to].try_send(stream) {
                        Ok(()) => break,
                        Err(crossbeam_channel::TrySendError::Full(s))
                        | Err(crossbeam_channel::TrySendError::Disconnected(s)) => stream = s,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => {
                tracing::warn!(target: "gyro", "accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}
