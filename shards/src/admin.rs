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

use crate::serve::{AdminCmd, CompanyView};

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
pub fn run(
    server: Server,
    token: Option<String>,
    shards: Vec<Sender<AdminCmd>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(req)) => handle(req, token.as_deref(), &shards),
            Ok(None) => {}
            Err(e) => {
                eprintln!("gyro serve: operations endpoint stopped: {e}");
                return;
            }
        }
    }
}

/// Asks every shard; `None` when one does not answer in time.
fn ask<T>(shards: &[Sender<AdminCmd>], make: impl Fn(Sender<T>) -> AdminCmd) -> Option<Vec<T>> {
    let mut waiting = Vec::with_capacity(shards.len());
    for shard in shards {
        let (tx, rx) = bounded(1);
        shard.send(make(tx)).ok()?;
        waiting.push(rx);
    }
    waiting
        .into_iter()
        .map(|rx| rx.recv_timeout(SHARD_TIMEOUT).ok())
        .collect()
}

/// The company over every shard (each holds its slices; the owner its remainder).
fn company(shards: &[Sender<AdminCmd>], id: &str) -> Option<Option<CompanyView>> {
    let parts = ask(shards, |tx| AdminCmd::Company(id.to_string(), tx))?;
    let mut total: Option<CompanyView> = None;
    for part in parts.into_iter().flatten() {
        match &mut total {
            Some(t) => t.add(&part),
            None => total = Some(part),
        }
    }
    Some(total)
}

/// One Prometheus text from the shards' texts: each metric family once, its HELP and
/// TYPE lines first, then every shard's samples.
pub fn merge_metrics(parts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, (Vec<String>, Vec<String>)> =
        std::collections::HashMap::new();
    for text in parts {
        let mut current = String::new();
        for line in text.lines() {
            let family = if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                rest.split(' ').next().unwrap_or("").to_string()
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                // Summaries' _count and _sum samples belong to their family.
                if !current.is_empty() && name.starts_with(current.as_str()) {
                    current.clone()
                } else {
                    name.to_string()
                }
            };
            current = family.clone();
            let entry = families.entry(family.clone()).or_insert_with(|| {
                order.push(family.clone());
                (Vec::new(), Vec::new())
            });
            if line.starts_with('#') {
                if !entry.0.iter().any(|l| l == line) {
                    entry.0.push(line.to_string());
                }
            } else {
                entry.1.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for f in order {
        let (meta, samples) = &families[&f];
        for l in meta.iter().chain(samples) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn handle(mut req: Request, token: Option<&str>, shards: &[Sender<AdminCmd>]) {
    let url = req.url().split('?').next().unwrap_or("").to_string();
    let parts: Vec<&str> = url.trim_matches('/').split('/').collect();
    match (req.method(), parts.as_slice()) {
        (Method::Get, ["metrics"]) => match ask(shards, AdminCmd::Metrics) {
            Some(texts) => reply(req, 200, "text/plain; version=0.0.4", merge_metrics(&texts)),
            None => json_error(req, 503, "the shard did not answer"),
        },
        (Method::Get, ["healthz"]) => match ask(shards, AdminCmd::Metrics) {
            Some(_) => reply(req, 200, "text/plain", "ok\n".into()),
            None => reply(req, 503, "text/plain", "shard not answering\n".into()),
        },
        (Method::Get, ["companies"]) => match ask(shards, AdminCmd::Companies) {
            Some(parts) => {
                let mut parts = parts.into_iter();
                let mut all = parts.next().unwrap_or_default();
                for part in parts {
                    for (t, p) in all.iter_mut().zip(&part) {
                        t.add(p);
                    }
                }
                let list: Vec<String> = all.iter().map(CompanyView::json).collect();
                reply(req, 200, "application/json", format!("[{}]\n", list.join(",")))
            }
            None => json_error(req, 503, "the shard did not answer"),
        },
        (Method::Get, ["companies", id]) => {
            let id = id.to_string();
            match company(shards, &id) {
                Some(Some(c)) => reply(req, 200, "application/json", c.json() + "\n"),
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
                    let answers = ask(shards, |tx| AdminCmd::TopUp(id.clone(), amount, tx));
                    let first_error = answers
                        .as_ref()
                        .and_then(|a| a.iter().find_map(|r| r.as_ref().err().cloned()));
                    match (answers, first_error) {
                        (None, _) => json_error(req, 503, "a shard did not answer"),
                        (_, Some(e)) if e.starts_with("no company") => json_error(req, 404, &e),
                        (_, Some(e)) => json_error(req, 400, &e),
                        (Some(_), None) => match company(shards, &id) {
                            Some(Some(c)) => reply(req, 200, "application/json", c.json() + "\n"),
                            _ => json_error(req, 503, "a shard did not answer"),
                        },
                    }
                }
                "packages" => {
                    let mut body = Vec::new();
                    if req.as_reader().take(64 * 1024).read_to_end(&mut body).is_err() {
                        return json_error(req, 400, "cannot read the body");
                    }
                    // Every shard adds it (in the same order, so the same index); the
                    // owner holds its units. They all judge it alike.
                    let answers =
                        ask(shards, |tx| AdminCmd::AddPackage(id.clone(), body.clone(), tx));
                    let first_error = answers
                        .as_ref()
                        .and_then(|a| a.iter().find_map(|r| r.as_ref().err().cloned()));
                    match (answers, first_error) {
                        (None, _) => json_error(req, 503, "a shard did not answer"),
                        (_, Some((status, e))) => json_error(req, status, &e),
                        (Some(_), None) => match company(shards, &id) {
                            Some(Some(c)) => reply(req, 200, "application/json", c.json() + "\n"),
                            _ => json_error(req, 503, "a shard did not answer"),
                        },
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
