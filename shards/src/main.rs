//! The `gyro` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { requests, window } => demo(requests, window.max(1)),
    }
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
