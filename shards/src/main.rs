//! The `gyro` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gyro_engine::provision::{self, OnError};
use gyro_shards::cdr_files::LogDir;

#[derive(Parser)]
#[command(
    name = "gyro",
    version,
    about = "gyro: an Online Charging System for Diameter Gy/Ro"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole pipeline on one machine: generates a dataset, starts gyro serve
    /// on loopback, the shipper and the reference billing receiver, runs the load
    /// generator (data and voice sessions, SMS events, refunds) for --duration seconds
    /// with a progress bar, tops a company up, then reports throughput, latency and
    /// answers, and reconciles what billing received against gyro's balances.
    Demo {
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 100_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 1_000)]
        companies: u64,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        /// Sessions in flight per connection.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Where to put the dataset, the CDR log and billing's file (default: a new
        /// directory under the system's temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Shards of the server (company balances escrowed between them).
        #[arg(long, default_value_t = 1)]
        shards: usize,
    },
    /// Runs the Diameter Gy/Ro server: listens for network elements (PGW, SMF, IMS
    /// nodes), charges every Credit-Control-Request against the provisioned companies
    /// and packages, writes one CDR per CCR to the segment log in DATA_DIR/shard-N and
    /// serves an operations endpoint (Prometheus /metrics, /healthz, /companies/{id},
    /// top-ups). Settings come from --config FILE (TOML; docs/serve.md lists every
    /// key), then GYRO_* environment variables, then these flags. Without --dataset it
    /// serves a small built-in demo dataset and says so. SIGTERM or Ctrl-C: DPR to
    /// every peer, the log synced, exit 0.
    Serve(ServeArgs),
    /// Delivers the CDR logs of DATA_DIR (every shard-N) to the billing service: NDJSON
    /// batches over HTTP POST with an Idempotency-Key per shard and sequence range,
    /// retried with back-off until accepted, a checkpoint per shard written atomically
    /// after each accepted round. Restarted, it resumes from the checkpoints. Follows
    /// the logs until SIGTERM (or, with --once, until everything written is shipped).
    Ship {
        /// gyro serve's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Billing endpoint (http://HOST:PORT/PATH).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Where checkpoints are kept [default: DATA_DIR/ship].
        #[arg(long, value_name = "DIR")]
        checkpoint_dir: Option<PathBuf>,
        /// Records per batch.
        #[arg(long, default_value_t = 2000)]
        batch: usize,
        /// Batches in flight per shard.
        #[arg(long, default_value_t = 4)]
        window: usize,
        /// Stop once everything written so far is shipped.
        #[arg(long)]
        once: bool,
        /// Seconds between progress lines (0: none).
        #[arg(long, default_value_t = 5.0)]
        progress: f64,
        /// Delete sealed segments that are both shipped and covered by an engine
        /// snapshot of gyro serve (retention).
        #[arg(long)]
        retain: bool,
        /// With --retain, move those segments into DIR instead of deleting them.
        #[arg(long, value_name = "DIR", requires = "retain")]
        archive: Option<PathBuf>,
        /// Serve Prometheus metrics (GET /metrics: checkpoint, lag, batches, retries per
        /// shard) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// A reference billing receiver, to prove the pipeline (tests and the demo): takes
    /// the shipper's batches, deduplicates on the CDR id, appends new records to
    /// --out, keeps per-company totals (GET /totals) and prints them at SIGTERM.
    BillingSink {
        #[arg(long, default_value = "127.0.0.1:9870", value_name = "ADDR")]
        listen: String,
        /// Accepted records (NDJSON); read back at start.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Refuse this share of batches (503), for tests.
        #[arg(long, default_value_t = 0)]
        fail_percent: u32,
        /// Accept this share of batches but answer 503 (a lost reply), for tests.
        #[arg(long, default_value_t = 0)]
        lost_percent: u32,
        /// Stall this share of batches for --stall-ms, for tests.
        #[arg(long, default_value_t = 0)]
        stall_percent: u32,
        #[arg(long, default_value_t = 2000)]
        stall_ms: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Bytes of a batch, at most (413 beyond it).
        #[arg(long, default_value_t = gyro_shards::billing::BODY_BYTES_MAX)]
        max_body_bytes: u64,
    },
    /// Provisioning data: check an NDJSON file (docs/provisioning.md) and optionally
    /// save it as a snapshot.
    Provision {
        #[command(subcommand)]
        command: ProvisionCommand,
    },
    /// CDR segment files (docs/segment-format.md).
    Cdr {
        #[command(subcommand)]
        command: CdrCommand,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (docs/serve.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Diameter listen address [default: 0.0.0.0:3868].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Operations endpoint address (HTTP) [default: 127.0.0.1:9868].
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Provisioning NDJSON (docs/provisioning.md) [default: a built-in demo dataset].
    #[arg(long, value_name = "FILE")]
    dataset: Option<PathBuf>,
    /// Where the CDR segment logs go (one directory per shard) [default: gyro-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Our Origin-Host [default: ocs.gyro.local].
    #[arg(long)]
    origin_host: Option<String>,
    /// Our Origin-Realm [default: gyro.local].
    #[arg(long)]
    origin_realm: Option<String>,
    /// Shards: pinned executors, one per CPU from first_cpu; sessions are spread over
    /// them by Session-Id and company balances shared through escrow [default: 1].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// CDR log durability: none (page cache), interval (sync every sync_interval_ms),
    /// tick (a batch's CDRs are synced before its answers are sent) [default: none].
    #[arg(long, value_enum)]
    durability: Option<gyro_shards::config::Durability>,
    /// What runs each shard: epoll (gyro's own event loop; allocates nothing per
    /// request), the only runtime [default: epoll].
    #[arg(long, value_enum)]
    runtime: Option<gyro_shards::config::Runtime>,
    /// Origin-Host allowed to connect (repeat for several) [default: any peer, with a
    /// warning].
    #[arg(long = "allow-peer", value_name = "ORIGIN_HOST")]
    allow_peers: Vec<String>,
    /// RFC 3539 watchdog interval Tw in milliseconds [default: 30000].
    #[arg(long, value_name = "MS")]
    watchdog_ms: Option<u64>,
    /// Validity-Time of grants in seconds; Tcc is twice this [default: 600].
    #[arg(long, value_name = "S")]
    validity_time: Option<u32>,
    /// At start, move a log segment with a corrupt record (not a torn tail) aside to
    /// DATA_DIR/quarantine and go on, instead of refusing to start.
    #[arg(long)]
    quarantine: bool,
    /// Log lines as text or one JSON object each (levels: GYRO_LOG) [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<gyro_shards::logging::LogFormat>,
}

#[derive(Subcommand)]
enum CdrCommand {
    /// Prints the CDRs of a shard's segment directory, or of every shard of a data
    /// directory (`shard-0` first), as NDJSON in sequence order. Exits 1 at the first
    /// damaged record (after printing everything before it), 2 on a directory that
    /// holds neither.
    Cat {
        dir: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep printing records as they are written.
        #[arg(long)]
        follow: bool,
    },
    /// Checks every segment header, record CRC and sequence number of a shard's
    /// directory, or of every shard of a data directory; exits 1 naming the file and
    /// offset of the first problem, 2 on a directory that holds neither.
    Verify { dir: PathBuf },
}

#[derive(Subcommand)]
enum ProvisionCommand {
    /// Reads FILE, reports every bad record by line and field, prints what it holds.
    /// Exits 1 if any record is bad (unless --skip-bad), 2 if FILE cannot be read.
    Check {
        /// The provisioning NDJSON file.
        file: PathBuf,
        /// Load the good records and only report the bad ones.
        #[arg(long)]
        skip_bad: bool,
        /// Write the loaded dataset as an rkyv snapshot to this file.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
        /// Errors to print at most (all are counted).
        #[arg(long, default_value_t = 100)]
        max_errors: usize,
    },
    /// Prints the current state of a data directory (provisioning changed at run time
    /// included, each company's balance its available plus reserved money) as
    /// provisioning NDJSON, to migrate or rebuild. Reads the logs and snapshots and
    /// changes nothing; `GET /provisioning` gives the same from a running server.
    Export {
        /// The data directory (`--data-dir` of `gyro serve`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            duration,
            subscribers,
            companies,
            connections,
            window,
            dir,
            shards,
        } => demo(gyro_shards::demo::DemoSpec {
            shards,
            subscribers: subscribers.max(1),
            companies: companies.max(1),
            duration: std::time::Duration::from_secs_f64(duration.clamp(0.5, 3600.0)),
            connections: connections.clamp(1, 256),
            window: window.max(1),
            dir: dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("gyro-demo-{}", std::process::id()))
            }),
        }),
        Command::Serve(args) => serve(args),
        Command::Ship {
            data_dir,
            to,
            checkpoint_dir,
            batch,
            window,
            once,
            progress,
            retain,
            archive,
            metrics,
        } => ship(gyro_shards::ship::ShipSpec {
            checkpoint_dir: checkpoint_dir.unwrap_or_else(|| data_dir.join("ship")),
            data_dir,
            to,
            batch_max: batch.max(1),
            window: window.max(1),
            follow: !once,
            timeout: std::time::Duration::from_secs(30),
            backoff_max: std::time::Duration::from_secs(5),
            progress_every: std::time::Duration::from_secs_f64(progress.max(0.0)),
            retain: retain.then_some(archive),
            metrics,
        }),
        Command::BillingSink {
            listen,
            out,
            fail_percent,
            lost_percent,
            stall_percent,
            stall_ms,
            seed,
            max_body_bytes,
        } => billing_sink(
            &listen,
            gyro_shards::billing::SinkSpec {
                out,
                fail_percent: fail_percent.min(100),
                lost_percent: lost_percent.min(100),
                stall_percent: stall_percent.min(100),
                stall_ms,
                seed,
                body_bytes_max: max_body_bytes,
            },
        ),
        Command::Provision {
            command:
                ProvisionCommand::Check {
                    file,
                    skip_bad,
                    snapshot,
                    max_errors,
                },
        } => provision_check(&file, skip_bad, snapshot.as_deref(), max_errors),
        Command::Provision {
            command: ProvisionCommand::Export { data_dir },
        } => provision_export(&data_dir),
        Command::Cdr {
            command: CdrCommand::Cat { dir, from, follow },
        } => match gyro_shards::cdr_files::log_dir(&dir) {
            Ok(LogDir::Shard(dir)) => cdr_cat(&dir, from, follow),
            Ok(LogDir::Data(_)) if from > 0 || follow => {
                eprintln!(
                    "gyro cdr cat: --from and --follow are per shard: give a shard's \
                     directory ({}/shard-N)",
                    dir.display()
                );
                ExitCode::from(2)
            }
            Ok(LogDir::Data(shards)) => {
                for shard in shards {
                    let code = cdr_cat(&shard, 0, false);
                    if code != ExitCode::SUCCESS {
                        return code;
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gyro cdr cat: {e}");
                ExitCode::from(2)
            }
        },
        Command::Cdr {
            command: CdrCommand::Verify { dir },
        } => {
            let shards = match gyro_shards::cdr_files::log_dir(&dir) {
                Ok(LogDir::Shard(dir)) => vec![dir],
                Ok(LogDir::Data(shards)) => shards,
                Err(e) => {
                    eprintln!("gyro cdr verify: {e}");
                    return ExitCode::from(2);
                }
            };
            for shard in shards {
                match gyro_shards::cdr_files::verify(&shard) {
                    Ok(next) => println!("{}: ok, next sequence {}", shard.display(), next),
                    Err(p) => {
                        println!("{p}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn cdr_cat(dir: &std::path::Path, from: u64, follow: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut pos = gyro_shards::cdr_files::Position::default();
    loop {
        if let Err(p) = gyro_shards::cdr_files::cat(dir, from, &mut pos, follow, &mut out) {
            eprintln!("gyro cdr cat: {p}");
            return ExitCode::FAILURE;
        }
        if !follow {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn provision_export(data_dir: &std::path::Path) -> ExitCode {
    use gyro_shards::cdr_files::{log_dir, LogDir};
    let fail = |e: String| {
        eprintln!("gyro provision export: {e}");
        ExitCode::from(2)
    };
    let shards = match log_dir(data_dir) {
        Ok(LogDir::Data(shards)) => shards,
        Ok(LogDir::Shard(_)) => {
            return fail(format!(
                "{}: a shard's log; give the data directory (the one holding shard-N)",
                data_dir.display()
            ))
        }
        Err(e) => return fail(e),
    };
    let mut engines = Vec::with_capacity(shards.len());
    for (i, dir) in shards.iter().enumerate() {
        match gyro_shards::recovery::rebuild(dir, data_dir, i as u16) {
            Ok(engine) => engines.push(engine),
            Err(e) => return fail(e),
        }
    }
    // Escrow money sent between shards and not taken when they stopped is counted
    // with its sender (the next start delivers it).
    let parts = (0..engines.len())
        .map(|a| {
            let in_flight: Vec<(u32, u16, i64)> = (0..engines.len())
                .flat_map(|b| {
                    let got = engines[b].received_from(a as u16);
                    engines[a].in_flight_to(b as u16, got)
                })
                .collect();
            engines[a].export_with(&in_flight)
        })
        .collect();
    let Some(dataset) = provision::merge_exports(parts) else {
        return fail("the shards hold different provisioning".into());
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match provision::write_ndjson(&dataset, &mut out).and_then(|()| std::io::Write::flush(&mut out))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(format!("writing: {e}")),
    }
}

fn provision_check(
    file: &std::path::Path,
    skip_bad: bool,
    snapshot: Option<&std::path::Path>,
    max_errors: usize,
) -> ExitCode {
    let mut bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gyro provision check: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let bar = indicatif::ProgressBar::new(bytes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("reading {}", file.display()));
    let on_error = if skip_bad {
        OnError::Skip
    } else {
        OnError::Reject
    };
    let started = std::time::Instant::now();
    let import = provision::import_ndjson_with_progress(&mut bytes, on_error, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    for e in import.errors.iter().take(max_errors) {
        println!("{}: {e}", file.display());
    }
    if import.errors.len() > max_errors {
        println!(
            "{}: ... and {} more",
            file.display(),
            import.errors.len() - max_errors
        );
    }
    let d = &import.dataset;
    println!(
        "{} tariffs, {} companies, {} packages, {} subscribers loaded in {:.2} s; {} bad records",
        d.tariffs.len(),
        d.companies.len(),
        d.packages.len(),
        d.subscribers.len(),
        elapsed.as_secs_f64(),
        import.errors.len()
    );
    if !import.errors.is_empty() && !skip_bad {
        println!("nothing loaded: fix the records above, or pass --skip-bad to load the good ones");
        return ExitCode::FAILURE;
    }
    if let Some(path) = snapshot {
        let bytes = provision::snapshot::encode(d);
        if let Err(e) = std::fs::write(path, &bytes) {
            eprintln!("gyro provision check: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!(
            "snapshot written to {} ({} bytes)",
            path.display(),
            bytes.len()
        );
    }
    ExitCode::SUCCESS
}

fn demo(spec: gyro_shards::demo::DemoSpec) -> ExitCode {
    use gyro_shards::demo::Phase;
    use std::sync::atomic::Ordering;
    if spec.dir.join("data").exists() {
        eprintln!(
            "gyro demo: {} already holds a run; choose another --dir",
            spec.dir.display()
        );
        return ExitCode::from(2);
    }
    println!(
        "gyro demo: {} subscribers in {} companies; gyro serve, the shipper and a billing \
         receiver on loopback; {:.0} s of load over {} connections ({} sessions in flight each)",
        spec.subscribers,
        spec.companies,
        spec.duration.as_secs_f64(),
        spec.connections,
        spec.window
    );
    let bar = indicatif::ProgressBar::new(spec.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg:50} [{bar:30}] {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let last = std::cell::Cell::new((0.0f64, 0u64));
    let r = gyro_shards::demo::run(&spec, |phase| match phase {
        Phase::Starting => bar.set_message("generating the dataset, starting gyro"),
        Phase::Load(secs, live) => {
            let answers = live.answers.load(Ordering::Relaxed);
            let (t0, a0) = last.get();
            if secs - t0 >= 1.0 {
                let rate = (answers - a0) as f64 / (secs - t0);
                bar.set_message(format!(
                    "load: {answers} CCRs answered, {rate:.0} CCR/s, {} errors",
                    live.errors.load(Ordering::Relaxed)
                ));
                last.set((secs, answers));
            }
            bar.set_position((secs * 1000.0) as u64);
        }
        Phase::Shipping => bar.set_message("billing catching up with the CDR log"),
    });
    bar.finish_and_clear();
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gyro demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let l = &r.load;
    let h = &l.latency;
    println!(
        "  load                    {} CCRs answered in {:.1} s: {:.0} CCR/s",
        l.answers,
        l.elapsed.as_secs_f64(),
        l.ccr_per_s()
    );
    println!(
        "  latency (us)            p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    let codes: Vec<String> = l
        .answers_by_result
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    println!("  answers by Result-Code  {}", codes.join(", "));
    println!(
        "  sessions                {} started, {} completed; check failures {}, timeouts {}",
        l.sessions_started, l.sessions_completed, l.check_failures, l.timeouts
    );
    let logs = if spec.shards > 1 {
        format!(
            "{} .. shard-{}",
            spec.dir.join("data/shard-0").display(),
            spec.shards - 1
        )
    } else {
        spec.dir.join("data/shard-0").display().to_string()
    };
    println!(
        "  CDR log                 {} records (CDRs and one top-up) in {logs}",
        r.cdrs_written,
    );
    println!(
        "  billing received        {} records ({} duplicates dropped), caught up {:.2} s after the load",
        r.billing_records,
        r.billing_duplicates,
        r.ship_wait.as_secs_f64()
    );
    println!(
        "  money, gyro / billing   {} / {} micro-units over {} companies (usage minus refunds)",
        r.gyro_money, r.billing_money, r.companies
    );
    println!(
        "  package units           {} / {}",
        r.gyro_package_units, r.billing_package_units
    );
    println!(
        "  top-ups                 {} / {}",
        r.topup, r.billing_topups
    );
    let ok = r.reconciled() && l.check_failures == 0 && l.timeouts == 0;
    println!(
        "  reconciliation          {}",
        if r.reconciled() {
            "billing equals gyro, company by company".to_string()
        } else {
            format!("MISMATCH (companies: {:?})", r.mismatches)
        }
    );
    println!(
        "  look at the CDRs with   gyro cdr cat {}",
        spec.dir.join("data/shard-0").display()
    );
    println!(
        "  disk used               {:.1} GB in {} (the run is kept; rm -r it when done)",
        dir_bytes(&spec.dir) as f64 / 1e9,
        spec.dir.display()
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Bytes in the files under `dir` (what a demo run leaves behind).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

fn serve(args: ServeArgs) -> ExitCode {
    use gyro_shards::config::ServeConfig;
    let fail = |m: String| {
        eprintln!("gyro serve: {m}");
        ExitCode::from(2)
    };
    let mut config = match &args.config {
        Some(path) => match ServeConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => return fail(e.to_string()),
        },
        None => ServeConfig::default(),
    };
    if let Err(e) = config.apply_env(|k| std::env::var(k).ok()) {
        return fail(e.to_string());
    }
    let set = |slot: &mut String, v: Option<String>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut config.listen, args.listen);
    set(&mut config.admin, args.admin);
    set(&mut config.origin_host, args.origin_host);
    set(&mut config.origin_realm, args.origin_realm);
    if let Some(v) = args.dataset {
        config.dataset = Some(v);
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.shards {
        config.shards = v;
    }
    if let Some(v) = args.durability {
        config.durability = v;
    }
    if let Some(v) = args.runtime {
        config.runtime = v;
    }
    if !args.allow_peers.is_empty() {
        config.allowed_peers = args.allow_peers;
    }
    if let Some(v) = args.watchdog_ms {
        config.watchdog_ms = v;
    }
    if let Some(v) = args.validity_time {
        config.validity_time_s = v;
    }
    if args.quarantine {
        config.quarantine = true;
    }
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    if let Err(e) = config.validate() {
        return fail(e.to_string());
    }
    gyro_shards::logging::init(config.log_format);
    match gyro_shards::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    stop
}

fn ship(spec: gyro_shards::ship::ShipSpec) -> ExitCode {
    if !spec.to.starts_with("http://") {
        eprintln!("gyro ship: --to {}: an http:// URL is needed", spec.to);
        return ExitCode::from(2);
    }
    if !init_logs("gyro ship") {
        return ExitCode::from(2);
    }
    let stop = stop_flag();
    tracing::info!(
        target: "gyro::ship",
        "{} to {} (checkpoints in {})",
        spec.data_dir.display(),
        spec.to,
        spec.checkpoint_dir.display()
    );
    match gyro_shards::ship::run(&spec, &stop) {
        Ok(done) => {
            for (shard, next) in done {
                tracing::info!(
                    target: "gyro::ship",
                    "shard {shard}: shipped everything before sequence {next}"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gyro ship: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs of a long-running command (`GYRO_LOG_FORMAT`, `GYRO_LOG`); false with a bad
/// format, said on standard error.
fn init_logs(command: &str) -> bool {
    match gyro_shards::logging::format_from_env() {
        Ok(format) => {
            gyro_shards::logging::init(format.unwrap_or_default());
            true
        }
        Err(e) => {
            eprintln!("{command}: {e}");
            false
        }
    }
}

fn billing_sink(listen: &str, spec: gyro_shards::billing::SinkSpec) -> ExitCode {
    if !init_logs("gyro billing-sink") {
        return ExitCode::from(2);
    }
    let sink = match gyro_shards::billing::Sink::open(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gyro billing-sink: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match tiny_http::Server::http(listen) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gyro billing-sink: cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| listen.to_string(), |a| a.to_string());
    tracing::info!(
        target: "gyro::billing",
        "listening on http://{addr} ({} records already accepted)",
        sink.totals().records
    );
    let stop = stop_flag();
    let totals = gyro_shards::billing::serve(server, sink, &stop);
    println!("{totals}");
    ExitCode::SUCCESS
}
