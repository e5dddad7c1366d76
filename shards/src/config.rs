//! `gyro serve`'s configuration: a TOML file (`--config`), then environment variables,
//! then flags, each overriding the one before. Every key is optional; `docs/serve.md`
//! lists them with their defaults.

use gyro_engine::charging::engine::Bounds;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Durability of the CDR log (docs/segment-format.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Records sit in the page cache: they survive a crash of gyro, not of the machine.
    None,
    /// The log is synced every `sync_interval_ms`.
    Interval,
    /// Group commit: a batch's CDRs are synced before any of its answers is sent.
    Tick,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Interval => "interval",
            Durability::Tick => "tick",
        }
    }
}

/// What runs a shard (docs/serve.md, "Runtime"): gyro's own loop per shard over epoll
/// (`evloop`), in which nothing allocates per request. The glommio runtime gyro had
/// before was slower and allocated per turn; it was removed (docs/serve.md says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Epoll,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Epoll => "epoll",
        }
    }
}

/// Everything `gyro serve` can be told.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub origin_host: String,
    pub origin_realm: String,
    /// Diameter listen address.
    pub listen: String,
    /// Operations endpoint (HTTP).
    pub admin: String,
    /// Bearer token the operations endpoint's mutating calls and reads of customer
    /// data require.
    pub admin_token: Option<String>,
    /// Operations endpoint limits: open connections (more are closed at once), bytes
    /// of a request's head (request line and headers), headers per request, bytes of a
    /// body, and how long a client may take to send a request's head or body (and how
    /// long an idle connection stays open).
    pub admin_connections_max: usize,
    pub admin_head_bytes_max: usize,
    pub admin_headers_max: usize,
    pub admin_body_bytes_max: usize,
    pub admin_timeout_ms: u64,
    /// Log lines as text or JSON (`GYRO_LOG_FORMAT`, `--log-format`).
    pub log_format: crate::logging::LogFormat,
    /// Bytes of a `POST /provisioning` body (streamed: it is not held whole; each part
    /// must come within `admin_timeout_ms` of the last).
    pub admin_provisioning_bytes_max: u64,
    /// Origin-Hosts allowed to connect; empty allows any peer.
    pub allowed_peers: Vec<String>,
    pub shards: usize,
    /// First CPU to pin shard 0 to; shard i runs on `first_cpu + i`.
    pub first_cpu: usize,
    pub data_dir: PathBuf,
    /// Provisioning NDJSON; none loads the built-in demo dataset.
    pub dataset: Option<PathBuf>,
    pub durability: Durability,
    /// What runs each shard.
    pub runtime: Runtime,
    pub sync_interval_ms: u64,
    pub segment_size_mib: usize,
    pub default_quota_octets: u64,
    pub default_quota_seconds: u64,
    pub default_quota_units: u64,
    /// Validity-Time of grants; sessions silent for twice as long (Tcc) expire.
    pub validity_time_s: u32,
    /// RFC 3539 Tw (jittered by ±2 s, or a quarter of Tw when that is less).
    pub watchdog_ms: u64,
    /// How long a new connection may stay silent before its CER.
    pub capabilities_timeout_ms: u64,
    /// How long a started message may take to arrive whole (CONFORMANCE row 4).
    pub frame_deadline_ms: u64,
    pub sessions_max: usize,
    pub message_size_max: u32,
    /// Bytes of answers that may wait for one peer's socket before it is cut off.
    pub tx_buffer_bytes: usize,
    /// Connections per shard; more are refused.
    pub connections_max: usize,
    /// Seconds between engine snapshots (taken when the log moved; 0: only at stop).
    pub snapshot_interval_s: u64,
    /// At start, move a segment with a corrupt record aside instead of refusing to start.
    pub quarantine: bool,
    /// Bounds on what a peer's values may move (`docs/charging.md`, "Bounds"): usage
    /// beyond the grant by more than this share of it (percent) is answered 5004.
    pub overuse_allowance_percent: u32,
    /// The most one grant gives, per unit kind.
    pub grant_max_octets: u64,
    pub grant_max_seconds: u64,
    pub grant_max_units: u64,
    /// The most one refund credits (micro-units); more is answered 5004.
    pub refund_max_micros: i64,
}

impl ServeConfig {
    /// The bounds the shards hold requests to.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            overuse_allowance_percent: self.overuse_allowance_percent,
            grant_max_octets: self.grant_max_octets,
            grant_max_seconds: self.grant_max_seconds,
            grant_max_units: self.grant_max_units,
            refund_max_micros: self.refund_max_micros,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            origin_host: "ocs.gyro.local".into(),
            origin_realm: "gyro.local".into(),
            listen: "0.0.0.0:3868".into(),
            admin: "127.0.0.1:9868".into(),
            admin_token: None,
            admin_connections_max: 1024,
            admin_head_bytes_max: 16 * 1024,
            admin_headers_max: 64,
            admin_body_bytes_max: 64 * 1024,
            admin_timeout_ms: 10_000,
            admin_provisioning_bytes_max: 1 << 30,
            log_format: crate::logging::LogFormat::Text,
            allowed_peers: Vec::new(),
            shards: 1,
            first_cpu: 0,
            data_dir: PathBuf::from("gyro-data"),
            dataset: None,
            durability: Durability::None,
            runtime: Runtime::Epoll,
            sync_interval_ms: 10,
            segment_size_mib: 64,
            default_quota_octets: 10 << 20,
            default_quota_seconds: 600,
            default_quota_units: 1,
            validity_time_s: 600,
            watchdog_ms: 30_000,
            capabilities_timeout_ms: 10_000,
            frame_deadline_ms: 10_000,
            sessions_max: 1_000_000,
            message_size_max: 65_536,
            tx_buffer_bytes: 1 << 20,
            connections_max: 1024,
            snapshot_interval_s: 300,
            quarantine: false,
            overuse_allowance_percent: Bounds::default().overuse_allowance_percent,
            grant_max_octets: Bounds::default().grant_max_octets,
            grant_max_seconds: Bounds::default().grant_max_seconds,
            grant_max_units: Bounds::default().grant_max_units,
            refund_max_micros: Bounds::default().refund_max_micros,
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ServeConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Applies `GYRO_*` environment variables (`GYRO_ADMIN_TOKEN`, `GYRO_ORIGIN_HOST`,
    /// `GYRO_ORIGIN_REALM`, `GYRO_LISTEN`, `GYRO_ADMIN`, `GYRO_DATA_DIR`, `GYRO_DATASET`,
    /// `GYRO_RUNTIME`); a value that cannot be used is an error naming the variable.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("GYRO_ADMIN_TOKEN").filter(|v| !v.is_empty()) {
            self.admin_token = Some(v);
        }
        if let Some(v) = get("GYRO_ORIGIN_HOST") {
            self.origin_host = v;
        }
        if let Some(v) = get("GYRO_ORIGIN_REALM") {
            self.origin_realm = v;
        }
        if let Some(v) = get("GYRO_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("GYRO_ADMIN") {
            self.admin = v;
        }
        if let Some(v) = get("GYRO_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("GYRO_DATASET") {
            self.dataset = Some(v.into());
        }
        if let Some(v) = get("GYRO_LOG_FORMAT") {
            self.log_format = v
                .parse()
                .map_err(|e| ConfigError(format!("GYRO_LOG_FORMAT={e}")))?;
        }
        if let Some(v) = get("GYRO_RUNTIME") {
            self.runtime = match v.as_str() {
                "epoll" => Runtime::Epoll,
                "glommio" => {
                    return Err(ConfigError(
                        "GYRO_RUNTIME=glommio: the glommio runtime was removed; epoll is \
                         faster and allocates nothing per request (docs/serve.md)"
                            .into(),
                    ))
                }
                _ => return Err(ConfigError(format!("GYRO_RUNTIME={v:?}: must be epoll"))),
            };
        }
        Ok(())
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.origin_host.is_empty() || self.origin_realm.is_empty() {
            return bad("origin_host and origin_realm must not be empty".into());
        }
        if self.shards == 0 {
            return bad("shards must be at least 1".into());
        }
        if self.overuse_allowance_percent > 1000 {
            return bad(format!(
                "overuse_allowance_percent = {}: at most 1000",
                self.overuse_allowance_percent
            ));
        }
        if self.grant_max_octets == 0 || self.grant_max_seconds == 0 || self.grant_max_units == 0 {
            return bad(
                "grant_max_octets, grant_max_seconds and grant_max_units must be at least 1".into(),
            );
        }
        if self.refund_max_micros < 0 {
            return bad(format!(
                "refund_max_micros = {}: must not be negative",
                self.refund_max_micros
            ));
        }
        if self.shards > 64 {
            return bad(format!("shards = {}: at most 64", self.shards));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "listen = {:?}: not an address like 0.0.0.0:3868",
                self.listen
            ));
        }
        if self.admin.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "admin = {:?}: not an address like 127.0.0.1:9868",
                self.admin
            ));
        }
        if !(4096..=16 << 20).contains(&self.message_size_max) {
            return bad(format!(
                "message_size_max = {}: must be between 4096 and 16777216",
                self.message_size_max
            ));
        }
        if self.segment_size_mib == 0 || self.segment_size_mib > 4096 {
            return bad(format!(
                "segment_size_mib = {}: must be between 1 and 4096",
                self.segment_size_mib
            ));
        }
        if self.durability == Durability::Interval && self.sync_interval_ms == 0 {
            return bad("sync_interval_ms must be at least 1 with durability interval".into());
        }
        if self.validity_time_s == 0 || self.watchdog_ms < 1000 {
            return bad("validity_time_s must be at least 1 and watchdog_ms at least 1000".into());
        }
        if self.capabilities_timeout_ms < 100 || self.frame_deadline_ms < 100 {
            return bad(
                "capabilities_timeout_ms and frame_deadline_ms must be at least 100".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_what_it_names_and_defaults_stay() {
        let c: ServeConfig = toml::from_str(
            "origin_host = \"ocs1.example\"\ndurability = \"tick\"\nallowed_peers = [\"pgw1\"]\n",
        )
        .unwrap();
        assert_eq!(c.origin_host, "ocs1.example");
        assert_eq!(c.durability, Durability::Tick);
        assert_eq!(c.allowed_peers, vec!["pgw1".to_string()]);
        assert_eq!(c.listen, "0.0.0.0:3868");
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = toml::from_str::<ServeConfig>("orign_host = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("orign_host"), "{e}");
        let e = toml::from_str::<ServeConfig>("durability = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let c = ServeConfig {
            listen: "nowhere".into(),
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().0.contains("listen"));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let mut c = ServeConfig::default();
        c.apply_env(|k| match k {
            "GYRO_ADMIN_TOKEN" => Some("s3cret".into()),
            "GYRO_ORIGIN_HOST" => Some("ocs9".into()),
            "GYRO_RUNTIME" => Some("epoll".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
        assert_eq!(c.origin_host, "ocs9");
        assert_eq!(c.runtime, Runtime::Epoll);
        let e = c
            .apply_env(|k| (k == "GYRO_RUNTIME").then(|| "tokio".into()))
            .unwrap_err();
        assert!(e.0.contains("GYRO_RUNTIME"), "{e}");
        let e = c
            .apply_env(|k| (k == "GYRO_RUNTIME").then(|| "glommio".into()))
            .unwrap_err();
        assert!(e.0.contains("removed"), "{e}");
    }
}
