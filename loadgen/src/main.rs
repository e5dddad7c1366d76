//! The `gyro-loadgen` command.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gyro_loadgen::dataset::{self, Spec};

#[derive(Parser)]
#[command(
    name = "gyro-loadgen",
    version,
    about = "gyro-loadgen: Diameter Gy load generator and dataset generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends Gy traffic to a Diameter Credit-Control server (gyro or any other) and
    /// checks every answer; prints a progress line each second and a summary.
    Run(Box<RunArgs>),
    /// A Diameter server that only answers (2001, units granted as asked): measures the
    /// generator itself and the loopback ceiling. Runs until SIGTERM or Ctrl-C.
    Sink {
        #[arg(long, default_value = "127.0.0.1:3870")]
        listen: String,
    },
    /// Writes a provisioning NDJSON dataset (tariffs, companies of varied sizes,
    /// packages, subscribers) that `gyro` loads.
    Dataset {
        #[arg(long, default_value_t = 100_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 1_000)]
        companies: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The server's Diameter address.
    #[arg(long, default_value = "127.0.0.1:3868")]
    target: String,
    /// Provisioning NDJSON whose subscribers' MSISDNs are charged [default: the
    /// 10,000 subscribers of `gyro serve`'s built-in dataset].
    #[arg(long, value_name = "FILE")]
    dataset: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Sessions in flight per connection (one request outstanding each).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Run for this many seconds [default: 10 unless --sessions is given].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Run this many sessions and events in all.
    #[arg(long)]
    sessions: Option<u64>,
    /// Open loop at this many CCR/s in all (latency from each scheduled send time);
    /// without it, closed loop as fast as the window allows.
    #[arg(long, value_name = "CCR_PER_S")]
    rate: Option<f64>,
    /// Traffic mix: shares of data sessions (2 MSCC), voice sessions, SMS events and
    /// refunds.
    #[arg(long, default_value = "data=85,voice=10,sms=5,refund=0")]
    mix: gyro_loadgen::run::Mix,
    /// CCR-Us per session between the CCR-I and the CCR-T.
    #[arg(long, default_value_t = 2)]
    updates: u32,
    #[arg(long, default_value = "pgw.loadgen.gyro")]
    origin_host: String,
    #[arg(long, default_value = "loadgen.gyro")]
    origin_realm: String,
    #[arg(long, default_value = "gyro.local")]
    destination_realm: String,
    /// A request unanswered for this long counts as a timeout (Tx).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    tx_timeout_ms: u64,
    /// Write the summary, with the latency histogram, as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Draw latency over time and the percentile curve into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn load_msisdns(path: Option<&std::path::Path>) -> Result<Vec<String>, String> {
    let Some(path) = path else {
        return Ok((0..10_000).map(dataset::msisdn).collect());
    };
    let mut bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let imp =
        gyro_engine::provision::import_ndjson(&mut bytes, gyro_engine::provision::OnError::Skip);
    let v: Vec<String> = imp
        .dataset
        .subscribers
        .iter()
        .filter_map(|s| s.msisdn.map(gyro_engine::provision::digits_of))
        .collect();
    if v.is_empty() {
        return Err(format!("{}: no subscriber with an msisdn", path.display()));
    }
    Ok(v)
}

fn run(args: RunArgs) -> ExitCode {
    use std::net::ToSocketAddrs;
    let fail = |m: String| {
        eprintln!("gyro-loadgen run: {m}");
        ExitCode::from(2)
    };
    let target = match args.target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => return fail(format!("--target {}: not an address", args.target)),
    };
    let msisdns = match load_msisdns(args.dataset.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if args.connections == 0 || args.connections > 256 || args.window == 0 {
        return fail("--connections must be 1 to 256 and --window at least 1".into());
    }
    let duration = match (args.duration, args.sessions) {
        (Some(d), _) if d > 0.0 => Some(std::time::Duration::from_secs_f64(d)),
        (Some(_), _) => return fail("--duration must be positive".into()),
        (None, Some(_)) => None,
        (None, None) => Some(std::time::Duration::from_secs(10)),
    };
    let spec = gyro_loadgen::run::RunSpec {
        target,
        msisdns: std::sync::Arc::new(msisdns),
        connections: args.connections,
        window: args.window,
        duration,
        sessions: args.sessions,
        rate: args.rate.filter(|r| *r > 0.0),
        mix: args.mix,
        updates: args.updates,
        origin_host: args.origin_host,
        origin_realm: args.origin_realm,
        destination_realm: args.destination_realm,
        tx_timeout: std::time::Duration::from_millis(args.tx_timeout_ms),
        progress: !args.quiet,
        live: None,
        answered_ids: None,
    };
    let r = gyro_loadgen::run::run(&spec);
    let h = &r.latency;
    println!(
        "{} CCRs answered in {:.2} s: {:.0} CCR/s ({} connections, window {}, {})",
        r.answers,
        r.elapsed.as_secs_f64(),
        r.ccr_per_s(),
        spec.connections,
        spec.window,
        match spec.rate {
            Some(rate) => format!("open loop at {rate:.0}/s"),
            None => "closed loop".into(),
        }
    );
    println!(
        "latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    let codes: Vec<String> = r
        .answers_by_result
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    println!("answers by Result-Code: {}", codes.join(", "));
    println!(
        "sessions started {} completed {}; check failures {}; timeouts {}",
        r.sessions_started, r.sessions_completed, r.check_failures, r.timeouts
    );
    for f in &r.failures {
        println!("  check failure: {f}");
    }
    for e in &r.connection_errors {
        println!("  connection error: {e}");
    }
    if let Some(path) = &args.report {
        let json = r.to_json(&spec);
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            return fail(format!("--report {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "gyro-loadgen against {}: {:.0} CCR/s, {} connections, window {}",
            spec.target,
            r.ccr_per_s(),
            spec.connections,
            spec.window
        );
        if let Err(e) = gyro_loadgen::plot::svg(&r, &title, path) {
            return fail(format!("--plot {}: {e}", path.display()));
        }
    }
    if r.check_failures == 0 && r.timeouts == 0 && r.connection_errors.is_empty() && r.answers > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Sink { listen } => {
            let listener = match std::net::TcpListener::bind(&listen) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("gyro-loadgen sink: cannot listen on {listen}: {e}");
                    return ExitCode::from(2);
                }
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                let _ = signal_hook::flag::register(sig, stop.clone());
            }
            eprintln!(
                "gyro-loadgen sink: answering on {}",
                listener.local_addr().map_or(listen, |a| a.to_string())
            );
            let n = gyro_loadgen::sink::run(listener, stop);
            eprintln!("gyro-loadgen sink: {n} CCRs answered");
            ExitCode::SUCCESS
        }
        Command::Dataset {
            subscribers,
            companies,
            seed,
            out,
        } => {
            if companies == 0 {
                eprintln!("gyro-loadgen dataset: --companies must be at least 1");
                return ExitCode::from(2);
            }
            let file = match std::fs::File::create(&out) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("gyro-loadgen dataset: cannot create {}: {e}", out.display());
                    return ExitCode::from(2);
                }
            };
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let spec = Spec {
                subscribers,
                companies,
                seed,
            };
            match dataset::write(&spec, &mut w).and_then(|n| w.flush().map(|()| n)) {
                Ok(lines) => {
                    println!("wrote {lines} records to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gyro-loadgen dataset: writing {}: {e}", out.display());
                    ExitCode::from(2)
                }
            }
        }
    }
}
