//! The `gyro` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gyro_engine::provision::{self, OnError};

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
    /// Runs gyro end to end on one machine: generates a dataset, starts the charging
    /// engine behind a Diameter server on loopback TCP, sends data sessions (CCR-I, U,
    /// T) from a client peer, writes every CDR to a segment log on disk, reads the log
    /// back and checks that the CDRs add up to what the balances were charged.
    Demo {
        /// Data sessions to run (three CCRs each).
        #[arg(long, default_value_t = 100_000)]
        sessions: u64,
        #[arg(long, default_value_t = 100_000)]
        subscribers: u64,
        #[arg(long, default_value_t = 1_000)]
        companies: u64,
        /// CCRs in flight at once.
        #[arg(long, default_value_t = 256)]
        window: u64,
        /// Where to write the segment log (default: a new directory under the system's
        /// temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
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

#[derive(Subcommand)]
enum CdrCommand {
    /// Prints the CDRs of a shard's segment directory as NDJSON, in sequence order.
    /// Exits 1 at the first damaged record (after printing everything before it).
    Cat {
        dir: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep printing records as they are written.
        #[arg(long)]
        follow: bool,
    },
    /// Checks every segment header, record CRC and sequence number of a directory;
    /// exits 1 naming the file and offset of the first problem.
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            sessions,
            subscribers,
            companies,
            window,
            dir,
        } => demo(
            sessions,
            subscribers.max(1),
            companies.max(1),
            window.max(1),
            dir,
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
        Command::Cdr {
            command: CdrCommand::Cat { dir, from, follow },
        } => cdr_cat(&dir, from, follow),
        Command::Cdr {
            command: CdrCommand::Verify { dir },
        } => match gyro_shards::cdr_files::verify(&dir) {
            Ok(next) => {
                println!("{}: ok, next sequence {}", dir.display(), next);
                ExitCode::SUCCESS
            }
            Err(p) => {
                println!("{p}");
                ExitCode::FAILURE
            }
        },
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

fn demo(
    sessions: u64,
    subscribers: u64,
    companies: u64,
    window: u64,
    dir: Option<PathBuf>,
) -> ExitCode {
    let dir = dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("gyro-demo-{}", std::process::id())));
    if dir.join("shard-0").exists() {
        eprintln!(
            "gyro demo: {} already holds a segment log; choose another --dir",
            dir.display()
        );
        return ExitCode::from(2);
    }
    println!("gyro demo: {subscribers} subscribers in {companies} companies, {sessions} data sessions ({} CCRs), {window} in flight", sessions * 3);
    let spec = gyro_shards::demo::DemoSpec {
        subscribers,
        companies,
        sessions,
        window,
        dir: dir.clone(),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message("running");
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    let r = match gyro_shards::demo::run(&spec) {
        Ok(r) => r,
        Err(e) => {
            bar.finish_and_clear();
            eprintln!("gyro demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    bar.finish_and_clear();
    let secs = r.elapsed.as_secs_f64();
    println!("  CCRs sent / answered    {} / {}", r.requests, r.answers);
    for (code, n) in &r.answers_by_result {
        println!("    Result-Code {code}: {n}");
    }
    println!(
        "  elapsed                 {secs:.2} s ({:.0} CCR/s: one client thread, one server thread)",
        r.answers as f64 / secs
    );
    println!(
        "  CDRs written            {} ({} MB) to {}",
        r.cdrs_written,
        r.cdr_bytes / 1_000_000,
        dir.join("shard-0").display()
    );
    println!("  CDRs read back          {}", r.cdrs_read);
    println!(
        "  charged, by balances    {} micro-units of money, {} package octets",
        r.engine_money_charged, r.engine_package_units
    );
    println!(
        "  charged, by CDRs        {} micro-units of money, {} package octets",
        r.cdr_money_charged, r.cdr_package_units
    );
    let reconciled = r.engine_money_charged == r.cdr_money_charged
        && r.engine_package_units == r.cdr_package_units
        && r.cdrs_read == r.cdrs_written;
    println!(
        "  reconciliation          {}",
        if reconciled {
            "the CDRs equal the balances"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "  look at the CDRs with   gyro cdr cat {}",
        dir.join("shard-0").display()
    );
    if reconciled && r.answers == r.requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
