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
    /// Runs gyro's Diameter layer end to end on loopback TCP: a client peer and a
    /// server peer exchange CER/CEA, pipelined CCR/CCA (the server decodes each CCR and
    /// grants what it asks; charging is not wired in yet), DWR/DWA and DPR/DPA.
    Demo {
        /// CCRs to send.
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// CCRs in flight at once.
        #[arg(long, default_value_t = 256)]
        window: u64,
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
        Command::Demo { requests, window } => demo(requests, window.max(1)),
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

fn demo(requests: u64, window: u64) -> ExitCode {
    println!("gyro demo: {requests} CCRs over loopback TCP, {window} in flight");
    let r = match gyro_shards::loopback::run(requests, window) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gyro demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let secs = r.elapsed.as_secs_f64();
    println!("  requests sent      {}", r.requests_sent);
    println!("  answers received   {}", r.answers_received);
    for (code, n) in &r.answers_by_result {
        println!("    Result-Code {code}: {n}");
    }
    println!(
        "  elapsed            {:.3} s ({:.0} CCR/s, one client thread, one server thread)",
        secs,
        r.answers_received as f64 / secs
    );
    println!("  DWRs answered      {}", r.dwr_answered_by_server);
    println!("  client closed      {:?}", r.client_close);
    println!("  server closed      {:?}", r.server_close);
    let ok = r.answers_received == r.requests_sent
        && r.answers_by_result.iter().all(|(c, _)| *c == 2001);
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("gyro demo: not every CCR was answered with 2001");
        ExitCode::FAILURE
    }
}
