//! CDRs: one JSON object per line for every CCR, written into a caller-owned buffer
//! without allocation (the CDR log appends them straight into a mapped segment).
//! The schema is in `docs/cdr.md`.

use crate::diameter::avp::Address;
use crate::diameter::ccr::{Ccr, RequestType};
use crate::provision::Unit;

/// What one CDR records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CdrKind {
    /// A Credit-Control-Request and its answer.
    Ccr,
    /// A session whose CCR-T never came, closed by supervision (Tcc).
    SupervisionTimeout,
}

impl CdrKind {
    fn as_str(self) -> &'static str {
        match self {
            CdrKind::Ccr => "ccr",
            CdrKind::SupervisionTimeout => "supervision_timeout",
        }
    }
}

/// One service (MSCC, or the request's single service) of a CDR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CdrService<'a> {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub unit: Option<Unit>,
    pub requested: u64,
    pub granted: u64,
    pub used: u64,
    /// Micro-units charged from money for `used`.
    pub cost: i64,
    /// The package that paid, and how many of its units.
    pub package: Option<&'a str>,
    pub package_units: u64,
    pub result_code: u32,
    pub reporting_reason: Option<u32>,
    /// Usage beyond what was granted (charged all the same).
    pub overuse: bool,
}

/// Everything a CDR line says.
#[derive(Clone, Copy, Debug)]
pub struct Cdr<'a> {
    pub kind: CdrKind,
    pub seq: u64,
    pub shard: u16,
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    pub ccr: &'a Ccr<'a>,
    pub msisdn: Option<&'a str>,
    pub imsi: Option<&'a str>,
    pub company: Option<&'a str>,
    pub result_code: u32,
    pub services: &'a [CdrService<'a>],
}

/// A JSON writer into a fixed buffer; running out of room is reported at `finish`.
#[derive(Debug)]
pub struct JsonWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    full: bool,
    /// Whether the next member of the current object or array needs a comma.
    comma: bool,
}

/// The buffer was too small for the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferFull;

impl<'b> JsonWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> JsonWriter<'b> {
        JsonWriter {
            buf,
            len: 0,
            full: false,
            comma: false,
        }
    }

    #[inline]
    fn raw(&mut self, bytes: &[u8]) {
        if self.full || self.buf.len() - self.len < bytes.len() {
            self.full = true;
            return;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn sep(&mut self) {
        if self.comma {
            self.raw(b",");
        }
        self.comma = true;
    }

    pub fn begin_object(&mut self) {
        self.raw(b"{");
        self.comma = false;
    }
    pub fn end_object(&mut self) {
        self.raw(b"}");
        self.comma = true;
    }
    pub fn begin_array(&mut self) {
        self.raw(b"[");
        self.comma = false;
    }
    pub fn end_array(&mut self) {
        self.raw(b"]");
        self.comma = true;
    }

    /// A member name (the following value call writes its value).
    pub fn key(&mut self, k: &str) {
        self.sep();
        self.raw(b"\"");
        self.escaped(k);
        self.raw(b"\":");
        self.comma = false;
    }

    /// A string value, escaped per RFC 8259 §7.
    pub fn string(&mut self, s: &str) {
        self.raw(b"\"");
        self.escaped(s);
        self.raw(b"\"");
        self.comma = true;
    }

    /// The escaped characters of a string, without quotes.
    fn escaped(&mut self, s: &str) {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => b"",
                _ => continue,
            };
            self.raw(&bytes[start..i]);
            if esc.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.raw(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 15)],
                ]);
            } else {
                self.raw(esc);
            }
            start = i + 1;
        }
        self.raw(&bytes[start..]);
    }

    pub fn u64(&mut self, v: u64) {
        let mut b = itoa::Buffer::new();
        let s = b.format(v);
        self.raw(s.as_bytes());
        self.comma = true;
    }
    pub fn i64(&mut self, v: i64) {
        let mut b = itoa::Buffer::new();
        let s = b.format(v);
        self.raw(s.as_bytes());
        self.comma = true;
    }
    pub fn bool(&mut self, v: bool) {
        self.raw(if v { b"true" } else { b"false" });
        self.comma = true;
    }
    pub fn null(&mut self) {
        self.raw(b"null");
        self.comma = true;
    }

    /// `"k":v` pairs.
    pub fn field_str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.string(v);
    }
    pub fn field_u64(&mut self, k: &str, v: u64) {
        self.key(k);
        self.u64(v);
    }
    pub fn field_i64(&mut self, k: &str, v: i64) {
        self.key(k);
        self.i64(v);
    }
    /// Optional values are written as `null` when absent, so every line has every key.
    pub fn field_opt_str(&mut self, k: &str, v: Option<&str>) {
        self.key(k);
        match v {
            Some(s) => self.string(s),
            None => self.null(),
        }
    }
    pub fn field_opt_u64(&mut self, k: &str, v: Option<u64>) {
        self.key(k);
        match v {
            Some(n) => self.u64(n),
            None => self.null(),
        }
    }

    /// The bytes written, or `BufferFull`.
    pub fn finish(self) -> Result<usize, BufferFull> {
        if self.full {
            Err(BufferFull)
        } else {
            Ok(self.len)
        }
    }
}

/// Hex of bytes into a small fixed buffer (User-Location-Info and RAT type are short).
fn hex<'s>(bytes: &[u8], out: &'s mut [u8; 128]) -> &'s str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = bytes.len().min(out.len() / 2);
    for (i, b) in bytes[..n].iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    // Hex digits are ASCII.
    core::str::from_utf8(&out[..2 * n]).unwrap_or("")
}

fn address(w: &mut JsonWriter<'_>, k: &str, a: Option<Address<'_>>) {
    w.key(k);
    let mut text = [0u8; 64];
    match a {
        None => w.null(),
        Some(Address::V4(v)) => {
            let s = fmt_into(&mut text, format_args!("{}", core::net::Ipv4Addr::from(v)));
            w.string(s);
        }
        Some(Address::V6(v)) => {
            let s = fmt_into(&mut text, format_args!("{}", core::net::Ipv6Addr::from(v)));
            w.string(s);
        }
        Some(Address::E164(d)) => w.string(core::str::from_utf8(d).unwrap_or("")),
    }
}

/// Formats into a stack buffer (addresses are at most 45 characters).
fn fmt_into<'s>(buf: &'s mut [u8; 64], args: core::fmt::Arguments<'_>) -> &'s str {
    struct Cursor<'c> {
        buf: &'c mut [u8; 64],
        len: usize,
    }
    impl core::fmt::Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            if end > self.buf.len() {
                return Err(core::fmt::Error);
            }
            self.buf[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
    let mut c = Cursor { buf, len: 0 };
    let ok = core::fmt::write(&mut c, args).is_ok();
    let len = if ok { c.len } else { 0 };
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Writes one CDR as a JSON line (ending in `\n`) into `buf`; returns its length.
pub fn write_cdr(cdr: &Cdr<'_>, buf: &mut [u8]) -> Result<usize, BufferFull> {
    let c = cdr.ccr;
    let mut w = JsonWriter::new(buf);
    w.begin_object();
    // The id is stable when the same CCR is retried: Session-Id and CC-Request-Number.
    w.key("id");
    let mut number = itoa::Buffer::new();
    w.raw(b"\"");
    w.escaped(c.session_id);
    w.raw(b"#");
    w.raw(number.format(c.request_number).as_bytes());
    w.raw(b"\"");
    w.comma = true;
    w.field_str("kind", cdr.kind.as_str());
    w.field_u64("seq", cdr.seq);
    w.field_u64("shard", u64::from(cdr.shard));
    w.field_u64("ts", cdr.ts_ms);
    w.field_str("session_id", c.session_id);
    w.field_str("origin_host", c.origin_host);
    w.field_str(
        "request_type",
        match c.request_type {
            RequestType::Initial => "initial",
            RequestType::Update => "update",
            RequestType::Termination => "termination",
            RequestType::Event => "event",
        },
    );
    w.field_u64("request_number", u64::from(c.request_number));
    w.field_opt_str("msisdn", cdr.msisdn);
    w.field_opt_str("imsi", cdr.imsi);
    w.field_opt_str("company", cdr.company);
    w.field_u64("result_code", u64::from(cdr.result_code));
    w.key("services");
    w.begin_array();
    for s in cdr.services {
        w.sep();
        w.begin_object();
        w.field_opt_u64("rating_group", s.rating_group.map(u64::from));
        w.field_opt_u64("service_identifier", s.service_identifier.map(u64::from));
        w.field_opt_str("unit", s.unit.map(Unit::as_str));
        w.field_u64("requested", s.requested);
        w.field_u64("granted", s.granted);
        w.field_u64("used", s.used);
        w.field_i64("cost", s.cost);
        w.field_opt_str("package", s.package);
        w.field_u64("package_units", s.package_units);
        w.field_u64("result_code", u64::from(s.result_code));
        w.field_opt_u64("reporting_reason", s.reporting_reason.map(u64::from));
        w.key("overuse");
        w.bool(s.overuse);
        w.end_object();
    }
    w.end_array();
    // 3GPP fields the request carried (PS-Information).
    let ps = &c.ps;
    w.field_opt_u64("charging_id", ps.charging_id.map(u64::from));
    w.field_opt_str("apn", ps.called_station_id);
    let mut h = [0u8; 128];
    w.field_opt_str("rat_type", ps.rat_type.map(|r| hex(r, &mut h)));
    let mut h2 = [0u8; 128];
    w.field_opt_str("location", ps.user_location_info.map(|u| hex(u, &mut h2)));
    w.field_opt_str("mcc_mnc", ps.sgsn_mcc_mnc.or(ps.imsi_mcc_mnc));
    address(&mut w, "sgsn_address", ps.sgsn_address.or(ps.sgw_address));
    w.end_object();
    w.raw(b"\n");
    w.finish()
}
