//! gyro's logs: `tracing` events on standard error, each with its time (RFC 3339, UTC)
//! and level, as text or as one JSON object per line (`--log-format`, `log_format`,
//! `GYRO_LOG_FORMAT`). Which levels: `GYRO_LOG` (`tracing_subscriber`'s filter syntax,
//! e.g. `warn` or `info,gyro::peer=debug`), default `info`.
//!
//! Targets: `gyro` (start, stop, recovery, snapshots), `gyro::peer` (a connection's
//! capabilities exchange, watchdog, DPR and close), `gyro::audit` (every change made on
//! the operations endpoint), `gyro::ship` and `gyro::billing` (`gyro ship`, `gyro
//! billing-sink`: progress, retries). Nothing is logged per request.

use std::str::FromStr;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?}: must be text or json")),
        }
    }
}

/// The format from `GYRO_LOG_FORMAT`, if set; an unusable value is an error naming it.
pub fn format_from_env() -> Result<Option<LogFormat>, String> {
    match std::env::var("GYRO_LOG_FORMAT") {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|e| format!("GYRO_LOG_FORMAT={e}")),
        Err(_) => Ok(None),
    }
}

/// Installs the process's log subscriber (once; later calls change nothing).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GYRO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => builder.with_target(true).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // Already installed (a test's second server in one process): that one stays.
    drop(installed);
}
