//! Helpers of the process-level tests: a `gyro serve` child with its addresses, a
//! one-shot HTTP client, JSON parsing, temporary directories.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gyro_engine::diameter::ccr::{
    encode_ccr, subscription_id_type, Ccr, Mscc, RequestType, SubscriptionId, Units,
};
use gyro_engine::diameter::{Header, Message};
use gyro_engine::peer::{Peer, PeerConfig, PeerState, Step};

pub const GYRO: &str = env!("CARGO_BIN_EXE_gyro");

pub fn temp_dir(name: &str) -> PathBuf {
    let d =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `gyro serve`, killed if a test fails.
pub struct Server {
    pub child: Child,
    pub diameter: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    /// What it printed up to the line that says where it listens (that one included).
    pub startup: Vec<String>,
    pub stderr: std::sync::mpsc::Receiver<String>,
    /// The operations token it was started with (`TOKEN` unless the test gave one;
    /// `None` when it gave an empty one).
    pub token: Option<String>,
}

/// The operations token test servers get unless a test gives `GYRO_ADMIN_TOKEN`.
pub const TOKEN: &str = "test-token";

impl Server {
    /// Starts on a new data directory.
    pub fn start(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let data_dir = temp_dir(name);
        let mut args = vec!["--data-dir", data_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        Server::start_in(&args, env)
    }

    /// Starts with these arguments, which name the data directory (`--data-dir`).
    pub fn start_in(args: &[&str], env: &[(&str, &str)]) -> Server {
        let data_dir = args
            .iter()
            .position(|a| *a == "--data-dir")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .expect("--data-dir");
        let mut cmd = Command::new(GYRO);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env_remove("GYRO_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let token = match env.iter().find(|(k, _)| *k == "GYRO_ADMIN_TOKEN") {
            Some((_, v)) => (!v.is_empty()).then(|| v.to_string()),
            None => {
                cmd.env("GYRO_ADMIN_TOKEN", TOKEN);
                Some(TOKEN.to_string())
            }
        };
        let mut child = cmd.spawn().expect("gyro serve starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("gyro serve did not come up: {seen:#?}");
            };
            seen.push(line.clone());
            if let Some(at) = line.find("Diameter on ") {
                let rest = &line[at + "Diameter on ".len()..];
                let (d, rest) = rest.split_once(", operations on http://").unwrap();
                let a = rest.split_whitespace().next().unwrap();
                return Server {
                    child,
                    diameter: d.parse().unwrap(),
                    admin: a.parse().unwrap(),
                    data_dir,
                    startup: seen,
                    stderr: rx,
                    token,
                };
            }
        }
    }

    /// Starts on `dir/data` with `dir/dataset.ndjson` and `dir/gyro.toml` written from
    /// these texts.
    pub fn start_with_files(
        dir: &Path,
        dataset: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let (d, c) = (dir.join("dataset.ndjson"), dir.join("gyro.toml"));
        std::fs::write(&d, dataset).unwrap();
        std::fs::write(&c, config).unwrap();
        let data = dir.join("data");
        Server::start_in(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--dataset",
                d.to_str().unwrap(),
                "--config",
                c.to_str().unwrap(),
            ],
            env,
        )
    }

    /// A GET on the operations endpoint with the server's token.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, self.token.as_deref(), "")
    }

    /// SIGTERM; returns whether it exited 0 and what it printed meanwhile.
    pub fn stop(mut self) -> (bool, Vec<String>) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "gyro serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let lines = self.stderr.try_iter().collect();
        (status.success(), lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns the status and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    http_with(addr, method, path, auth, &[], body.as_bytes())
}

/// One HTTP/1.1 request with extra headers; returns the status and the body.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: gyro\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(t) = auth {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// What `gyro cdr cat DIR` prints (it must succeed): the CDR and balance lines of a
/// shard's log.
pub fn cdr_cat(dir: &Path) -> String {
    let out = Command::new(GYRO)
        .args(["cdr", "cat"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn json(body: &str) -> simd_json::OwnedValue {
    let mut b = body.as_bytes().to_vec();
    simd_json::to_owned_value(&mut b).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Whether a peer tool is installed; with GYRO_REQUIRE_PEERS=1 (the README's test
/// command) a missing one fails the test instead of skipping its check.
pub fn have_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("GYRO_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{name} is required (GYRO_REQUIRE_PEERS=1) but not installed"
        );
        eprintln!("{name} not installed: this interop check did not run");
    }
    found
}

/// A synchronous Diameter client: one request at a time.
pub struct Client {
    stream: TcpStream,
    peer: Peer,
    start: Instant,
    buf: Vec<u8>,
    filled: usize,
}

/// What a test reads from a CCA.
#[derive(Debug, Default)]
pub struct Answer {
    pub result_code: u32,
    pub granted: u64,
    pub mscc_result: Option<u32>,
    pub fui: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr, host: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let start = Instant::now();
        let mut peer = Peer::initiator(PeerConfig::new(host, "test"), 0);
        peer.connection_up(0);
        let mut c = Client {
            stream,
            peer,
            start,
            buf: vec![0; 1 << 17],
            filled: 0,
        };
        c.pump_until(|p, _| p.state() == PeerState::Open);
        c
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Sends a DPR (Disconnect-Cause DO_NOT_WANT_TO_TALK_TO_YOU) and waits for the DPA.
    pub fn goodbye(mut self) {
        let now = self.now();
        self.peer.disconnect(2, now);
        self.pump_until(|p, _| p.close_reason().is_some());
    }

    /// Moves bytes until `done` says so; returns the first application answer seen.
    fn pump_until(
        &mut self,
        mut done: impl FnMut(&Peer, &Option<Vec<u8>>) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answer = None;
        loop {
            while !self.peer.transmit().is_empty() {
                let n = self.stream.write(self.peer.transmit()).unwrap();
                self.peer.transmitted(n);
            }
            if done(&self.peer, &answer) {
                return answer;
            }
            assert!(Instant::now() < deadline, "no answer from gyro serve");
            match self.stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => panic!("gyro serve closed the connection"),
                Ok(n) => self.filled += n,
                Err(_) => {}
            }
            let now = self.now();
            let mut at = 0;
            loop {
                match self.peer.handle_bytes(&self.buf[at..self.filled], now) {
                    Step::NeedMore | Step::Close => break,
                    Step::Consumed(n) | Step::Request(n) => at += n,
                    Step::Answer(n) => {
                        answer = Some(self.buf[at..at + n].to_vec());
                        at += n;
                    }
                }
            }
            self.buf.copy_within(at..self.filled, 0);
            self.filled -= at;
        }
    }

    /// Sends `c` (its Hop-by-Hop and End-to-End ids filled in) and waits for its answer.
    pub fn request(&mut self, c: &Ccr<'_>) -> Vec<u8> {
        self.exchange(c).1
    }

    /// As `request`; also returns the (Hop-by-Hop, End-to-End) ids it went with.
    pub fn exchange(&mut self, c: &Ccr<'_>) -> ((u32, u32), Vec<u8>) {
        let ids = self.peer.next_ids();
        (ids, self.send_as(c, ids, false))
    }

    /// Sends `c` again as a retransmission: with the ids it went with before and the T
    /// flag (RFC 6733 §3); waits for its answer.
    pub fn retransmit(&mut self, c: &Ccr<'_>, ids: (u32, u32)) -> Vec<u8> {
        self.send_as(c, ids, true)
    }

    fn send_as(&mut self, c: &Ccr<'_>, (h2h, e2e): (u32, u32), retransmitted: bool) -> Vec<u8> {
        let mut c = *c;
        c.header = Header {
            hop_by_hop: h2h,
            end_to_end: e2e,
            flags: if retransmitted {
                gyro_engine::diameter::cmd_flags::T
            } else {
                0
            },
            ..c.header
        };
        self.peer.send_with(|b| encode_ccr(&c, b)).unwrap();
        let bytes = self.pump_until(|_, a| a.is_some()).unwrap();
        assert_eq!(Message::new(&bytes).unwrap().header.hop_by_hop, h2h);
        bytes
    }

    /// Sends one data CCR (rating group 10) and waits for its answer.
    pub fn ccr(
        &mut self,
        session: &str,
        msisdn: &str,
        t: RequestType,
        n: u32,
        used: u64,
        ask: bool,
    ) -> Answer {
        let (h2h, e2e) = self.peer.next_ids();
        let mut c = data_ccr(
            session,
            msisdn,
            t,
            n,
            ask.then_some(1 << 20),
            (used > 0).then_some(used),
        );
        c.header = Header {
            hop_by_hop: h2h,
            end_to_end: e2e,
            ..c.header
        };
        self.peer.send_with(|b| encode_ccr(&c, b)).unwrap();
        let bytes = self.pump_until(|_, a| a.is_some()).unwrap();
        let msg = Message::new(&bytes).unwrap();
        assert_eq!(msg.header.hop_by_hop, h2h);
        let mut a = Answer::default();
        for avp in msg.avps().flatten() {
            match avp.code {
                268 => a.result_code = avp.u32().unwrap(),
                456 => {
                    for m in avp.group().flatten() {
                        match m.code {
                            268 => a.mscc_result = Some(m.u32().unwrap()),
                            430 => a.fui = true,
                            431 => {
                                for u in m.group().flatten() {
                                    if u.code == 421 {
                                        a.granted = u.u64().unwrap();
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        a
    }
}

/// A data CCR from pgw.test for `msisdn`: one MSCC of rating group 10 asking for
/// `requested` octets and reporting `used` octets.
pub fn data_ccr<'a>(
    session: &'a str,
    msisdn: &'a str,
    t: RequestType,
    n: u32,
    requested: Option<u64>,
    used: Option<u64>,
) -> Ccr<'a> {
    let octets = |v: u64| Units {
        total_octets: Some(v),
        ..Units::default()
    };
    let mut c = Ccr {
        session_id: session,
        origin_host: "pgw.test",
        origin_realm: "test",
        destination_realm: "gyro.local",
        service_context_id: "32251@3gpp.org",
        request_type: t,
        request_number: n,
        subscription_id_count: 1,
        mscc_count: 1,
        multiple_services_indicator: true,
        ..Ccr::default()
    };
    c.subscription_ids[0] = SubscriptionId {
        id_type: subscription_id_type::END_USER_E164,
        data: msisdn,
    };
    c.mscc[0] = Mscc {
        rating_group: Some(10),
        requested: requested.map(octets),
        used: used.map(octets),
        ..Mscc::default()
    };
    c
}

/// Engine snapshots in a data directory.
pub fn snapshot_count(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("snapshots"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".rkyv"))
                .count()
        })
        .unwrap_or(0)
}
