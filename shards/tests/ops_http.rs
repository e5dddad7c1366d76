//! The operations endpoint tried as a hostile or careless client would, over raw
//! sockets, while a Diameter peer keeps charging: absurd Content-Length values, endless
//! headers, a slowloris client, a thousand idle connections. None of them stops another
//! client, the process or the charging; reads of customer data need the token.

mod common;
use common::{http, temp_dir, Client, Server, TOKEN};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gyro_engine::diameter::ccr::RequestType;

fn start(name: &str, env: &[(&str, &str)]) -> Server {
    let mut dataset = String::from(
        "{\"type\":\"tariff\",\"rating_group\":10,\"unit\":\"octets\",\"unit_size\":1048576,\"price\":1}\n\
         {\"type\":\"company\",\"id\":\"acme\",\"balance\":1000000000000}\n",
    );
    for i in 0..100 {
        dataset.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"4917000{i:05}\",\"company\":\"acme\"}}\n"
        ));
    }
    let config =
        "admin_timeout_ms = 1000\nadmin_body_bytes_max = 65536\nadmin_connections_max = 2000\n";
    Server::start_with_files(&temp_dir(name), &dataset, config, env)
}

/// `/healthz` answers 200 within a second, from a new connection.
fn healthy(addr: SocketAddr) {
    let t = Instant::now();
    let (status, _) = http(addr, "GET", "/healthz", None, "");
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "/healthz took {:?}",
        t.elapsed()
    );
}

/// Sends `head` on a new connection and returns what comes back before the server
/// closes it or `wait` passes.
fn raw(addr: SocketAddr, head: &[u8], wait: Duration) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Charges sessions on a Diameter connection until `stop`: every answer must be 2001.
fn charging(server: &Server, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let addr = server.diameter;
    std::thread::spawn(move || {
        let mut c = Client::connect(addr, "pgw.ops.test");
        let mut n = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let sid = format!("pgw.ops.test;{n}");
            let msisdn = format!("4917000{:05}", n % 100);
            let a = c.ccr(&sid, &msisdn, RequestType::Initial, 0, 0, true);
            assert_eq!(a.result_code, 2001, "{a:?}");
            let a = c.ccr(&sid, &msisdn, RequestType::Termination, 1, 1000, false);
            assert_eq!(a.result_code, 2001, "{a:?}");
            n += 1;
        }
        n
    })
}

#[test]
fn customer_data_needs_the_token_and_health_does_not() {
    let server = start("ops-token", &[]);
    let a = server.admin;
    assert_eq!(http(a, "GET", "/companies", None, "").0, 401);
    assert_eq!(http(a, "GET", "/companies/acme", Some("wrong"), "").0, 401);
    assert_eq!(
        http(a, "GET", "/companies/acme", Some("test-toke"), "").0,
        401
    );
    assert_eq!(http(a, "GET", "/companies/acme", Some(TOKEN), "").0, 200);
    assert_eq!(http(a, "GET", "/companies", Some(TOKEN), "").0, 200);
    let top_up = "{\"amount\": 5}";
    assert_eq!(
        http(a, "POST", "/companies/acme/topup", None, top_up).0,
        401
    );
    assert_eq!(
        http(a, "POST", "/companies/acme/topup", Some(TOKEN), top_up).0,
        200
    );
    assert_eq!(http(a, "GET", "/metrics", None, "").0, 200);
    assert_eq!(http(a, "GET", "/healthz", None, "").0, 200);
    drop(server);
    // No token configured: customer data is not served at all.
    let server = start("ops-no-token", &[("GYRO_ADMIN_TOKEN", "")]);
    let a = server.admin;
    assert_eq!(http(a, "GET", "/companies/acme", None, "").0, 403);
    assert_eq!(http(a, "GET", "/companies/acme", Some(TOKEN), "").0, 403);
    assert_eq!(http(a, "GET", "/healthz", None, "").0, 200);
}

#[test]
fn no_client_can_stop_the_endpoint_or_the_charging() {
    let mut server = start("ops-abuse", &[]);
    let a = server.admin;
    let stop = Arc::new(AtomicBool::new(false));
    let load = charging(&server, stop.clone());

    // Content-Length of 2^64-1 and of a billion, and no body, held open.
    let (_held1, got) = raw(
        a,
        b"GET /healthz HTTP/1.1\r\nHost: gyro\r\nContent-Length: 18446744073709551615\r\n\r\n",
        Duration::from_millis(500),
    );
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 "), "{got:?}");
    healthy(a);
    let (_held2, _) = raw(
        a,
        b"GET /healthz HTTP/1.1\r\nHost: gyro\r\nContent-Length: 1000000000\r\n\r\n",
        Duration::from_millis(200),
    );
    healthy(a);
    // A body announced beyond the limit is refused before it is read (hyper refuses a
    // length it cannot use as a header error, 431).
    for (length, status) in [("1000000000", "413"), ("18446744073709551615", "431")] {
        let head = format!(
            "POST /companies/acme/topup HTTP/1.1\r\nHost: gyro\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n"
        );
        let (_, got) = raw(a, head.as_bytes(), Duration::from_secs(2));
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")),
            "{length}: {got:?}"
        );
    }
    // A body that never comes: 408 after the timeout, not a stuck endpoint.
    let head = format!(
        "POST /companies/acme/topup HTTP/1.1\r\nHost: gyro\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"amount\""
    );
    let (_, got) = raw(a, head.as_bytes(), Duration::from_secs(3));
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");

    // Endless headers: refused (431) or cut off; never an answer that waits forever.
    let endless = std::thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gyro\r\n");
        for i in 0..200_000 {
            if s.write_all(format!("X-Header-{i}: value\r\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    });
    healthy(a);
    let got = endless.join().unwrap();
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 431") || got.starts_with("HTTP/1.1 400"),
        "{got:?}"
    );

    // Slowloris: a byte every 100 ms. Others are served meanwhile; it is cut off after
    // the timeout (1 s here).
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let t = Instant::now();
        for b in b"GET /healthz HTTP/1.1\r\nHost: gyro\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if s.write_all(&[*b]).is_err() || t.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        t.elapsed()
    });
    healthy(a);
    let cut_after = slow.join().unwrap();
    assert!(
        cut_after < Duration::from_secs(10),
        "the slow client was cut off after {cut_after:?}"
    );

    // A thousand idle connections: a new client is still served.
    let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    healthy(a);
    assert_eq!(http(a, "GET", "/companies/acme", Some(TOKEN), "").0, 200);
    drop(idle);

    stop.store(true, Ordering::Relaxed);
    let sessions = load.join().expect("every CCR answered 2001");
    assert!(sessions > 0);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "gyro serve exited"
    );
    let (ok, _) = server.stop();
    assert!(ok, "gyro serve stops cleanly");
}
