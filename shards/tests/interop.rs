//! `gyro serve` with independent Diameter implementations, over real sockets:
//! python-diameter 0.9.0 as a Gy client with 3GPP AVPs (`interop/gy_client.py`), first
//! directly and then through a freeDiameter 1.2.1 relay (Debian's `freediameterd`, with
//! `interop/relay.conf`), while tcpdump captures both hops; tshark then checks that
//! capture for malformed or warning-level Diameter frames (`interop/capture_check.sh`).
//!
//! The README's test command installs the peers (apt: freediameterd, tcpdump, tshark,
//! openssl; pip: python-diameter into a venv whose python it passes as GYRO_PYTHON).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{have_tool, temp_dir, Server};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A Python that has python-diameter: GYRO_PYTHON, or python3 if it has the module.
fn python() -> Option<String> {
    if let Ok(p) = std::env::var("GYRO_PYTHON") {
        return Some(p);
    }
    let ok = Command::new("python3")
        .args(["-c", "import diameter"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3".into());
    }
    assert!(
        std::env::var("GYRO_REQUIRE_PEERS").as_deref() != Ok("1"),
        "python-diameter is required (GYRO_REQUIRE_PEERS=1): set GYRO_PYTHON to a python \
         that has it (the README's test command does)"
    );
    eprintln!("python-diameter not installed: this interop check did not run");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills and reaps a child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

fn wait_for(child: &mut Child, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn gy_client(python: &str, port: u16, flow: &str, first_msisdn: &str) -> String {
    let out = Command::new(python)
        .arg(interop_dir().join("gy_client.py"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--dest-realm",
            "gyro.local",
            "--sessions",
            "100",
            "--window",
            "32",
        ])
        .args(["--flow", flow, "--first-msisdn", first_msisdn])
        .args([
            "--origin-host",
            "pgw.client.gyro.test",
            "--origin-realm",
            "client.gyro.test",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "python-diameter {flow} via port {port}: {text}"
    );
    assert!(text.contains("RESULT ok=100 failed=0"), "{text}");
    text
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the relay's configuration (and its certificate, DH parameters and ACL) into
/// `dir`; returns the configuration file.
fn relay_config(dir: &Path, relay_port: u16, gyro_port: u16) -> PathBuf {
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=dra.relay.gyro.test",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ]));
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "group:ffdhe2048",
        ])
        .args(["-out", "dh.pem"]));
    let acl = std::fs::read_to_string(interop_dir().join("acl_wl.conf"))
        .unwrap()
        .replace("@CLIENT_HOST@", "*.client.gyro.test");
    std::fs::write(dir.join("acl_wl.conf"), acl).unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    let conf = std::fs::read_to_string(interop_dir().join("relay.conf"))
        .unwrap()
        .replace("@RELAY_IDENTITY@", "dra.relay.gyro.test")
        .replace("@RELAY_REALM@", "relay.gyro.test")
        .replace("@RELAY_PORT@", &relay_port.to_string())
        .replace("@GYRO_IDENTITY@", "ocs.gyro.local")
        .replace("@GYRO_HOST@", "127.0.0.1")
        .replace("@GYRO_PORT@", &gyro_port.to_string())
        .replace("@TW_TIMER@", "6")
        .replace("@TLS_CERT@", &path("cert.pem"))
        .replace("@TLS_KEY@", &path("key.pem"))
        .replace("@TLS_DH@", &path("dh.pem"))
        .replace("@ACL_FILE@", &path("acl_wl.conf"));
    assert!(
        !conf.lines().any(|l| !l.starts_with('#') && l.contains("@")),
        "{conf}"
    );
    let file = dir.join("relay.conf");
    std::fs::write(&file, conf).unwrap();
    file
}

#[test]
fn python_diameter_direct_and_through_freediameter_with_a_clean_capture() {
    let Some(python) = python() else { return };
    if !(have_tool("freeDiameterd")
        && have_tool("tcpdump")
        && have_tool("tshark")
        && have_tool("openssl"))
    {
        return;
    }
    let dir = temp_dir("interop");
    let server = Server::start("interop", &[], &[]);
    let gyro_port = server.diameter.port();
    let relay_port = free_port();

    // Capture both hops from before the first byte.
    let pcap = dir.join("interop.pcap");
    let mut tcpdump = Command::new("tcpdump")
        .args(["-i", "lo", "-B", "65536", "-U", "-w"])
        .arg(&pcap)
        .arg(format!("tcp port {gyro_port} or tcp port {relay_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = tcpdump.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    loop {
        let line = lines.next().expect("tcpdump says it is listening").unwrap();
        if line.contains("listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let mut tcpdump = Reaped(tcpdump);

    // python-diameter straight to gyro.
    gy_client(&python, gyro_port, "session", "491700001000");
    gy_client(&python, gyro_port, "event", "491700002000");

    // The same through freeDiameter: it must accept gyro's CEA, route by realm and
    // add a Route-Record.
    let conf = relay_config(&dir, relay_port, gyro_port);
    let log = dir.join("freediameter.log");
    let relay = Command::new("freeDiameterd")
        .arg("-c")
        .arg(&conf)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut relay = Reaped(relay);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let open = text
            .lines()
            .any(|l| l.contains("STATE_OPEN") && l.contains("'ocs.gyro.local'"));
        if open && std::net::TcpStream::connect(("127.0.0.1", relay_port)).is_ok() {
            break;
        }
        assert!(
            relay.0.try_wait().unwrap().is_none(),
            "freeDiameterd exited: {text}"
        );
        assert!(
            Instant::now() < deadline,
            "the relay did not open its connection to gyro: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    gy_client(&python, relay_port, "session", "491700003000");
    gy_client(&python, relay_port, "event", "491700004000");
    signal(&relay.0, "-TERM");
    assert!(
        wait_for(&mut relay.0, Duration::from_secs(20)),
        "the relay did not stop"
    );

    // tcpdump writes in blocks: give it time before stopping it.
    std::thread::sleep(Duration::from_secs(2));
    signal(&tcpdump.0, "-INT");
    assert!(wait_for(&mut tcpdump.0, Duration::from_secs(10)));
    let out = Command::new("bash")
        .arg(interop_dir().join("capture_check.sh"))
        .arg(&pcap)
        .args([gyro_port.to_string(), relay_port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark findings: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both hops are in the capture, and the relayed requests carry a Route-Record.
    let routed = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("tcp.port=={gyro_port},diameter")])
        .args(["-d", &format!("tcp.port=={relay_port},diameter")])
        .args(["-Y", &format!("tcp.dstport=={gyro_port} && diameter.cmd.code==272 && diameter.flags.request==1 && diameter.Route-Record")])
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=;"])
        .args(["-e", "diameter.Route-Record"])
        .output()
        .unwrap();
    // A frame may hold several CCRs: count the Route-Records, not the frames.
    let relayed: usize = String::from_utf8_lossy(&routed.stdout)
        .lines()
        .map(|l| {
            l.split(';')
                .filter(|v| v.contains("client.gyro.test"))
                .count()
        })
        .sum();
    assert!(
        relayed >= 400,
        "CCRs with a Route-Record reaching gyro: {relayed}"
    );
    let (ok, lines) = server.stop();
    assert!(ok, "{lines:#?}");
}
