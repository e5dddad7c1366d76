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
    /// Runs the open loop at a series of offered rates and draws p50, p99 and p99.9
    /// against the rate (the latency curve), optionally beside a sink's curve.
    Sweep(Box<SweepArgs>),
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

/// What the traffic is and where it goes: shared by `run` and `sweep`.
#[derive(clap::Args)]
struct TrafficArgs {
    /// The server's Diameter address.
    #[arg(long, default_value = "127.0.0.1:3868")]
    target: String,
    /// Provisioning NDJSON whose subscribers' MSISDNs are charged [default: the
    /// 10,000 subscribers of `gyro serve`'s built-in dataset].
    #[arg(long, value_name = "FILE")]
    dataset: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Event-loop threads the connections are spread over (one thread drives several
    /// connections; give each thread a core of its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Sessions in flight per connection (one request outstanding each).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Traffic mix: shares of data sessions (2 MSCC), voice sessions, SMS events and
    /// refunds.
    #[arg(long, default_value = "data=85,voice=10,sms=5,refund=0")]
    mix: gyro_loadgen::run::Mix,
    /// Where SMS events and refunds carry their Service-Identifier and
    /// Requested-Service-Unit: `3gpp` (inside an MSCC, as TS 32.299 Ro clients send
    /// them) or `top-level` (RFC 8506 single-service credit control).
    #[arg(long, default_value = "3gpp", value_name = "3gpp|top-level")]
    event_form: gyro_loadgen::run::EventForm,
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
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
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
    /// Write the summary, with the latency histogram, as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Draw latency over time, the percentile curve and (open loop) the schedule lag
    /// into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SweepArgs {
    #[command(flatten)]
    traffic: TrafficArgs,
    /// The offered rates, in order: CCR/s (50000) or shares of the closed-loop
    /// maximum (25%), which is measured first.
    #[arg(long, value_delimiter = ',', required = true, value_name = "RATE,...")]
    rates: Vec<gyro_loadgen::sweep::Rate>,
    /// Seconds per step.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    step: f64,
    /// Also run the same absolute rates against this server (a `gyro-loadgen sink`)
    /// and draw its curve beside the target's.
    #[arg(long, value_name = "ADDR")]
    compare: Option<String>,
    /// Write the curves as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Draw p50, p99 and p99.9 against the offered rate into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
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

fn address(what: &str, text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        _ => Err(format!("{what} {text}: not an address")),
    }
}

/// The run's specification from the shared flags (no duration, rate or limit yet).
fn traffic_spec(t: TrafficArgs) -> Result<gyro_loadgen::run::RunSpec, String> {
    let target = address("--target", &t.target)?;
    let msisdns = load_msisdns(t.dataset.as_deref())?;
    if t.connections == 0 || t.connections > 256 || t.window == 0 {
        return Err("--connections must be 1 to 256 and --window at least 1".into());
    }
    if t.threads == 0 || t.threads > t.connections {
        return Err("--threads must be 1 to --connections".into());
    }
    Ok(gyro_loadgen::run::RunSpec {
        msisdns: std::sync::Arc::new(msisdns),
        connections: t.connections,
        threads: t.threads,
        window: t.window,
        duration: None,
        sessions: None,
        rate: None,
        mix: t.mix,
        event_form: t.event_form,
        updates: t.updates,
        origin_host: t.origin_host,
        origin_realm: t.origin_realm,
        destination_realm: t.destination_realm,
        tx_timeout: std::time::Duration::from_millis(t.tx_timeout_ms),
        progress: !t.quiet,
        ..gyro_loadgen::run::RunSpec::new(target, 0)
    })
}

fn run(args: RunArgs) -> ExitCode {
    let fail = |m: String| {
        eprintln!("gyro-loadgen run: {m}");
        ExitCode::from(2)
    };
    let duration = match (args.duration, args.sessions) {
        (Some(d), _) if d > 0.0 && d.is_finite() => Some(std::time::Duration::from_secs_f64(d)),
        (Some(_), _) => return fail("--duration must be positive".into()),
        (None, Some(_)) => None,
        (None, None) => Some(std::time::Duration::from_secs(10)),
    };
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return fail("--rate must be positive".into());
    }
    let spec = match traffic_spec(args.traffic) {
        Ok(s) => gyro_loadgen::run::RunSpec {
            duration,
            sessions: args.sessions,
            rate: args.rate,
            ..s
        },
        Err(e) => return fail(e),
    };
    let r = gyro_loadgen::run::run(&spec);
    let h = &r.latency;
    println!(
        "{} CCRs answered in {:.2} s: {:.0} CCR/s ({} connections on {} threads, window {}, {})",
        r.answers,
        r.elapsed.as_secs_f64(),
        r.ccr_per_s(),
        spec.connections,
        spec.threads.min(spec.connections),
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
    if spec.rate.is_some() {
        let l = &r.schedule_lag;
        println!(
            "schedule lag us (how late the generator sent): p50 {} p99 {} max {}; held by the window: {}",
            l.value_at_quantile(0.5),
            l.value_at_quantile(0.99),
            l.max(),
            r.held_by_window
        );
        if let Some(w) = r.lag_warning(&spec) {
            println!("warning: {w}");
        }
    }
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

fn sweep(args: SweepArgs) -> ExitCode {
    use gyro_loadgen::sweep::{self, Point};
    let fail = |m: String| {
        eprintln!("gyro-loadgen sweep: {m}");
        ExitCode::from(2)
    };
    if !(args.step > 0.0 && args.step.is_finite()) {
        return fail("--step must be positive".into());
    }
    let step = std::time::Duration::from_secs_f64(args.step);
    let compare = match args.compare.as_deref().map(|c| address("--compare", c)) {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => return fail(e),
        None => None,
    };
    let spec = match traffic_spec(args.traffic) {
        Ok(s) => gyro_loadgen::run::RunSpec {
            progress: false,
            ..s
        },
        Err(e) => return fail(e),
    };
    let show = |name: &str| {
        let name = name.to_string();
        move |p: &Point| {
            println!(
                "{name:<8} offered {:>9.0}  answered {:>9.0} CCR/s  p50 {:>6}  p99 {:>7}  p99.9 {:>7}  max {:>7} us  lag p99 {:>5} us{}",
                p.offered,
                p.ccr_per_s,
                p.p50_us,
                p.p99_us,
                p.p999_us,
                p.max_us,
                p.lag_p99_us,
                if p.clean() { String::new() } else {
                    format!("  ({} check failures, {} timeouts, {} connection errors)",
                        p.check_failures, p.timeouts, p.connection_errors)
                }
            )
        }
    };
    let target = sweep::sweep(&spec, &args.rates, step, show("target"));
    if let Some(m) = target.max_ccr_per_s {
        println!("target closed-loop maximum: {m:.0} CCR/s");
    }
    let offered: Vec<f64> = target.points.iter().map(|p| p.offered).collect();
    let other = compare.map(|addr| {
        let s = gyro_loadgen::run::RunSpec {
            target: addr,
            ..spec.clone()
        };
        sweep::at_rates(&s, &offered, step, show("compare"))
    });
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "step_s": args.step,
            "connections": spec.connections,
            "window": spec.window,
            "target": target.json(),
            "compare": other.as_ref().map(sweep::Curve::json),
        });
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            return fail(format!("--report {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.plot {
        let mut curves = vec![(spec.target.to_string(), &target)];
        if let (Some(c), Some(a)) = (&other, compare) {
            curves.push((format!("{a} (compare)"), c));
        }
        let named: Vec<(&str, &sweep::Curve)> =
            curves.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let title = format!(
            "latency against offered rate ({} connections, window {})",
            spec.connections, spec.window
        );
        if let Err(e) = sweep::svg(&named, &title, path) {
            return fail(format!("--plot {}: {e}", path.display()));
        }
    }
    let clean = target
        .points
        .iter()
        .chain(other.iter().flat_map(|c| c.points.iter()))
        .all(Point::clean);
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(*args),
        Command::Sweep(args) => sweep(*args),
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
