//! Metrics in the OpenMetrics text format, encoded by `prometheus-client`. The shards and
//! the shipper keep plain counters; at scrape time each one's are read into `Family`
//! values (off the request path), the shards' families are merged by name (every
//! sample carries its `shard` label), and a collector hands them to the encoder.
//!
//! Conventions: counters are named without `_total` (the encoder adds it), times are
//! in seconds and sizes in bytes (in the name), latencies are histograms with the same
//! buckets on every shard so that they aggregate (`sum by (le)`), and no label takes a
//! value per scrape or per request.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of `encode`'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the latency histograms' buckets, +Inf beside.
pub const LATENCY_BUCKETS: [f64; 20] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
    5e-2, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Info,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
    /// Sum, count, and per bucket its upper bound and the observations in it alone
    /// (the last bound `f64::MAX`, written +Inf).
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

/// One metric family: its name, help and type, and its samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample with these labels.
    pub fn with(mut self, labels: &[(&str, &str)], value: Value) -> Family {
        self.push(labels, value);
        self
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: Value) {
        self.samples.push(Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        });
    }
}

/// An HDR histogram of nanoseconds as a Prometheus histogram in seconds
/// (`LATENCY_BUCKETS`); its sum is taken from the recorded values (to the histogram's
/// precision).
pub fn histogram_seconds(h: &hdrhistogram::Histogram<u64>) -> Value {
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
    let mut below = 0u64;
    for bound in LATENCY_BUCKETS {
        let ns = (bound * 1e9) as u64;
        let upto = if h.is_empty() {
            0
        } else {
            h.count_between(0, ns)
        };
        buckets.push((bound, upto.saturating_sub(below)));
        below = below.max(upto);
    }
    // The encoder writes f64::MAX as +Inf.
    buckets.push((f64::MAX, h.len().saturating_sub(below)));
    Value::Histogram {
        sum: h.mean() * h.len() as f64 / 1e9,
        count: h.len(),
        buckets,
    }
}

/// Families from several sources (the shards) as one list: a family once, in the order
/// first seen, with every source's samples.
pub fn merge(parts: Vec<Vec<Family>>) -> Vec<Family> {
    let mut out: Vec<Family> = Vec::new();
    for part in parts {
        for f in part {
            match out.iter_mut().find(|o| o.name == f.name) {
                Some(o) => o.samples.extend(f.samples),
                None => out.push(f),
            }
        }
    }
    out
}

#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
                Kind::Info => MetricType::Info,
            };
            let mut family = encoder.encode_descriptor(f.name, f.help, None, kind)?;
            for s in &f.samples {
                if f.kind == Kind::Info {
                    family.encode_info(&s.labels)?;
                    continue;
                }
                let mut e = family.encode_family(&s.labels)?;
                match (&s.value, f.kind) {
                    (Value::Int(v), Kind::Counter) => ConstCounter::new(*v).encode(e)?,
                    (Value::Float(v), Kind::Counter) => ConstCounter::new(*v).encode(e)?,
                    (Value::Int(v), Kind::Gauge) => {
                        ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(e)?
                    }
                    (Value::Float(v), Kind::Gauge) => ConstGauge::new(*v).encode(e)?,
                    (
                        Value::Histogram {
                            sum,
                            count,
                            buckets,
                        },
                        Kind::Histogram,
                    ) => e.encode_histogram::<()>(*sum, *count, buckets, None)?,
                    // A sample that does not fit its family's type is left out.
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The families as OpenMetrics text (`CONTENT_TYPE`).
pub fn encode(families: Vec<Family>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(families)));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => text,
        Err(_) => "# EOF\n".to_string(),
    }
}

/// `gyro_build_info`: the version gyro was built as.
pub fn build_info() -> Family {
    Family::new("gyro_build", "The gyro build answering.", Kind::Info).with(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("component", "gyro"),
        ],
        Value::Int(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_two_shards_encode_once_with_both_samples() {
        let shard = |s: &str, n: u64| {
            vec![Family::new("gyro_ccr", "CCRs.", Kind::Counter)
                .with(&[("shard", s), ("type", "initial")], Value::Int(n))]
        };
        let text = encode(merge(vec![shard("0", 3), shard("1", 4)]));
        assert_eq!(text.matches("# TYPE gyro_ccr counter").count(), 1, "{text}");
        assert!(
            text.contains("gyro_ccr_total{shard=\"0\",type=\"initial\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gyro_ccr_total{shard=\"1\",type=\"initial\"} 4"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn an_hdr_histogram_becomes_cumulative_buckets_in_seconds() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for ns in [800, 20_000, 20_000, 3_000_000] {
            h.record(ns).unwrap();
        }
        let f = Family::new("gyro_request_seconds", "t", Kind::Histogram)
            .with(&[("shard", "0")], histogram_seconds(&h));
        let text = encode(vec![f]);
        assert!(
            text.contains("gyro_request_seconds_bucket{le=\"0.000001\",shard=\"0\"} 1"),
            "{text}"
        );
        // Cumulative: 20 µs and below holds three.
        assert!(
            text.contains("gyro_request_seconds_bucket{le=\"0.000025\",shard=\"0\"} 3"),
            "{text}"
        );
        assert!(text.contains("le=\"+Inf\",shard=\"0\"} 4"), "{text}");
        assert!(
            text.contains("gyro_request_seconds_count{shard=\"0\"} 4"),
            "{text}"
        );
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("gyro_request_seconds_sum{shard=\"0\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.0030408).abs() < 0.00001, "{sum}");
    }
}
