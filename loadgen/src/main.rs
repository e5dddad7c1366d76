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

fn main() -> ExitCode {
    match Cli::parse().command {
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
