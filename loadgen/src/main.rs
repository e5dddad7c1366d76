//! gyro-loadgen: a pipelined Diameter Gy traffic generator (being built; see the
//! project's issues). It shares gyro-engine's codec and peer state machine.

fn main() -> std::process::ExitCode {
    eprintln!("gyro-loadgen: not built yet; `gyro demo` runs a loopback exchange meanwhile");
    std::process::ExitCode::FAILURE
}
