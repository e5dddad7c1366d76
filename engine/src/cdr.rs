//! CDRs: one JSON object per line for every CCR, written into a caller-owned buffer
//! without allocation (the CDR log appends them straight into a mapped segment).
//! The schema is in `docs/cdr.md`.

use crate::diameter::avp::Address;
use crate::diameter::ccr::{Ccr, RequestType};
use crate::diameter::encode::copy;
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

    /// Appends bytes, or notes that they did not fit. What is written after that does
    /// not matter: `finish` reports the line as not written.
    #[inline(always)]
    fn raw(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(d) => {
                copy(d, bytes);
                self.len = end;
            }
            None => self.full = true,
        }
    }

    /// Appends again what was written at `from..to` (a value needed twice).
    #[inline(always)]
    fn repeat(&mut self, from: usize, to: usize) {
        let end = self.len + (to - from);
        if from <= to && to <= self.len && end <= self.buf.len() {
            self.buf.copy_within(from..to, self.len);
            self.len = end;
        } else {
            self.full = true;
        }
    }

    /// Opens an object; as an array element after another, with the comma before it.
    pub fn begin_object(&mut self) {
        let open: &[u8] = if self.comma { b",{" } else { b"{" };
        self.raw(open);
        self.comma = false;
    }
    pub fn end_object(&mut self) {
        self.raw(b"}");
        self.comma = true;
    }
    pub fn begin_array(&mut self) {
        let open: &[u8] = if self.comma { b",[" } else { b"[" };
        self.raw(open);
        self.comma = false;
    }
    pub fn end_array(&mut self) {
        self.raw(b"]");
        self.comma = true;
    }

    /// A member name (the following value call writes its value). Names are gyro's own
    /// identifiers: they are written as they are, without escaping.
    pub fn key(&mut self, k: &str) {
        debug_assert!(!needs_escape(k.as_bytes()));
        let comma: &[u8] = if self.comma { b",\"" } else { b"\"" };
        self.raw(comma);
        self.raw(k.as_bytes());
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

    /// The escaped characters of a string, without quotes. Almost every string needs no
    /// escaping: one check, one copy; the rest is out of line.
    #[inline(never)]
    fn escaped(&mut self, s: &str) {
        if needs_escape(s.as_bytes()) {
            self.escaped_slow(s);
        } else {
            self.raw(s.as_bytes());
        }
    }

    /// A string with characters to escape.
    #[cold]
    #[inline(never)]
    fn escaped_slow(&mut self, s: &str) {
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
        self.number(v);
        self.comma = true;
    }
    pub fn i64(&mut self, v: i64) {
        self.signed(v);
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

/// Whether any byte must be escaped in a JSON string: a control character, `"` or
/// `\`. Eight bytes at a time (the classic "has a byte less than n / equal to c" word
/// tricks), the tail by overlapping the last word.
#[inline]
fn needs_escape(b: &[u8]) -> bool {
    let n = b.len();
    if n < 8 {
        return b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
    }
    let load = |c: &[u8]| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        if escape_in_word(load(c)) {
            return true;
        }
    }
    !chunks.remainder().is_empty() && escape_in_word(load(&b[n - 8..]))
}

/// Whether a word of 8 bytes holds a byte below 0x20, `"` or `\\` (the classic "has a
/// byte less than n / equal to c" word tricks).
#[inline(always)]
fn escape_in_word(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    let has_quote = quote.wrapping_sub(ONES) & !quote;
    let has_backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | has_quote | has_backslash) & HIGH != 0
}

/// "00" to "99".
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// The last two decimal digits of `v`.
#[inline(always)]
fn pair(v: u64) -> [u8; 2] {
    let i = 2 * (v as usize % 100);
    [PAIRS[i], PAIRS[i + 1]]
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

impl JsonWriter<'_> {
    /// A quoted, escaped string or `null`.
    #[inline]
    fn opt_string(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.raw(b"\"");
                self.escaped(s);
                self.raw(b"\"");
            }
            None => self.raw(b"null"),
        }
    }
    /// A number or `null`.
    #[inline]
    fn opt_number(&mut self, v: Option<u64>) {
        match v {
            Some(n) => self.number(n),
            None => self.raw(b"null"),
        }
    }
    /// A number in decimal. Most numbers of a CDR (shard, rating group, result codes,
    /// reporting reason, small costs) have at most four digits: those are written as
    /// fixed-size stores; longer ones out of line (`number_long`).
    #[inline]
    fn number(&mut self, n: u64) {
        if n < 10_000 {
            self.short(n);
        } else {
            self.number_long(n);
        }
    }
    /// A number below 10,000, as fixed-size stores from a table of digit pairs.
    #[inline(always)]
    fn short(&mut self, n: u64) {
        match n {
            0..=9 => self.raw(&[b'0' + n as u8]),
            10..=99 => self.raw(&pair(n)),
            100..=999 => {
                let [a, b] = pair(n);
                self.raw(&[b'0' + (n / 100) as u8, a, b]);
            }
            _ => {
                let ([a, b], [c, d]) = (pair(n / 100), pair(n));
                self.raw(&[a, b, c, d]);
            }
        }
    }
    /// A number of five digits or more: up to eight (quotas, usage, costs) as its high
    /// part and its last four digits; longer ones (timestamps) through `itoa`.
    #[inline(never)]
    fn number_long(&mut self, n: u64) {
        if n < 100_000_000 {
            self.short(n / 10_000);
            let low = n % 10_000;
            let ([a, b], [c, d]) = (pair(low / 100), pair(low));
            self.raw(&[a, b, c, d]);
        } else {
            let mut b = itoa::Buffer::new();
            self.raw(b.format(n).as_bytes());
        }
    }
    #[inline]
    fn signed(&mut self, n: i64) {
        if n < 0 {
            self.raw(b"-");
        }
        self.number(n.unsigned_abs());
    }
}

/// Writes one CDR as a JSON line (ending in `\n`) into `buf`; returns its length.
/// The line's fixed parts (keys, punctuation) are written as whole literals.
pub fn write_cdr(cdr: &Cdr<'_>, buf: &mut [u8]) -> Result<usize, BufferFull> {
    let c = cdr.ccr;
    let mut w = JsonWriter::new(buf);
    // The id is stable when the same CCR is retried: Session-Id and CC-Request-Number.
    w.raw(b"{\"id\":\"");
    let id_at = w.len;
    w.escaped(c.session_id);
    let id_end = w.len;
    w.raw(b"#");
    w.number(u64::from(c.request_number));
    w.raw(b"\",\"kind\":\"");
    w.raw(cdr.kind.as_str().as_bytes());
    w.raw(b"\",\"seq\":");
    w.number(cdr.seq);
    w.raw(b",\"shard\":");
    w.number(u64::from(cdr.shard));
    w.raw(b",\"ts\":");
    w.number(cdr.ts_ms);
    w.raw(b",\"session_id\":\"");
    // The Session-Id as escaped for the id above.
    w.repeat(id_at, id_end);
    w.raw(b"\",\"origin_host\":\"");
    w.escaped(c.origin_host);
    w.raw(match c.request_type {
        RequestType::Initial => b"\",\"request_type\":\"initial\",\"request_number\":".as_slice(),
        RequestType::Update => b"\",\"request_type\":\"update\",\"request_number\":",
        RequestType::Termination => b"\",\"request_type\":\"termination\",\"request_number\":",
        RequestType::Event => b"\",\"request_type\":\"event\",\"request_number\":",
    });
    w.number(u64::from(c.request_number));
    w.raw(b",\"msisdn\":");
    w.opt_string(cdr.msisdn);
    w.raw(b",\"imsi\":");
    w.opt_string(cdr.imsi);
    w.raw(b",\"company\":");
    w.opt_string(cdr.company);
    w.raw(b",\"result_code\":");
    w.number(u64::from(cdr.result_code));
    w.raw(b",\"services\":[");
    for (i, s) in cdr.services.iter().enumerate() {
        w.raw(if i == 0 {
            b"{\"rating_group\":".as_slice()
        } else {
            b",{\"rating_group\":"
        });
        w.opt_number(s.rating_group.map(u64::from));
        w.raw(b",\"service_identifier\":");
        w.opt_number(s.service_identifier.map(u64::from));
        w.raw(match s.unit {
            Some(Unit::Octets) => b",\"unit\":\"octets\",\"requested\":".as_slice(),
            Some(Unit::Seconds) => b",\"unit\":\"seconds\",\"requested\":",
            Some(Unit::Units) => b",\"unit\":\"units\",\"requested\":",
            None => b",\"unit\":null,\"requested\":",
        });
        w.number(s.requested);
        w.raw(b",\"granted\":");
        w.number(s.granted);
        w.raw(b",\"used\":");
        w.number(s.used);
        w.raw(b",\"cost\":");
        w.signed(s.cost);
        w.raw(b",\"package\":");
        w.opt_string(s.package);
        w.raw(b",\"package_units\":");
        w.number(s.package_units);
        w.raw(b",\"result_code\":");
        w.number(u64::from(s.result_code));
        w.raw(b",\"reporting_reason\":");
        w.opt_number(s.reporting_reason.map(u64::from));
        w.raw(if s.overuse {
            b",\"overuse\":true}".as_slice()
        } else {
            b",\"overuse\":false}"
        });
    }
    // 3GPP fields the request carried (PS-Information).
    let ps = &c.ps;
    w.raw(b"],\"charging_id\":");
    w.opt_number(ps.charging_id.map(u64::from));
    w.raw(b",\"apn\":");
    w.opt_string(ps.called_station_id);
    let mut h = [0u8; 128];
    w.raw(b",\"rat_type\":");
    w.opt_string(ps.rat_type.map(|r| hex(r, &mut h)));
    let mut h2 = [0u8; 128];
    w.raw(b",\"location\":");
    w.opt_string(ps.user_location_info.map(|u| hex(u, &mut h2)));
    w.raw(b",\"mcc_mnc\":");
    w.opt_string(ps.sgsn_mcc_mnc.or(ps.imsi_mcc_mnc));
    w.raw(b",");
    w.comma = false;
    address(&mut w, "sgsn_address", ps.sgsn_address.or(ps.sgw_address));
    w.raw(b"}\n");
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::needs_escape;

    #[test]
    fn objects_in_an_array_are_separated() {
        let mut buf = [0u8; 128];
        let mut w = super::JsonWriter::new(&mut buf);
        w.begin_object();
        w.key("a");
        w.begin_array();
        for i in 0..3 {
            w.begin_object();
            w.field_u64("n", i);
            w.end_object();
        }
        w.end_array();
        w.field_str("b", "x");
        w.end_object();
        let n = w.finish().unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            r#"{"a":[{"n":0},{"n":1},{"n":2}],"b":"x"}"#
        );
    }

    /// Numbers are written as Rust formats them: every value to 20,000 (each short
    /// form and the switch to the long one), the powers of ten, values of five to eight
    /// digits with zeros inside, and the extremes.
    #[test]
    fn numbers_are_written_in_decimal() {
        let mut values: Vec<i64> = (-20_000..=20_000).collect();
        let mut p = 1i64;
        while let Some(next) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1, -p]);
            p = next;
        }
        values.extend([i64::MAX, i64::MIN, i64::MIN + 1]);
        // Five to eight digits are written as a high part and four low digits: zeros
        // inside and at the end of either part.
        values.extend([
            10_485_760, 12_345_678, 10_000_001, 99_990_000, 50_000, 10_010, 10_000_000,
        ]);
        let mut buf = [0u8; 64];
        for v in values {
            let mut w = super::JsonWriter::new(&mut buf);
            w.i64(v);
            let n = w.finish().unwrap();
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), v.to_string());
            if v >= 0 {
                let mut w = super::JsonWriter::new(&mut buf);
                w.u64(v as u64);
                let n = w.finish().unwrap();
                assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), v.to_string());
            }
        }
        let mut w = super::JsonWriter::new(&mut buf);
        w.u64(u64::MAX);
        let n = w.finish().unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            u64::MAX.to_string()
        );
    }

    /// A line that does not fit is reported, never cut short.
    #[test]
    fn a_full_buffer_is_reported() {
        let mut buf = [0u8; 8];
        let mut w = super::JsonWriter::new(&mut buf);
        w.field_str("key", "a longer value");
        w.u64(1);
        assert_eq!(w.finish(), Err(super::BufferFull));
    }

    fn naive(b: &[u8]) -> bool {
        b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
    }

    /// The word-at-a-time check agrees with the byte-wise one: every length to 40, each
    /// byte value at each position, over a background of ordinary and non-ASCII bytes.
    #[test]
    fn escape_check_matches_bytewise() {
        for background in [b'a', 0x7f, 0x80, 0xff, b' ', b'!', b'#', b'[', b']'] {
            for n in 0..40 {
                let base = vec![background; n];
                assert_eq!(
                    needs_escape(&base),
                    naive(&base),
                    "background {background:#x} len {n}"
                );
                for at in 0..n {
                    for v in 0..=255u8 {
                        let mut b = base.clone();
                        b[at] = v;
                        assert_eq!(needs_escape(&b), naive(&b), "len {n} byte {v:#x} at {at}");
                    }
                }
            }
        }
    }
}
