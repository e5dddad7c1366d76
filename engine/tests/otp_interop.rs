//! Interop with Erlang/OTP's diameter application, a strict independent RFC 6733 stack,
//! over real sockets: OTP as the client accepts gyro's CEA, DWR/DWA and DPA; gyro as the
//! client gets OTP's CEA, DWA and DPA for its CER, DWR and DPR. The OTP side is
//! `otp/gyro_otp.erl`, compiled here with OTP's own RFC 4006 dictionary.

mod common;
use common::net::drive;
use common::{have_tool, server_config};

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gyro_engine::diameter::base::disconnect_cause;
use gyro_engine::peer::{CloseReason, Event, Peer, PeerConfig, WatchdogState};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Compiles OTP's RFC 4006 dictionary (and the RFC 4005 one it inherits from) and
/// gyro_otp.erl into a build directory, once per test binary.
fn build() -> Option<PathBuf> {
    if !(have_tool("erl") && have_tool("erlc") && have_tool("diameterc")) {
        return None;
    }
    static BUILD: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Some(
        BUILD
            .get_or_init(|| {
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otp-interop");
                std::fs::create_dir_all(&dir).unwrap();
                let lib = run(Command::new("erl").args([
                    "-noshell",
                    "-eval",
                    "io:format(\"~s\", [code:lib_dir(diameter)]), halt().",
                ]));
                let dict = Path::new(&lib).join("examples/dict");
                assert!(
                    dict.join("rfc4006_cc.dia").exists(),
                    "OTP's example dictionaries (erlang-examples) are needed"
                );
                let inherits = ["--inherits", "common/diameter_gen_base_rfc6733"];
                run(Command::new("diameterc")
                    .current_dir(&dir)
                    .args(["-o", "."])
                    .args(inherits)
                    .arg(dict.join("rfc4005_nas.dia")));
                run(Command::new("erlc")
                    .current_dir(&dir)
                    .args(["-o", ".", "rfc4005_nas.erl"]));
                run(Command::new("diameterc")
                    .current_dir(&dir)
                    .args(["-i", ".", "-o", "."])
                    .args(inherits)
                    .arg(dict.join("rfc4006_cc.dia")));
                run(Command::new("erlc")
                    .current_dir(&dir)
                    .args(["-o", ".", "rfc4006_cc.erl"]));
                let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otp/gyro_otp.erl");
                run(Command::new("erlc")
                    .current_dir(&dir)
                    .args(["-o", "."])
                    .arg(src));
                dir
            })
            .clone(),
    )
}

/// Starts `erl -run gyro_otp MODE ARGS`, its stdout lines sent to the receiver.
fn start_otp(build: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new("erl")
        .args(["-noshell", "-pa"])
        .arg(build)
        .args(["-run", "gyro_otp"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("erl starts");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("otp: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn fast_watchdog(mut cfg: PeerConfig) -> PeerConfig {
    cfg.watchdog_tw_ms = 300;
    cfg.watchdog_jitter_ms = 0;
    cfg
}

#[test]
fn otp_client_accepts_gyro_cea_dwa_and_dpa() {
    let Some(build) = build() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    // OTP's Tw is 300 ms and gyro's 10 s, so OTP sends the DWRs (any message resets the
    // other side's timer, RFC 3539 §3.4.1); held up 2 s.
    let (mut child, lines) = start_otp(&build, &["client", &port, "300", "2000"]);
    let (mut stream, _) = listener.accept().unwrap();
    let start = Instant::now();
    let mut cfg = server_config();
    cfg.watchdog_tw_ms = 10_000;
    let mut peer = Peer::responder(cfg, 0);
    let events = drive(
        &mut stream,
        &mut peer,
        start,
        Duration::from_secs(20),
        |_, _| false,
    );
    drop(stream);
    let status = child.wait().unwrap();
    let out: Vec<String> = lines.try_iter().collect();
    let out = out.join("\n");

    assert!(status.success(), "OTP client failed:\n{out}");
    // OTP accepted the CEA and saw our identity.
    assert!(out.contains("UP ocs.gyro.test gyro"), "{out}");
    // OTP's watchdog never left OKAY, and it counted gyro's DWAs as 2001 answers.
    assert!(!out.contains("WATCHDOG okay suspect"), "{out}");
    assert!(
        out.contains("{{{0,280,0},recv,{'Result-Code',2001}}"),
        "no DWA counted by OTP:\n{out}"
    );
    // OTP sent DPR on remove_transport and went down on gyro's DPA, not its 3 s timeout.
    let down_ms: u64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("DOWN after ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no DOWN:\n{out}"));
    assert!(down_ms < 1500, "DPA not taken: down after {down_ms} ms");
    // gyro's side: up, OTP's DWRs answered, closed by OTP's DPR.
    assert!(events.contains(&Event::Up));
    assert!(
        !events.iter().any(|e| matches!(
            e,
            Event::Watchdog {
                to: WatchdogState::Suspect,
                ..
            }
        )),
        "{events:?}"
    );
    let s = peer.stats();
    assert!(s.dwr_received >= 3, "{s:?}");
    assert_eq!(s.answers_dropped, 0);
    assert_eq!(
        peer.close_reason(),
        Some(CloseReason::PeerDisconnected(
            disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU
        ))
    );
}

#[test]
fn gyro_client_against_otp_server() {
    let Some(build) = build() else { return };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut child, lines) = start_otp(&build, &["server", &port.to_string()]);
    let ready = lines
        .recv_timeout(Duration::from_secs(20))
        .expect("OTP server starts");
    assert_eq!(ready, "LISTENING");
    // OTP opens its listening socket after add_transport returns: retry briefly.
    let mut stream = (0..100)
        .find_map(|_| {
            TcpStream::connect(("127.0.0.1", port)).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(50));
                None
            })
        })
        .expect("connect to OTP");
    let start = Instant::now();
    let mut cfg = fast_watchdog(PeerConfig::new("ctf.gyro.test", "gyro.test"));
    cfg.seed = 42;
    let mut peer = Peer::initiator(cfg, 0);
    peer.connection_up(0);
    // Up, then two DWR/DWA rounds.
    let events = drive(
        &mut stream,
        &mut peer,
        start,
        Duration::from_secs(10),
        |p, _| p.stats().dwa_received >= 2,
    );
    assert!(events.contains(&Event::Up), "{events:?}");
    assert_eq!(peer.remote_origin_host(), "ocs.erl.test");
    assert!(peer.stats().dwa_received >= 2);
    peer.disconnect(
        disconnect_cause::REBOOTING,
        start.elapsed().as_millis() as u64,
    );
    drive(
        &mut stream,
        &mut peer,
        start,
        Duration::from_secs(10),
        |_, _| false,
    );
    assert_eq!(
        peer.close_reason(),
        Some(CloseReason::Disconnected),
        "DPA from OTP"
    );
    drop(stream);
    std::thread::sleep(Duration::from_millis(300));
    child.kill().ok();
    child.wait().ok();
    let out: Vec<String> = lines.try_iter().collect();
    let out = out.join("\n");
    assert!(out.contains("EVENT up"), "{out}");
    assert!(!out.contains("suspect"), "{out}");
    let s = peer.stats();
    assert!(
        s.dwr_sent >= 2 && s.dwa_received >= 2 && s.answers_dropped == 0,
        "{s:?}"
    );
}
