//! Helpers of the process-level tests: a `gyro serve` child with its addresses, a
//! one-shot HTTP client, JSON parsing, temporary directories.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    pub fn start(name: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let data_dir = temp_dir(name);
        let mut cmd = Command::new(GYRO);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env_remove("GYRO_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
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
            if let Some(rest) = line.strip_prefix("gyro serve: Diameter on ") {
                let (d, rest) = rest.split_once(", operations on http://").unwrap();
                let a = rest.split_whitespace().next().unwrap();
                return Server {
                    child,
                    diameter: d.parse().unwrap(),
                    admin: a.parse().unwrap(),
                    data_dir,
                    stderr: rx,
                };
            }
            seen.push(line);
        }
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
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: gyro\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
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
