//! The operations endpoint of `gyro serve`: hyper's HTTP/1 server on a current-thread
//! tokio runtime of its own thread, talking to the shards over channels so that
//! nothing here runs on a shard's request path (`docs/operations.md`).
//!
//! `GET /metrics` (Prometheus text) and `GET /healthz` are open. Reads of customer data
//! (`GET /companies`, `GET /companies/{id}`) and changes (`POST /companies/{id}/topup`
//! with `{"amount": N}` in micro-units, `POST /companies/{id}/packages`) need
//! `Authorization: Bearer TOKEN` (`admin_token` or `GYRO_ADMIN_TOKEN`), compared in
//! constant time: 401 without it or with another, 403 when no token is configured.
//!
//! Limits (`Limits`): open connections (more are closed at once), bytes and count of a
//! request's headers (431), bytes of a body (413, before reading when Content-Length
//! says so), and a time within which a client must send a request's head (hyper's
//! header timeout) and body (408); a connection lives at most six times that. The
//! shards are asked from tokio's blocking pool, so a slow shard holds up only the call
//! that asked it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use simd_json::prelude::*;
use subtle::ConstantTimeEq;

use crate::config::ServeConfig;
use crate::serve::{AdminCmd, CompanyView};

/// How long a shard may take to answer an operations call.
const SHARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What one client may take of the endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub connections: usize,
    pub head_bytes: usize,
    pub headers: usize,
    pub body_bytes: usize,
    pub timeout: Duration,
}

impl Limits {
    pub fn of(c: &ServeConfig) -> Limits {
        Limits {
            connections: c.admin_connections_max.max(1),
            head_bytes: c.admin_head_bytes_max,
            headers: c.admin_headers_max.max(1),
            body_bytes: c.admin_body_bytes_max,
            timeout: Duration::from_millis(c.admin_timeout_ms.max(1)),
        }
    }
}

struct Ctx {
    token: Option<String>,
    shards: Vec<Sender<AdminCmd>>,
    limits: Limits,
}

type Answer = Response<Full<Bytes>>;

fn reply(status: u16, content_type: &str, body: String) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_str(content_type)
            .unwrap_or(hyper::header::HeaderValue::from_static("text/plain")),
    );
    r
}

fn json_error(status: u16, message: &str) -> Answer {
    let body = format!("{{\"error\":{}}}\n", crate::json_quote(message));
    reply(status, "application/json", body)
}

/// Serves on `listener` until `stop` is set.
pub fn run(
    listener: std::net::TcpListener,
    token: Option<String>,
    shards: Vec<Sender<AdminCmd>>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gyro serve: operations endpoint not started: {e}");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        token,
        shards,
        limits,
    });
    rt.block_on(serve(listener, ctx, stop));
}

async fn serve(listener: std::net::TcpListener, ctx: Arc<Ctx>, stop: Arc<AtomicBool>) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gyro serve: operations endpoint stopped: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.limits.connections));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors, say: the clients already in go on.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Beyond the connection limit a client is closed at once.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    connection(stream, ctx).await;
                    drop(slot);
                });
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, ctx: Arc<Ctx>) {
    let limits = ctx.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        // hyper's smallest read buffer is 8 KiB.
        .max_buf_size(limits.head_bytes.max(8192))
        .max_headers(limits.headers);
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(req, ctx).await) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    // However the client behaves, its connection ends.
    if tokio::time::timeout(6 * limits.timeout, conn)
        .await
        .is_err()
    {
        // Dropped: the socket closes.
    }
}

/// Asks every shard from the blocking pool (`ask`).
async fn ask_async<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    make: impl Fn(Sender<T>) -> AdminCmd + Send + 'static,
) -> Option<Vec<T>> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || ask(&ctx.shards, make))
        .await
        .ok()
        .flatten()
}

async fn company_async(ctx: &Arc<Ctx>, id: String) -> Option<Option<CompanyView>> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || company(&ctx.shards, &id))
        .await
        .ok()
        .flatten()
}

/// The bearer token, compared in constant time; 403 with none configured.
fn authorize(req: &Request<Incoming>, token: Option<&str>) -> Result<(), Answer> {
    let Some(expected) = token else {
        return Err(json_error(
            403,
            "this route is disabled: configure admin_token or GYRO_ADMIN_TOKEN",
        ));
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(json_error(
            401,
            "missing or wrong Authorization: Bearer token",
        ))
    }
}

/// The request's body, within the size and time limits.
async fn body(req: Request<Incoming>, limits: Limits) -> Result<Vec<u8>, Answer> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        json_error(
            413,
            &format!("the body is larger than {} bytes", limits.body_bytes),
        )
    };
    if declared.is_some_and(|n| n > limits.body_bytes as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), limits.body_bytes);
    match tokio::time::timeout(limits.timeout, limited.collect()).await {
        Err(_) => Err(json_error(408, "the body did not arrive in time")),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(json_error(400, "cannot read the body")),
        Ok(Ok(b)) => Ok(b.to_bytes().to_vec()),
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

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>) -> Answer {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let customer_data = parts.first() == Some(&"companies");
    if customer_data {
        if let Err(refused) = authorize(&req, ctx.token.as_deref()) {
            return refused;
        }
    }
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["metrics"]) => match ask_async(&ctx, AdminCmd::Metrics).await {
            Some(texts) => reply(200, "text/plain; version=0.0.4", merge_metrics(&texts)),
            None => json_error(503, "the shard did not answer"),
        },
        (Method::GET, ["healthz"]) => match ask_async(&ctx, AdminCmd::Metrics).await {
            Some(_) => reply(200, "text/plain", "ok\n".into()),
            None => reply(503, "text/plain", "shard not answering\n".into()),
        },
        (Method::GET, ["companies"]) => match ask_async(&ctx, AdminCmd::Companies).await {
            Some(parts) => {
                let mut parts = parts.into_iter();
                let mut all = parts.next().unwrap_or_default();
                for part in parts {
                    for (t, p) in all.iter_mut().zip(&part) {
                        t.add(p);
                    }
                }
                let list: Vec<String> = all.iter().map(CompanyView::json).collect();
                reply(200, "application/json", format!("[{}]\n", list.join(",")))
            }
            None => json_error(503, "the shard did not answer"),
        },
        (Method::GET, ["companies", id]) => {
            let id = id.to_string();
            match company_async(&ctx, id.clone()).await {
                Some(Some(c)) => reply(200, "application/json", c.json() + "\n"),
                Some(None) => json_error(404, &format!("no company {id:?}")),
                None => json_error(503, "the shard did not answer"),
            }
        }
        (Method::POST, ["companies", id, action @ ("topup" | "packages")]) => {
            let (id, action) = (id.to_string(), action.to_string());
            let body = match body(req, ctx.limits).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            change(&ctx, id, &action, body).await
        }
        (_, ["companies", ..]) => json_error(404, "unknown route"),
        _ => json_error(
            404,
            "unknown route: GET /metrics, /healthz, /companies, /companies/{id}; POST /companies/{id}/topup, /companies/{id}/packages",
        ),
    }
}

/// A top-up or a package added, then the company as it is now.
async fn change(ctx: &Arc<Ctx>, id: String, action: &str, mut body: Vec<u8>) -> Answer {
    let failed = if action == "topup" {
        let amount = simd_json::to_borrowed_value(&mut body)
            .ok()
            .and_then(|v| v.get("amount").and_then(|a| a.as_i64()));
        let Some(amount) = amount else {
            return json_error(
                400,
                "the body must be {\"amount\": N} with N an integer in micro-units",
            );
        };
        let key = id.clone();
        let answers = ask_async(ctx, move |tx| AdminCmd::TopUp(key.clone(), amount, tx)).await;
        let Some(answers) = answers else {
            return json_error(503, "a shard did not answer");
        };
        answers.into_iter().find_map(Result::err).map(|e| {
            let status = if e.starts_with("no company") {
                404
            } else {
                400
            };
            (status, e)
        })
    } else {
        // Every shard adds it (in the same order, so the same index); the owner holds
        // its units. They all judge it alike.
        let key = id.clone();
        let answers = ask_async(ctx, move |tx| {
            AdminCmd::AddPackage(key.clone(), body.clone(), tx)
        })
        .await;
        let Some(answers) = answers else {
            return json_error(503, "a shard did not answer");
        };
        answers.into_iter().find_map(Result::err)
    };
    if let Some((status, e)) = failed {
        return json_error(status, &e);
    }
    match company_async(ctx, id).await {
        Some(Some(c)) => reply(200, "application/json", c.json() + "\n"),
        _ => json_error(503, "a shard did not answer"),
    }
}
