//! Starting and stopping `gyro serve`: dataset, data directory, operations endpoint,
//! signals, the shard executors.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::ServeConfig;
use crate::recovery;
use crate::serve::{load_dataset, shard_main, ShardInit};
use gyro_engine::charging::engine::EngineConfig;

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
    let (durability, log_dir) = (config.durability, config.data_dir.join("shard-0"));
    run_until(config, stop, true, |at| {
        eprintln!(
            "gyro serve: Diameter on {}, operations on http://{} (origin {origin_host} / \
             {origin_realm}, 1 shard, durability {}, CDR log in {})",
            at.diameter,
            at.admin,
            durability.as_str(),
            log_dir.display()
        )
    })?;
    eprintln!("gyro serve: stopped; CDR log synced");
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
    let dir = config.data_dir.join("shard-0");
    let engine_config = EngineConfig {
        default_quota_octets: config.default_quota_octets,
        default_quota_seconds: config.default_quota_seconds,
        default_quota_units: config.default_quota_units,
        validity_time_s: config.validity_time_s,
        sessions_max: config.sessions_max,
        ..EngineConfig::default()
    };
    let segment_size = config.segment_size_mib << 20;
    let start = if recovery::has_log(&dir) {
        if log {
            eprintln!(
                "gyro serve: {} holds a log: recovering from it and the dataset it started \
                 from{}",
                dir.display(),
                if config.dataset.is_some() {
                    " (--dataset is not applied again)"
                } else {
                    ""
                }
            );
        }
        let s = recovery::recover_with(
            &dir,
            &config.data_dir,
            0,
            segment_size,
            engine_config,
            config.quarantine,
        )?;
        if let (true, Some(r)) = (log, &s.recovery) {
            if let Some(seq) = r.from_snapshot {
                eprintln!("gyro serve: starting from the engine snapshot at sequence {seq}");
            }
            eprintln!(
                "gyro serve: recovered {} records ({} requests, {} supervision runs, {} balance changes) \
                 in {:.2} s; {} sessions open",
                r.records,
                r.requests,
                r.expiries,
                r.balance_changes,
                r.elapsed.as_secs_f64(),
                s.engine.open_sessions()
            );
            if let Some((file, offset, reason)) = &r.torn {
                eprintln!(
                    "gyro serve: torn tail in {} at offset {offset} ({reason}): truncated",
                    file.display()
                );
            }
        }
        s
    } else {
        let (dataset, what) = load_dataset(&config)?;
        if log {
            eprintln!(
                "gyro serve: loaded {what} in {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        recovery::start_fresh(
            &dir,
            &config.data_dir,
            0,
            segment_size,
            dataset,
            engine_config,
        )?
    };
    if config.allowed_peers.is_empty() && log {
        eprintln!(
            "gyro serve: warning: any peer may connect (configure allowed_peers or \
             --allow-peer to restrict by Origin-Host)"
        );
    }
    let admin = tiny_http::Server::http(config.admin.as_str()).map_err(|e| {
        format!(
            "cannot listen on {} (operations endpoint): {e}",
            config.admin
        )
    })?;
    let admin_addr = admin
        .server_addr()
        .to_ip()
        .ok_or_else(|| "the operations endpoint has no IP address".to_string())?;
    let (admin_tx, admin_rx) = crossbeam_channel::bounded(64);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let init = ShardInit {
        id: 0,
        config: config.clone(),
        engine: start.engine,
        writer: start.writer,
        dataset_crc: start.dataset_crc,
        stop: stop.clone(),
        admin: admin_rx,
        ready: ready_tx,
    };
    let shard = crate::runtime::spawn_shard(0, config.first_cpu, move || shard_main(init))?;
    let listen = match ready_rx.recv() {
        Ok(Ok(addr)) => addr,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(shard.join().and_then(|r| r).err().unwrap_or_default()),
    };
    ready(Listening {
        diameter: listen,
        admin: admin_addr,
    });
    let admin_thread = {
        let stop = stop.clone();
        let token = config.admin_token.clone();
        std::thread::Builder::new()
            .name("gyro-admin".into())
            .spawn(move || crate::admin::run(admin, token, admin_tx, stop))
            .map_err(|e| e.to_string())?
    };
    let result = shard.join().and_then(|r| r);
    // The shard returns when it was told to stop (or failed): the endpoint goes too.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = admin_thread.join();
    result
}
