//! `gyro serve` against Erlang/OTP's diameter application as a strict Gy client
//! (`otp/gyro_gy.erl`, OTP's own RFC 4006 dictionary, strict M-bit and arity checks):
//! CCR-I/U/T sessions and CCR-EVENTs with several requests in flight, every answer
//! decoded by OTP and checked field by field. And the other way round: `gyro-loadgen`
//! against OTP's diameter as a stub Gy server (`gyro_gy server`), which must pass every
//! one of the generator's checks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{have_tool, Server};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// OTP's RFC 4006 dictionary (with the RFC 4005 one it inherits) and gyro_gy.erl,
/// compiled into a build directory, once for all the tests of this file.
fn build() -> Option<PathBuf> {
    static BUILD: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BUILD.get_or_init(compile).clone()
}

fn compile() -> Option<PathBuf> {
    if !(have_tool("erl") && have_tool("erlc") && have_tool("diameterc")) {
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otp-gy");
    std::fs::create_dir_all(&dir).unwrap();
    let lib = run(Command::new("erl").args([
        "-noshell",
        "-eval",
        "io:format(\"~s\", [code:lib_dir(diameter)]), halt().",
    ]));
    let dict = Path::new(&lib).join("examples/dict");
    let inherits = ["--inherits", "common/diameter_gen_base_rfc6733"];
    for name in ["rfc4005_nas", "rfc4006_cc"] {
        run(Command::new("diameterc")
            .current_dir(&dir)
            .args(["-i", ".", "-o", "."])
            .args(inherits)
            .arg(dict.join(format!("{name}.dia"))));
        run(Command::new("erlc")
            .current_dir(&dir)
            .args(["-o", "."])
            .arg(format!("{name}.erl")));
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otp/gyro_gy.erl");
    run(Command::new("erlc")
        .current_dir(&dir)
        .args(["-o", "."])
        .arg(src));
    Some(dir)
}

fn client(build: &Path, server: &Server, mode: &str, n: u32, concurrency: u32) -> String {
    let port = server.diameter.port().to_string();
    let out = Command::new("erl")
        .args(["-noshell", "-pa"])
        .arg(build)
        .args([
            "-run",
            "gyro_gy",
            "client",
            "127.0.0.1",
            &port,
            "gyro.local",
            mode,
        ])
        .args([n.to_string(), concurrency.to_string(), "60".into()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "OTP client ({mode}): {text}");
    text
}

#[test]
fn otp_strict_client_runs_sessions_and_events_against_gyro_serve() {
    let Some(build) = build() else { return };
    let server = Server::start("otp", &[], &[]);
    let text = client(&build, &server, "session", 200, 20);
    assert!(text.contains("RESULT ok=600 failed=0"), "{text}");
    let text = client(&build, &server, "event", 200, 20);
    assert!(text.contains("RESULT ok=200 failed=0"), "{text}");
    let (ok, lines) = server.stop();
    assert!(ok, "{lines:#?}");
}

#[test]
fn loadgen_runs_clean_against_the_otp_stub_server() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let Some(build) = build() else { return };
    let mut child = Command::new("erl")
        .args(["-noshell", "-pa"])
        .arg(&build)
        .args(["-run", "gyro_gy", "server", "0", "lenient"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(p) = l.strip_prefix("LISTENING ") {
                    break p.trim().parse().unwrap();
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the OTP stub server did not start");
            }
        }
    };
    let spec = gyro_loadgen::run::RunSpec {
        msisdns: std::sync::Arc::new((0..1000).map(gyro_loadgen::dataset::msisdn).collect()),
        connections: 2,
        window: 32,
        mix: "data=70,voice=10,sms=10,refund=10".parse().unwrap(),
        destination_realm: "otp.gyro.test".into(),
        ..gyro_loadgen::run::RunSpec::new(([127, 0, 0, 1], port).into(), 2_000)
    };
    let r = gyro_loadgen::run::run(&spec);
    let _ = child.kill();
    let _ = child.wait();
    assert!(r.connection_errors.is_empty(), "{:?}", r.connection_errors);
    assert_eq!((r.check_failures, r.timeouts), (0, 0), "{:?}", r.failures);
    assert_eq!(r.sessions_completed, 2_000);
    assert_eq!(r.answers_by_result, vec![(2001, r.answers)]);
}
