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

use gyro_engine::charging::engine::{Applied, OpKey};
use gyro_engine::provision::{digits_key, merge_exports, write_ndjson};
use gyro_engine::shard::{KEY_REUSED, LINE_BYTES_MAX};

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
    /// Bytes of a streamed `POST /provisioning` body.
    pub provisioning_bytes: u64,
}

impl Limits {
    pub fn of(c: &ServeConfig) -> Limits {
        Limits {
            connections: c.admin_connections_max.max(1),
            head_bytes: c.admin_head_bytes_max,
            headers: c.admin_headers_max.max(1),
            body_bytes: c.admin_body_bytes_max,
            timeout: Duration::from_millis(c.admin_timeout_ms.max(1)),
            provisioning_bytes: c.admin_provisioning_bytes_max,
        }
    }
}

struct Ctx {
    token: Option<String>,
    shards: Vec<Sender<AdminCmd>>,
    limits: Limits,
    /// Held by every change, so that changes reach every shard in the same order and
    /// an idempotency key is looked up and recorded around its change.
    write: tokio::sync::Mutex<()>,
    /// Held while a call is sent to every shard: whatever happens to the task that
    /// asked, the shards get calls in one order.
    send_order: std::sync::Mutex<()>,
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
            tracing::error!(target: "gyro", "operations endpoint not started: {e}");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        token,
        shards,
        limits,
        write: tokio::sync::Mutex::new(()),
        send_order: std::sync::Mutex::new(()),
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
            tracing::error!(target: "gyro", "operations endpoint stopped: {e}");
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
    // However the client behaves, its connection ends: at most six times the timeout
    // after it opened, or after the last part of a provisioning stream.
    let alive = Arc::new(Alive(std::sync::Mutex::new(
        tokio::time::Instant::now() + 6 * limits.timeout,
    )));
    let alive_in = alive.clone();
    let service = hyper::service::service_fn(move |req| {
        let (ctx, alive) = (ctx.clone(), alive_in.clone());
        async move { Ok::<_, Infallible>(handle(req, ctx, alive).await) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    loop {
        let until = alive.until();
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep_until(until) => {
                if alive.until() <= tokio::time::Instant::now() {
                    // Dropped: the socket closes.
                    return;
                }
            }
        }
    }
}

/// When a connection is cut off.
struct Alive(std::sync::Mutex<tokio::time::Instant>);

impl Alive {
    fn until(&self) -> tokio::time::Instant {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn extend(&self, to: tokio::time::Instant) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if to > *t {
            *t = to;
        }
    }
}

/// Asks every shard, waiting `SHARD_TIMEOUT` for each (`ask_all`).
async fn ask_async<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    make: impl Fn(Sender<T>) -> AdminCmd + Send + 'static,
) -> Option<Vec<T>> {
    ask_all(ctx, SHARD_TIMEOUT, make).await
}

/// The company over every shard (each holds its slices; the owner its remainder).
async fn company_async(ctx: &Arc<Ctx>, id: String) -> Option<Option<CompanyView>> {
    let parts = ask_async(ctx, move |tx| AdminCmd::Company(id.clone(), tx)).await?;
    let mut total: Option<CompanyView> = None;
    for part in parts.into_iter().flatten() {
        match &mut total {
            Some(t) => t.add(&part),
            None => total = Some(part),
        }
    }
    Some(total)
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
        Ok(Ok(b)) => {
            let b = b.to_bytes().to_vec();
            if !gyro_engine::provision::nesting_within(&b, gyro_engine::provision::NESTING_MAX) {
                return Err(json_error(
                    400,
                    "the body nests arrays and objects too deep",
                ));
            }
            Ok(b)
        }
    }
}

/// An answer to a change, kept under its idempotency key.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            format!("{{\"error\":{}}}\n", crate::json_quote(message)),
        )
    }

    fn answer(&self) -> Answer {
        reply(self.status, self.content_type, self.body.clone())
    }
}

/// FNV-1a, 64 bits: idempotency keys and bodies as the shards keep them (stable
/// across builds, unlike the standard library's hasher).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn of(parts: &[&[u8]]) -> u64 {
        let mut h = Fnv::new();
        for p in parts {
            h.update(p);
            h.update(&[0xff]);
        }
        h.0
    }
}

/// Longest `Idempotency-Key` taken, in bytes.
const KEY_BYTES_MAX: usize = 256;

/// The request's idempotency key for its route (method and path), if it has one, and
/// the header as given (for the audit log).
fn idempotency_key(req: &Request<Incoming>) -> Result<Option<(u64, String)>, Answer> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let v = v.as_bytes();
    if v.is_empty() || v.len() > KEY_BYTES_MAX {
        return Err(json_error(
            400,
            &format!("Idempotency-Key: 1 to {KEY_BYTES_MAX} bytes"),
        ));
    }
    let hash = Fnv::of(&[
        req.method().as_str().as_bytes(),
        req.uri().path().as_bytes(),
        v,
    ]);
    Ok(Some((hash, String::from_utf8_lossy(v).into_owned())))
}

/// Most bytes of a change's body written to the audit log.
const AUDIT_BODY_BYTES: usize = 512;

/// The audit line of a change made (or refused, or replayed) on the endpoint.
fn audit(method: &Method, path: &str, key: Option<&str>, status: u16, change: &str) {
    let change = match change.char_indices().nth(AUDIT_BODY_BYTES) {
        Some((at, _)) => format!("{}…", &change[..at]),
        None => change.to_string(),
    };
    tracing::info!(
        target: "gyro::audit",
        route = %format!("{method} {path}"),
        idempotency_key = key.unwrap_or(""),
        status,
        change = %change.trim_end(),
        "operations change"
    );
}

/// How long a shard may take over a batch of provisioning lines or an export.
const BULK_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks shard `i` alone.
async fn ask_one<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    i: usize,
    timeout: Duration,
    make: impl FnOnce(Sender<T>) -> AdminCmd + Send + 'static,
) -> Option<T> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = bounded(1);
        ctx.shards.get(i)?.send(make(tx)).ok()?;
        rx.recv_timeout(timeout).ok()
    })
    .await
    .ok()
    .flatten()
}

/// Asks every shard, waiting up to `timeout` for each.
async fn ask_all<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    timeout: Duration,
    make: impl Fn(Sender<T>) -> AdminCmd + Send + 'static,
) -> Option<Vec<T>> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let mut waiting = Vec::with_capacity(ctx.shards.len());
        {
            let _order = ctx
                .send_order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for shard in &ctx.shards {
                let (tx, rx) = bounded(1);
                shard.send(make(tx)).ok()?;
                waiting.push(rx);
            }
        }
        waiting
            .into_iter()
            .map(|rx| rx.recv_timeout(timeout).ok())
            .collect()
    })
    .await
    .ok()
    .flatten()
}

/// The answer kept under key `key` (shard 0 keeps them): `Ok(None)` when the key is
/// new, the first answer when `body` is the same, 422 when it is not.
async fn replayed(ctx: &Arc<Ctx>, key: u64, body: u64) -> Result<Option<Answer>, Answer> {
    let Some(entry) = ask_one(ctx, 0, SHARD_TIMEOUT, move |tx| AdminCmd::Key(key, tx)).await else {
        return Err(json_error(503, "the shard did not answer"));
    };
    match entry {
        Some(e) if e.key.body != body => Err(json_error(422, KEY_REUSED)),
        // The change was made; its answer was not kept (the server stopped between the
        // two): the caller answers again from the state now, changing nothing.
        Some(e) if e.status == 0 => Ok(None),
        Some(e) => {
            let mut r = reply(
                e.status,
                "application/json",
                String::from_utf8_lossy(&e.answer).into_owned(),
            );
            r.headers_mut().insert(
                "idempotent-replayed",
                hyper::header::HeaderValue::from_static("true"),
            );
            Ok(Some(r))
        }
        None => Ok(None),
    }
}

/// Most bytes of an answer kept under an idempotency key.
const KEPT_ANSWER_BYTES_MAX: usize = 256 * 1024;

/// Keeps the answer to a change under its key (not a 5xx: the call may be retried).
async fn keep(ctx: &Arc<Ctx>, op: OpKey, r: &Reply) {
    // A 5xx or a 409 (try again later) is not the call's answer for good.
    if r.status >= 500 || r.status == 409 {
        return;
    }
    let answer = if r.body.len() <= KEPT_ANSWER_BYTES_MAX {
        r.body.clone().into_bytes()
    } else {
        format!(
            "{{\"error\":\"the first answer under this Idempotency-Key was larger than {KEPT_ANSWER_BYTES_MAX} bytes and is not kept; the change was made\"}}\n"
        )
        .into_bytes()
    };
    let status = r.status;
    let kept = ask_one(ctx, 0, SHARD_TIMEOUT, move |tx| {
        AdminCmd::RecordKey(op, status, answer, tx)
    })
    .await;
    if kept.is_none() {
        tracing::warn!(target: "gyro::audit", "an idempotency key's answer was not kept (shard 0 did not answer)");
    }
}

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>, alive: Arc<Alive>) -> Answer {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let customer_data = matches!(
        parts.first(),
        Some(&("companies" | "subscribers" | "provisioning"))
    );
    if customer_data {
        if let Err(refused) = authorize(&req, ctx.token.as_deref()) {
            return refused;
        }
    }
    let method = req.method().clone();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["metrics"]) => match ask_async(&ctx, AdminCmd::Metrics).await {
            Some(parts) => {
                let mut families = crate::prom::merge(parts);
                families.push(crate::prom::build_info());
                reply(200, crate::prom::CONTENT_TYPE, crate::prom::encode(families))
            }
            None => json_error(503, "the shard did not answer"),
        },
        (&Method::GET, ["healthz"]) => match ask_async(&ctx, AdminCmd::Metrics).await {
            Some(_) => reply(200, "text/plain", "ok\n".into()),
            None => reply(503, "text/plain", "shard not answering\n".into()),
        },
        (&Method::GET, ["companies"]) => match ask_async(&ctx, AdminCmd::Companies).await {
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
        (&Method::GET, ["companies", id]) => {
            let id = id.to_string();
            match company_async(&ctx, id.clone()).await {
                Some(Some(c)) => reply(200, "application/json", c.json() + "\n"),
                Some(None) => json_error(404, &format!("no company {id:?}")),
                None => json_error(503, "the shard did not answer"),
            }
        }
        (&Method::GET, ["subscribers", msisdn]) => {
            let Some(key) = digits_key(msisdn) else {
                return json_error(400, "the MSISDN: 1 to 15 digits");
            };
            match ask_one(&ctx, 0, SHARD_TIMEOUT, move |tx| AdminCmd::Subscriber(key, tx)).await {
                Some(Some(line)) => reply(200, "application/json", line + "\n"),
                Some(None) => json_error(404, &format!("no subscriber with MSISDN {msisdn}")),
                None => json_error(503, "the shard did not answer"),
            }
        }
        (&Method::GET, ["provisioning"]) => export(&ctx).await,
        (&Method::POST, ["provisioning"]) => provisioning(req, ctx, alive).await,
        (&Method::POST, ["companies", _, "topup" | "packages" | "adjust"])
        | (&Method::PUT, ["companies", _] | ["subscribers", _])
        | (&Method::DELETE, ["subscribers", _]) => {
            let key = match idempotency_key(&req) {
                Ok(k) => k,
                Err(refused) => return refused,
            };
            let parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
            let body = match body(req, ctx.limits).await {
                Ok(b) => b,
                Err(refused) => return refused,
            };
            let op = key.as_ref().map(|(key, _)| OpKey {
                key: *key,
                body: Fnv::of(&[&body]),
            });
            let key_text = key.map(|(_, k)| k);
            // The change runs to its end (answer kept, audit line written) even if the
            // client goes meanwhile.
            let ctx = ctx.clone();
            let task = tokio::spawn(async move {
                let key_text = key_text.as_deref();
                let said = String::from_utf8_lossy(&body).into_owned();
                let _order = ctx.write.lock().await;
                if let Some(op) = op {
                    match replayed(&ctx, op.key, op.body).await {
                        Ok(Some(first)) => {
                            audit(
                                &method,
                                &path,
                                key_text,
                                first.status().as_u16(),
                                "the first answer given again; nothing changed",
                            );
                            return first;
                        }
                        Ok(None) => {}
                        Err(refused) => {
                            audit(
                                &method,
                                &path,
                                key_text,
                                refused.status().as_u16(),
                                "refused: the key came with another body",
                            );
                            return refused;
                        }
                    }
                }
                let r = mutate(&ctx, &method, &parts, body, op).await;
                if let Some(op) = op {
                    keep(&ctx, op, &r).await;
                }
                let change = if r.status == 200 {
                    said
                } else {
                    format!("refused: {} ({said})", r.body.trim_end())
                };
                audit(&method, &path, key_text, r.status, &change);
                r.answer()
            });
            task.await
                .unwrap_or_else(|_| json_error(500, "the change stopped unexpectedly"))
        }
        (_, ["companies" | "subscribers" | "provisioning", ..]) => json_error(
            405,
            "not a route of this path: see docs/operations.md",
        ),
        _ => json_error(
            404,
            "unknown route: GET /metrics, /healthz, /companies, /companies/{id}, /subscribers/{msisdn}, /provisioning; PUT /companies/{id}, /subscribers/{msisdn}; DELETE /subscribers/{msisdn}; POST /provisioning, /companies/{id}/topup, /companies/{id}/packages, /companies/{id}/adjust",
        ),
    }
}

/// A change on one object (the write lock held).
async fn mutate(
    ctx: &Arc<Ctx>,
    method: &Method,
    parts: &[String],
    mut body: Vec<u8>,
    op: Option<OpKey>,
) -> Reply {
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["companies", id, "topup"]) => {
            let amount = simd_json::to_borrowed_value(&mut body)
                .ok()
                .and_then(|v| v.get("amount").and_then(|a| a.as_i64()));
            let Some(amount) = amount else {
                return Reply::error(
                    400,
                    "the body must be {\"amount\": N} with N an integer in micro-units",
                );
            };
            let company = id.to_string();
            let answers = ask_all(ctx, SHARD_TIMEOUT, move |tx| {
                AdminCmd::TopUp(company.clone(), amount, op, tx)
            })
            .await;
            money_answer(ctx, id, answers).await
        }
        (&Method::POST, ["companies", id, "adjust"]) => {
            let parsed = simd_json::to_borrowed_value(&mut body).ok().and_then(|v| {
                let amount = v.get("amount")?.as_i64()?;
                let reason = v.get("reason")?.as_str()?.to_string();
                Some((amount, reason))
            });
            let Some((amount, reason)) = parsed else {
                return Reply::error(
                    400,
                    "the body must be {\"amount\": N, \"reason\": \"…\"} with N a non-zero integer in micro-units",
                );
            };
            let company = id.to_string();
            let answers = ask_all(ctx, SHARD_TIMEOUT, move |tx| AdminCmd::Adjust {
                company: company.clone(),
                amount,
                reason: reason.clone(),
                op,
                reply: tx,
            })
            .await;
            money_answer(ctx, id, answers).await
        }
        (&Method::POST, ["companies", id, "packages"]) => {
            // Every shard adds it (in the same order, so the same index); the owner
            // holds its units. They all judge it alike.
            let company = id.to_string();
            let answers = ask_all(ctx, SHARD_TIMEOUT, move |tx| {
                AdminCmd::AddPackage(company.clone(), body.clone(), tx)
            })
            .await;
            let Some(answers) = answers else {
                return Reply::error(503, "a shard did not answer");
            };
            if let Some((status, e)) = answers.into_iter().find_map(Result::err) {
                return Reply::error(status, &e);
            }
            company_reply(ctx, id).await
        }
        (&Method::PUT, ["companies", id]) => {
            let line = match object_line(&mut body, "company", "id", id) {
                Ok(l) => l,
                Err(e) => return Reply::error(400, &e),
            };
            match provision_one(ctx, line).await {
                Ok(_) => company_reply(ctx, id).await,
                Err(r) => r,
            }
        }
        (&Method::PUT, ["subscribers", msisdn]) => {
            if digits_key(msisdn).is_none() {
                return Reply::error(400, "the MSISDN: 1 to 15 digits");
            }
            let line = match object_line(&mut body, "subscriber", "msisdn", msisdn) {
                Ok(l) => l,
                Err(e) => return Reply::error(400, &e),
            };
            match provision_one(ctx, line.clone()).await {
                Ok(_) => Reply::json(200, String::from_utf8_lossy(&line).into_owned() + "\n"),
                Err(r) => r,
            }
        }
        (&Method::DELETE, ["subscribers", msisdn]) => {
            if digits_key(msisdn).is_none() {
                return Reply::error(400, "the MSISDN: 1 to 15 digits");
            }
            let line =
                format!("{{\"type\":\"subscriber\",\"msisdn\":\"{msisdn}\",\"delete\":true}}");
            match provision_one(ctx, line.into_bytes()).await {
                Ok(_) => Reply::json(200, format!("{{\"deleted\":\"{msisdn}\"}}\n")),
                Err(r) => r,
            }
        }
        _ => Reply::error(404, "unknown route"),
    }
}

/// The answer to a top-up or an adjustment: the company now, or why not.
async fn money_answer(
    ctx: &Arc<Ctx>,
    id: &str,
    answers: Option<Vec<Result<bool, String>>>,
) -> Reply {
    let Some(answers) = answers else {
        return Reply::error(503, "a shard did not answer");
    };
    if let Some(e) = answers.into_iter().find_map(Result::err) {
        let status = if e.starts_with("no company") {
            404
        } else if e == KEY_REUSED {
            422
        } else if e.contains("retry later") {
            409
        } else {
            400
        };
        return Reply::error(status, &e);
    }
    company_reply(ctx, id).await
}

async fn company_reply(ctx: &Arc<Ctx>, id: &str) -> Reply {
    match company_async(ctx, id.to_string()).await {
        Some(Some(c)) => Reply::json(200, c.json() + "\n"),
        Some(None) => Reply::error(404, &format!("no company {id:?}")),
        None => Reply::error(503, "a shard did not answer"),
    }
}

/// A REST body as a provisioning line: the object with its `type`, and its key
/// member (`key`) taken from the path (a body naming another is refused).
fn object_line(body: &mut [u8], kind: &str, key: &str, value: &str) -> Result<Vec<u8>, String> {
    let mut v = simd_json::to_owned_value(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        return Err("expected a JSON object".into());
    };
    match obj.get("type").map(|t| t.as_str()) {
        None => {}
        Some(Some(t)) if t == kind => {}
        Some(_) => return Err(format!("type: expected {kind:?}")),
    }
    match obj.get(key).map(|k| k.as_str()) {
        None => {}
        Some(Some(k)) if k == value => {}
        Some(_) => return Err(format!("{key}: the path names {value:?}")),
    }
    obj.insert("type".into(), simd_json::OwnedValue::from(kind));
    obj.insert(key.into(), simd_json::OwnedValue::from(value));
    simd_json::to_vec(&v).map_err(|e| e.to_string())
}

/// One provisioning line through every shard.
async fn provision_one(ctx: &Arc<Ctx>, line: Vec<u8>) -> Result<Applied, Reply> {
    let results = ask_all(ctx, SHARD_TIMEOUT, move |tx| {
        AdminCmd::Provision(vec![line.clone()], tx)
    })
    .await
    .ok_or_else(|| Reply::error(503, "a shard did not answer"))?;
    match agreed(results).into_iter().next() {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => {
            let status = if e.starts_with("no subscriber") {
                404
            } else {
                400
            };
            Err(Reply::error(status, &e))
        }
        None => Err(Reply::error(503, "a shard did not answer")),
    }
}

/// Shard 0's results; every shard holds the same provisioning and judges a change
/// alike, and one that did not is reported loudly (the shards disagree from then on).
fn agreed(mut results: Vec<Vec<Result<Applied, String>>>) -> Vec<Result<Applied, String>> {
    if results.is_empty() {
        return Vec::new();
    }
    let first = results.swap_remove(0);
    for other in &results {
        for (i, (a, b)) in first.iter().zip(other).enumerate() {
            if a.is_ok() != b.is_ok() {
                tracing::error!(
                    target: "gyro",
                    "the shards judged provisioning line {} of a batch differently ({a:?}, {b:?}): export the provisioning and restart from it",
                    i + 1
                );
            }
        }
    }
    first
}

/// The slowest a provisioning body may come, on average, after its first
/// `admin_timeout_ms` (changes from other clients wait while it is read).
const STREAM_BYTES_PER_S_MIN: f64 = 64.0 * 1024.0;

/// Lines sent to the shards at a time, and bytes at most.
const BATCH_LINES: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// Rejected lines listed in a provisioning answer, at most (all are counted).
const REJECTED_LISTED_MAX: usize = 100_000;

/// What a provisioning stream came to so far.
#[derive(Default)]
struct Tally {
    applied: u64,
    rejected: Vec<(usize, String)>,
    rejected_total: u64,
}

impl Tally {
    fn reject(&mut self, line: usize, error: String) {
        self.rejected_total += 1;
        if self.rejected.len() < REJECTED_LISTED_MAX {
            self.rejected.push((line, error));
        }
    }
}

impl Tally {
    fn json(&self, error: Option<&str>) -> String {
        let mut s = format!("{{\"applied\":{},\"rejected\":[", self.applied);
        for (i, (line, e)) in self.rejected.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"line\":{line},\"error\":{}}}",
                crate::json_quote(e)
            ));
        }
        s.push(']');
        s.push_str(&format!(",\"rejected_total\":{}", self.rejected_total));
        if let Some(e) = error {
            s.push_str(&format!(",\"error\":{}", crate::json_quote(e)));
        }
        s.push_str("}\n");
        s
    }
}

/// A batch of lines through every shard, in order.
async fn send_batch(
    ctx: &Arc<Ctx>,
    batch: &mut Vec<(usize, Vec<u8>)>,
    tally: &mut Tally,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let numbers: Vec<usize> = batch.iter().map(|(n, _)| *n).collect();
    let lines: Vec<Vec<u8>> = batch.drain(..).map(|(_, l)| l).collect();
    let lines = Arc::new(lines);
    let results = ask_all(ctx, BULK_TIMEOUT, move |tx| {
        AdminCmd::Provision(lines.as_ref().clone(), tx)
    })
    .await
    .ok_or("a shard did not answer")?;
    for (n, r) in numbers.into_iter().zip(agreed(results)) {
        match r {
            Ok(_) => tally.applied += 1,
            Err(e) => tally.reject(n, e),
        }
    }
    Ok(())
}

/// A provisioning body cut into lines as it comes, sent to the shards in batches.
#[derive(Default)]
struct Lines {
    tally: Tally,
    /// The line being read (at most `LINE_BYTES_MAX`).
    partial: Vec<u8>,
    /// The line being read is too long: its bytes are passed over up to its end.
    too_long: bool,
    /// Lines read so far (every line counts, blank ones too).
    number: usize,
    batch: Vec<(usize, Vec<u8>)>,
    batch_bytes: usize,
}

impl Lines {
    async fn take(&mut self, ctx: &Arc<Ctx>, data: &[u8], end: bool) -> Result<(), String> {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let head = &rest[..nl];
            rest = &rest[nl + 1..];
            if self.too_long || self.partial.len() + head.len() > LINE_BYTES_MAX {
                self.number += 1;
                self.tally.reject(
                    self.number,
                    format!("the line is longer than {LINE_BYTES_MAX} bytes"),
                );
                self.too_long = false;
                self.partial.clear();
                continue;
            }
            self.partial.extend_from_slice(head);
            let line = self.partial.trim_ascii();
            // The end of the body after a newline is no line of its own.
            if end && line.is_empty() {
                continue;
            }
            self.number += 1;
            if !line.is_empty() {
                self.batch_bytes += line.len();
                self.batch.push((self.number, line.to_vec()));
            }
            self.partial.clear();
            if self.batch.len() >= BATCH_LINES || self.batch_bytes >= BATCH_BYTES {
                self.batch_bytes = 0;
                send_batch(ctx, &mut self.batch, &mut self.tally).await?;
            }
        }
        if !self.too_long {
            if self.partial.len() + rest.len() > LINE_BYTES_MAX {
                self.too_long = true;
                self.partial.clear();
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        Ok(())
    }
}

/// `POST /provisioning`: NDJSON, streamed and applied in batches as it comes.
async fn provisioning(req: Request<Incoming>, ctx: Arc<Ctx>, alive: Arc<Alive>) -> Answer {
    let (key, key_text) = match idempotency_key(&req) {
        Ok(Some((k, text))) => (Some(k), Some(text)),
        Ok(None) => (None, None),
        Err(refused) => return refused,
    };
    let limits = ctx.limits;
    if req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limits.provisioning_bytes)
    {
        return json_error(
            413,
            &format!(
                "the body is larger than {} bytes",
                limits.provisioning_bytes
            ),
        );
    }
    let _order = ctx.write.lock().await;
    let mut body = req.into_body();
    let mut hash = Fnv::new();
    // A key used before: the body is read (not applied) to compare it.
    if let Some(key) = key {
        let entry = ask_one(&ctx, 0, SHARD_TIMEOUT, move |tx| AdminCmd::Key(key, tx)).await;
        let Some(entry) = entry else {
            return json_error(503, "the shard did not answer");
        };
        if entry.is_some() {
            let mut read = 0u64;
            loop {
                alive.extend(tokio::time::Instant::now() + limits.timeout * 2);
                match tokio::time::timeout(limits.timeout, body.frame()).await {
                    Err(_) => return json_error(408, "the body did not arrive in time"),
                    Ok(None) => break,
                    Ok(Some(Err(_))) => return json_error(400, "cannot read the body"),
                    Ok(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            read += data.len() as u64;
                            if read > limits.provisioning_bytes {
                                return json_error(413, "the body is too large");
                            }
                            hash.update(data);
                        }
                    }
                }
            }
            let answer = match replayed(&ctx, key, hash.0).await {
                Ok(Some(first)) => first,
                Ok(None) => json_error(
                    409,
                    "the change under this Idempotency-Key was made; its answer was not kept",
                ),
                Err(refused) => refused,
            };
            audit(
                &Method::POST,
                "/provisioning",
                key_text.as_deref(),
                answer.status().as_u16(),
                "retried under its key: answered from the key, nothing changed",
            );
            return answer;
        }
    }
    let mut lines = Lines::default();
    let mut read = 0u64;
    let mut failed: Option<(u16, String)> = None;
    let started = tokio::time::Instant::now();
    loop {
        // Changes wait while a stream is read: after its first `timeout`, it must come
        // at `STREAM_BYTES_PER_S_MIN` on average.
        let elapsed = started.elapsed();
        if elapsed > limits.timeout
            && (read as f64) < elapsed.as_secs_f64() * STREAM_BYTES_PER_S_MIN
        {
            failed = Some((
                408,
                format!(
                    "the body came slower than {} KiB/s",
                    STREAM_BYTES_PER_S_MIN as u64 / 1024
                ),
            ));
            break;
        }
        alive.extend(tokio::time::Instant::now() + limits.timeout * 2);
        match tokio::time::timeout(limits.timeout, body.frame()).await {
            Err(_) => {
                failed = Some((408, "the body did not arrive in time".into()));
                break;
            }
            Ok(Some(Err(_))) => {
                failed = Some((400, "cannot read the body".into()));
                break;
            }
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                read += data.len() as u64;
                if read > limits.provisioning_bytes {
                    failed = Some((
                        413,
                        format!(
                            "the body is larger than {} bytes",
                            limits.provisioning_bytes
                        ),
                    ));
                    break;
                }
                hash.update(&data);
                if let Err(e) = lines.take(&ctx, &data, false).await {
                    failed = Some((503, e));
                    break;
                }
            }
            Ok(None) => {
                // The last line may come without its newline.
                if let Err(e) = lines.take(&ctx, b"\n", true).await {
                    failed = Some((503, e));
                } else if let Err(e) = send_batch(&ctx, &mut lines.batch, &mut lines.tally).await {
                    failed = Some((503, e));
                }
                break;
            }
        }
    }
    lines.tally.rejected.sort_by_key(|(n, _)| *n);
    let tally = &lines.tally;
    let finish = |status: u16, error: Option<&str>| Reply::json(status, tally.json(error));
    let r = match &failed {
        None => finish(200, None),
        Some((status, e)) => finish(
            *status,
            Some(&format!(
                "{e}: the lines before were applied (see applied and rejected)"
            )),
        ),
    };
    if let Some(key) = key {
        if failed.is_none() {
            keep(&ctx, OpKey { key, body: hash.0 }, &r).await;
        }
    }
    audit(
        &Method::POST,
        "/provisioning",
        key_text.as_deref(),
        r.status,
        &format!(
            "{} lines applied, {} rejected ({} bytes){}",
            lines.tally.applied,
            lines.tally.rejected.len(),
            read,
            failed
                .as_ref()
                .map_or(String::new(), |(_, e)| format!("; stopped: {e}"))
        ),
    );
    r.answer()
}

/// `GET /provisioning`: the current state as a dataset (NDJSON), every company's
/// balance its available plus reserved money over the shards.
async fn export(ctx: &Arc<Ctx>) -> Answer {
    let Some(parts) = ask_all(ctx, BULK_TIMEOUT, AdminCmd::Export).await else {
        return json_error(503, "a shard did not answer");
    };
    let Some(dataset) = merge_exports(parts) else {
        return json_error(500, "the shards hold different provisioning");
    };
    let mut out = Vec::new();
    if write_ndjson(&dataset, &mut out).is_err() {
        return json_error(500, "the export could not be written");
    }
    let mut r = Response::new(Full::new(Bytes::from(out)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}
