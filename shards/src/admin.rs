//! The operations endpoint of `gyro serve`: plain HTTP on its own thread, talking to the
//! shards over channels so that nothing here runs on a shard's request path.
//!
//! `GET /metrics` (Prometheus text), `GET /healthz`, `GET /companies/{id}`,
//! `POST /companies/{id}/topup` with `{"amount": N}` (micro-units). Mutating calls need
//! `Authorization: Bearer TOKEN` (`admin_token` or `GYRO_ADMIN_TOKEN`); without a
//! configured token they are refused.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use simd_json::prelude::*;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::serve::AdminCmd;

/// How long a shard may take to answer an operations call.
const SHARD_TIMEOUT: Duration = Duration::from_secs(2);

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

fn reply(req: Request, status: u16, content_type: &str, body: String) {
    let resp = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type));
    let _ = req.respond(resp);
}

fn json_error(req: Request, status: u16, message: &str) {
    let body = format!("{{\"error\":{}}}\n", crate::json_quote(message));
    reply(req, status, "application/json", body);
}

/// Serves until `stop` is set.
pub fn run(server: Server, token: Option<String>, shard: Sender<AdminCmd>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(req)) => handle(req, token.as_deref(), &shard),
            Ok(None) => {}
            Err(e) => {
                eprintln!("gyro serve: operations endpoint stopped: {e}");
                return;
            }
        }
    }
}

fn ask<T>(shard: &Sender<AdminCmd>, make: impl FnOnce(Sender<T>) -> AdminCmd) -> Option<T> {
    let (tx, rx) = bounded(1);
    shard.send(make(tx)).ok()?;
    rx.recv_timeout(SHARD_TIMEOUT).ok()
}

fn handle(mut req: Request, token: Option<&str>, shard: &Sender<AdminCmd>) {
    let url = req.url().split('?').next().unwrap_or("").to_string();
    let parts: Vec<&str> = url.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (Method::Get, ["metrics"]) => match ask(shard, AdminCmd::Metrics) {
            Some(text) => reply(req, 200, "text/plain; version=0.0.4", text),
            None => json_error(req, 503, "the shard did not answer"),
        },
        (Method::Get, ["healthz"]) => match ask(shard, AdminCmd::Metrics) {
            Some(_) => reply(req, 200, "text/plain", "ok\n".into()),
            None => reply(req, 503, "text/plain", "shard not answering\n".into()),
        },
        (Method::Get, ["companies"]) => match ask(shard, AdminCmd::Companies) {
            Some(json) => reply(req, 200, "application/json", json + "\n"),
            None => json_error(req, 503, "the shard did not answer"),
        },
        (Method::Get, ["companies", id]) => {
            let id = id.to_string();
            match ask(shard, |tx| AdminCmd::Company(id.clone(), tx)) {
                Some(Some(json)) => reply(req, 200, "application/json", json + "\n"),
                Some(None) => json_error(req, 404, &format!("no company {id:?}")),
                None => json_error(req, 503, "the shard did not answer"),
            }
        }
        (Method::Post, ["companies", id, action]) => {
            let Some(expected) = token else {
                return json_error(
                    req,
                    403,
                    "mutating calls are disabled: configure admin_token or GYRO_ADMIN_TOKEN",
                );
            };
            let given = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.as_str().to_string());
            if given.as_deref() != Some(&format!("Bearer {expected}")) {
                return json_error(req, 401, "missing or wrong Authorization: Bearer token");
            }
            let id = id.to_string();
            match *action {
                "topup" => {
                    let mut body = Vec::new();
                    if req
                        .as_reader()
                        .take(64 * 1024)
                        .read_to_end(&mut body)
                        .is_err()
                    {
                        return json_error(req, 400, "cannot read the body");
                    }
                    let amount = simd_json::to_borrowed_value(&mut body)
                        .ok()
                        .and_then(|v| v.get("amount").and_then(|a| a.as_i64()));
                    let Some(amount) = amount else {
                        return json_error(
                            req,
                            400,
                            "the body must be {\"amount\": N} with N an integer in micro-units",
                        );
                    };
                    match ask(shard, |tx| AdminCmd::TopUp(id.clone(), amount, tx)) {
                        Some(Ok(json)) => reply(req, 200, "application/json", json + "\n"),
                        Some(Err(e)) if e.starts_with("no company") => json_error(req, 404, &e),
                        Some(Err(e)) => json_error(req, 400, &e),
                        None => json_error(req, 503, "the shard did not answer"),
                    }
                }
                "packages" => {
                    let mut body = Vec::new();
                    if req.as_reader().take(64 * 1024).read_to_end(&mut body).is_err() {
                        return json_error(req, 400, "cannot read the body");
                    }
                    match ask(shard, |tx| AdminCmd::AddPackage(id.clone(), body, tx)) {
                        Some(Ok(json)) => reply(req, 200, "application/json", json + "\n"),
                        Some(Err((status, e))) => json_error(req, status, &e),
                        None => json_error(req, 503, "the shard did not answer"),
                    }
                }
                _ => json_error(req, 404, "unknown route"),
            }
        }
        _ => json_error(
            req,
            404,
            "unknown route: GET /metrics, /healthz, /companies, /companies/{id}; POST /companies/{id}/topup, /companies/{id}/packages",
        ),
    }
}
