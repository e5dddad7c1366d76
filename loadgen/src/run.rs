//! `gyro-loadgen run`: Gy traffic against any Diameter Credit-Control server.
//!
//! Each connection is one client peer (CER/CEA, DWR answered, DPR at the end) that
//! keeps `window` sessions in flight, each with one request outstanding at a time, as
//! a network element does. Connections are spread over `threads` event loops (epoll
//! through mio, non-blocking sockets; one thread drives several connections). Traffic
//! is a mix of data sessions (CCR-I, U…U, CCR-T with two MSCC), voice sessions
//! (CC-Time), SMS events (CCR-EVENT, direct debiting) and refunds (CCR-EVENT,
//! REFUND_ACCOUNT); events carry their service in an MSCC as TS 32.299 Ro clients do,
//! or at the top level (RFC 8506) with `EventForm::TopLevel`. Every answer is checked:
//! it must answer an outstanding request (Hop-by-Hop and End-to-End), carry its
//! Session-Id, CC-Request-Type and CC-Request-Number, and a Result-Code. Sessions
//! follow their answers: a failed CCR-I ends the session, a failed CCR-U or a
//! Final-Unit-Indication sends the CCR-T.
//!
//! Closed loop by default (as fast as the window allows); with `--rate` an open loop on
//! a fixed schedule, latency measured from each request's scheduled time, so a server
//! that stalls shows it in the latency instead of hiding it (coordinated omission). The
//! event loop wakes for the next due send (epoll to within a millisecond, then a short
//! spin), so requests leave within microseconds of their time; how late each left (the
//! schedule lag) is measured and reported beside the latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::conn::Conn;

/// Shares of the traffic mix, in sessions or events started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub data: u32,
    pub voice: u32,
    pub sms: u32,
    pub refund: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            data: 85,
            voice: 10,
            sms: 5,
            refund: 0,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    /// `data=80,voice=10,sms=10,refund=0` (missing kinds are 0).
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut m = Mix {
            data: 0,
            voice: 0,
            sms: 0,
            refund: 0,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KIND=SHARE"))?;
            let v: u32 = v
                .parse()
                .map_err(|_| format!("{part:?}: the share must be a whole number"))?;
            match k {
                "data" => m.data = v,
                "voice" => m.voice = v,
                "sms" => m.sms = v,
                "refund" => m.refund = v,
                _ => return Err(format!("{k:?}: kinds are data, voice, sms, refund")),
            }
        }
        if m.data + m.voice + m.sms + m.refund == 0 {
            return Err("the mix is empty".into());
        }
        Ok(m)
    }
}

/// Where an event (SMS, refund) carries its service and units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventForm {
    /// Service-Identifier and Requested-Service-Unit inside a
    /// Multiple-Services-Credit-Control (3GPP TS 32.299, as Ro clients send them).
    #[default]
    ThreeGpp,
    /// Both at the top level of the CCR (RFC 8506 single-service credit control).
    TopLevel,
}

impl std::str::FromStr for EventForm {
    type Err = String;
    fn from_str(s: &str) -> Result<EventForm, String> {
        match s {
            "3gpp" => Ok(EventForm::ThreeGpp),
            "top-level" => Ok(EventForm::TopLevel),
            _ => Err(format!("{s:?}: the forms are 3gpp and top-level")),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub target: SocketAddr,
    /// MSISDNs to charge (from the dataset).
    pub msisdns: Arc<Vec<String>>,
    pub connections: usize,
    /// Event-loop threads the connections are spread over (at most one per connection).
    pub threads: usize,
    /// Sessions in flight per connection (one request outstanding each).
    pub window: usize,
    pub duration: Option<Duration>,
    /// Sessions (and events) to run in all; with `duration`, whichever ends first.
    pub sessions: Option<u64>,
    /// CCR/s over all connections (open loop); `None` runs closed loop.
    pub rate: Option<f64>,
    pub mix: Mix,
    pub event_form: EventForm,
    pub updates: u32,
    pub origin_host: String,
    pub origin_realm: String,
    pub destination_realm: String,
    pub tx_timeout: Duration,
    /// Print a progress line every second.
    pub progress: bool,
    /// Counters the caller can watch while the run goes.
    pub live: Option<Arc<Live>>,
    /// When set, the id of every answered request (`SESSION-ID#CC-REQUEST-NUMBER`, the
    /// CDR id gyro gives it) is added here: for tests that match answers to CDRs.
    pub answered_ids: Option<Arc<std::sync::Mutex<Vec<String>>>>,
}

impl RunSpec {
    /// A closed-loop run of `sessions` sessions and events against `target`, charging
    /// the subscribers of `gyro serve`'s built-in dataset: 1 connection, window 64, the
    /// default mix, two updates per session, a 10 s Tx timeout. Change what a run
    /// needs with struct update syntax.
    pub fn new(target: SocketAddr, sessions: u64) -> RunSpec {
        RunSpec {
            target,
            msisdns: Arc::new((0..10_000).map(crate::dataset::msisdn).collect()),
            connections: 1,
            threads: 1,
            window: 64,
            duration: None,
            sessions: Some(sessions),
            rate: None,
            mix: Mix::default(),
            event_form: EventForm::ThreeGpp,
            updates: 2,
            origin_host: "pgw.loadgen.gyro".into(),
            origin_realm: "loadgen.gyro".into(),
            destination_realm: "gyro.local".into(),
            tx_timeout: Duration::from_secs(10),
            progress: false,
            live: None,
            answered_ids: None,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub elapsed: Duration,
    pub requests: u64,
    pub answers: u64,
    pub answers_by_result: Vec<(u32, u64)>,
    pub check_failures: u64,
    /// The first few check failures, described.
    pub failures: Vec<String>,
    pub timeouts: u64,
    pub sessions_started: u64,
    pub sessions_completed: u64,
    pub connection_errors: Vec<String>,
    /// Microseconds.
    pub latency: Histogram<u64>,
    /// Latency of the answers received in each second of the run (microseconds, two
    /// significant digits).
    pub per_second: Vec<Histogram<u64>>,
    /// Open loop: how late each request left after its scheduled time (microseconds),
    /// the generator's own error; sends the window held are not in it.
    pub schedule_lag: Histogram<u64>,
    /// The schedule lag of the sends in each second of the run.
    pub lag_per_second: Vec<Histogram<u64>>,
    /// Open loop: sends that fell due while every session of their connection waited
    /// for an answer (the server, not the generator, held them; `--window` too small
    /// for the rate and the server's latency).
    pub held_by_window: u64,
}

impl RunReport {
    pub fn ccr_per_s(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Why the latency of an open-loop run may not be the server's alone, if it may
    /// not: the generator sent late by a noticeable share of the latency it measured,
    /// or the window held sends back.
    pub fn lag_warning(&self, spec: &RunSpec) -> Option<String> {
        spec.rate?;
        let mut why = Vec::new();
        let lag = self.schedule_lag.value_at_quantile(0.99);
        let latency = self.latency.value_at_quantile(0.99);
        if lag > 100 && lag * 5 > latency {
            why.push(format!(
                "the generator's schedule lag (p99 {lag} us) is a large share of the \
                 latency it measured (p99 {latency} us): give it a core of its own, or \
                 more --threads"
            ));
        }
        let sends = self.schedule_lag.len() + self.held_by_window;
        if self.held_by_window * 1000 > sends {
            why.push(format!(
                "the window held {} of {sends} sends until an answer came back: the \
                 latency includes that wait; raise --window",
                self.held_by_window
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// The report as JSON (`--report`).
    pub fn to_json(&self, spec: &RunSpec) -> serde_json::Value {
        let h = &self.latency;
        let answers: serde_json::Map<String, serde_json::Value> = self
            .answers_by_result
            .iter()
            .map(|(c, n)| (c.to_string(), (*n).into()))
            .collect();
        let histogram: Vec<serde_json::Value> = h
            .iter_quantiles(1)
            .map(|v| {
                serde_json::json!({
                    "value_us": v.value_iterated_to(),
                    "quantile": v.quantile_iterated_to(),
                    "count": v.count_since_last_iteration(),
                })
            })
            .collect();
        let lag = &self.schedule_lag;
        serde_json::json!({
            "target": spec.target.to_string(),
            "connections": spec.connections,
            "threads": spec.threads,
            "window": spec.window,
            "mode": if spec.rate.is_some() { "open" } else { "closed" },
            "rate": spec.rate,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests": self.requests,
            "ccr_per_s": self.ccr_per_s(),
            "answers": answers,
            "check_failures": self.check_failures,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "sessions_started": self.sessions_started,
            "sessions_completed": self.sessions_completed,
            "connection_errors": self.connection_errors,
            "latency_us": {
                "p50": h.value_at_quantile(0.5),
                "p90": h.value_at_quantile(0.9),
                "p99": h.value_at_quantile(0.99),
                "p999": h.value_at_quantile(0.999),
                "max": h.max(),
                "mean": h.mean(),
                "histogram": histogram,
            },
            "schedule_lag_us": {
                "p50": lag.value_at_quantile(0.5),
                "p99": lag.value_at_quantile(0.99),
                "p999": lag.value_at_quantile(0.999),
                "max": lag.max(),
                "sends": lag.len(),
                "held_by_window": self.held_by_window,
            },
            "warning": self.lag_warning(spec),
            "timeline": self.per_second.iter().enumerate().map(|(s, h)| {
                let lag = self.lag_per_second.get(s);
                serde_json::json!({
                    "second": s,
                    "answers": h.len(),
                    "p50_us": h.value_at_quantile(0.5),
                    "p99_us": h.value_at_quantile(0.99),
                    "max_us": h.max(),
                    "lag_p99_us": lag.map(|l| l.value_at_quantile(0.99)),
                })
            }).collect::<Vec<_>>(),
        })
    }
}

/// Totals shared by the connections while a run goes: for progress lines and for
/// callers that draw their own (`RunSpec::live`).
#[derive(Debug, Default)]
pub struct Live {
    pub answers: AtomicU64,
    /// Check failures and timeouts.
    pub errors: AtomicU64,
    pub started: AtomicU64,
    /// The largest p99 (microseconds) any connection saw in the last whole second.
    pub p99_us: AtomicU64,
    /// The largest schedule-lag p99 (microseconds) of the last whole second (open loop).
    pub lag_p99_us: AtomicU64,
}

/// Adds `h` into `into`, growing it to `h`'s length (one histogram a second).
fn add_seconds(into: &mut Vec<Histogram<u64>>, from: &[Histogram<u64>]) {
    for (i, h) in from.iter().enumerate() {
        while into.len() <= i {
            into.push(Conn::second_histogram());
        }
        // Same bounds on both sides: adding cannot fail.
        into[i].add(h).expect("histograms of the same bounds");
    }
}

impl RunReport {
    /// Folds one connection's report into the run's.
    fn absorb(&mut self, r: RunReport) {
        self.requests += r.requests;
        self.answers += r.answers;
        self.check_failures += r.check_failures;
        self.timeouts += r.timeouts;
        self.sessions_started += r.sessions_started;
        self.sessions_completed += r.sessions_completed;
        self.held_by_window += r.held_by_window;
        self.failures.extend(r.failures);
        self.connection_errors.extend(r.connection_errors);
        self.latency
            .add(&r.latency)
            .expect("histograms of the same bounds");
        self.schedule_lag
            .add(&r.schedule_lag)
            .expect("histograms of the same bounds");
        add_seconds(&mut self.per_second, &r.per_second);
        add_seconds(&mut self.lag_per_second, &r.lag_per_second);
        for (code, n) in r.answers_by_result {
            match self.answers_by_result.iter_mut().find(|(c, _)| *c == code) {
                Some((_, m)) => *m += n,
                None => self.answers_by_result.push((code, n)),
            }
        }
    }
}

/// Runs the load; blocks until done.
pub fn run(spec: &RunSpec) -> RunReport {
    let live = spec.live.clone().unwrap_or_default();
    let live = &*live;
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let connections = spec.connections.max(1);
    let threads = spec.threads.clamp(1, connections);
    // The identifiers' base: 1/64 of the clock's nanoseconds (see `Conn::send`).
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_nanos() >> 6) as u32);
    let reports: Vec<RunReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                // Thread t drives connections t, t + threads, t + 2·threads…
                let mine: Vec<usize> = (t..connections).step_by(threads).collect();
                scope.spawn(move || crate::evloop::run_thread(spec, &mine, live, stop, start, base))
            })
            .collect();
        // The clock: ends the run at --duration, prints progress each second.
        let mut last = 0u64;
        let mut second = 0u64;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            let t = start.elapsed();
            if spec.duration.is_some_and(|d| t >= d) {
                stop.store(true, Ordering::Relaxed);
            }
            if t.as_secs() > second {
                second = t.as_secs();
                let answers = live.answers.load(Ordering::Relaxed);
                let lag = live.lag_p99_us.swap(0, Ordering::Relaxed);
                if spec.progress {
                    let lag = match spec.rate {
                        Some(_) => format!("  lag p99 {lag:>6} us"),
                        None => String::new(),
                    };
                    eprintln!(
                        "[{second:>4} s] {:>10} CCR/s  p99 {:>7} us{lag}  {:>10} answers  {:>6} errors",
                        answers - last,
                        live.p99_us.swap(0, Ordering::Relaxed),
                        answers,
                        live.errors.load(Ordering::Relaxed)
                    );
                }
                last = answers;
            }
        }
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    let mut r = Conn::new_report();
                    r.connection_errors
                        .push("a generator thread panicked".into());
                    vec![r]
                })
            })
            .collect()
    });
    let mut total = Conn::new_report();
    total.elapsed = start.elapsed();
    for r in reports {
        total.absorb(r);
    }
    total.answers_by_result.sort_unstable();
    total
}
