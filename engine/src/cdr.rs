//! CDRs: one JSON object per line for every CCR, written into a caller-owned buffer
//! without allocation (the CDR log appends them straight into a mapped segment).
//! The schema is in `docs/cdr.md`.

use crate::diameter::avp::Address;
use crate::diameter::ccr::{Ccr, RequestType, RequestedAction};
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

    /// The escaped characters of a string, without quotes.
    fn escaped(&mut self, s: &str) {
        text(self, s);
    }

    pub fn u64(&mut self, v: u64) {
        number(self, v);
        self.comma = true;
    }
    pub fn i64(&mut self, v: i64) {
        signed(self, v);
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

    /// A member whose value is JSON text already (a compact object), written as it is.
    pub fn field_raw(&mut self, k: &str, json: &[u8]) {
        self.key(k);
        self.raw(json);
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
/// `\\`. Eight bytes at a time, the last word overlapping the one before it; 4 to 7
/// bytes as two overlapping halves of one word.
#[inline(never)]
fn needs_escape(b: &[u8]) -> bool {
    let n = b.len();
    let load = |c: &[u8; 8]| u64::from_le_bytes(*c);
    if let Some(last) = b.last_chunk::<8>() {
        let mut found = escapes(load(last));
        for c in b[..n - 1].chunks_exact(8) {
            found |= escapes(load(c.first_chunk::<8>().unwrap_or(&[b' '; 8])));
        }
        found != 0
    } else if n >= 4 {
        let a = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let z = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        escapes(u64::from(a) | u64::from(z) << 32) != 0
    } else {
        b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
    }
}

/// The high bit of every byte of a word of 8 that is below 0x20, `"` or `\\`; 0 if
/// none is (the classic "has a byte less than n / equal to c" word tricks). Flipping
/// bit 1 turns `"` (0x22) into 0x20 and leaves the control characters below 0x20,
/// so one "less than 0x21" test finds both.
#[inline(always)]
fn escapes(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let y = x ^ (ONES * 0x02);
    let below = y.wrapping_sub(ONES * 0x21) & !y;
    let z = x ^ (ONES * u64::from(b'\\'));
    let backslash = z.wrapping_sub(ONES) & !z;
    (below | backslash) & HIGH
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

/// Formats into a stack buffer (addresses are at most 45 characters).
pub(crate) fn fmt_into<'s>(buf: &'s mut [u8; 64], args: core::fmt::Arguments<'_>) -> &'s str {
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

/// Where a CDR line is written: `JsonWriter`, which checks every write against its
/// buffer, or `Line`, a window of known size whose writes need no check of their own.
/// `line` writes a CDR through either.
trait Out {
    /// Appends a literal.
    fn lit<const N: usize>(&mut self, b: &[u8; N]);
    /// Appends bytes of any length.
    fn bytes(&mut self, b: &[u8]);
    /// Where the next byte goes.
    fn at(&self) -> usize;
    /// Appends again what was written at `from..to` (a value needed twice).
    fn repeat(&mut self, from: usize, to: usize);
}

impl Out for JsonWriter<'_> {
    #[inline(always)]
    fn lit<const N: usize>(&mut self, b: &[u8; N]) {
        self.raw(b);
    }
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.raw(b);
    }
    #[inline(always)]
    fn at(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn repeat(&mut self, from: usize, to: usize) {
        JsonWriter::repeat(self, from, to);
    }
}

/// A line written by `Line` must be shorter than this; a longer one is written again
/// by `JsonWriter`.
const ROOM: usize = 2048;

/// The writer of the common CDR line: a window of twice `ROOM` bytes. Every write
/// starts at or before `ROOM` (the position is clamped there), so a literal of at most
/// `ROOM` bytes always fits and is stored without a bounds check; a line that reaches
/// `ROOM` has been clamped, and is reported by `at` as too long.
struct Line<'b> {
    buf: &'b mut [u8; 2 * ROOM],
    at: usize,
}

impl Out for Line<'_> {
    #[inline(always)]
    fn lit<const N: usize>(&mut self, b: &[u8; N]) {
        const { assert!(N <= ROOM) };
        let p = self.at.min(ROOM);
        self.buf[p..p + N].copy_from_slice(b);
        self.at = p + N;
    }
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        let p = self.at.min(ROOM);
        if b.len() > ROOM {
            self.at = 2 * ROOM;
            return;
        }
        copy(&mut self.buf[p..p + b.len()], b);
        self.at = p + b.len();
    }
    #[inline(always)]
    fn at(&self) -> usize {
        self.at
    }
    #[inline(always)]
    fn repeat(&mut self, from: usize, to: usize) {
        let p = self.at.min(ROOM);
        if from <= to && to <= p && to - from <= ROOM {
            let (before, after) = self.buf.split_at_mut(p);
            copy(&mut after[..to - from], &before[from..to]);
            self.at = p + (to - from);
        } else {
            self.at = 2 * ROOM;
        }
    }
}

/// The bytes of a string literal as an array, for `lit!`.
const fn array<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    assert!(b.len() == N);
    let mut a = [0u8; N];
    let mut i = 0;
    while i < N {
        a[i] = b[i];
        i += 1;
    }
    a
}

/// Appends a literal made of string literals, as one fixed-size write.
macro_rules! lit {
    ($o:expr, $($s:expr),+ $(,)?) => {{
        const S: &str = concat!($($s),+);
        const A: [u8; S.len()] = array(S);
        $o.lit(&A)
    }};
}

/// The escaped characters of a string, without quotes. Almost every string needs no
/// escaping: one check (out of line), one copy.
#[inline(always)]
fn text<O: Out>(o: &mut O, s: &str) {
    if needs_escape(s.as_bytes()) {
        escaped_slow(o, s);
    } else {
        o.bytes(s.as_bytes());
    }
}

/// A string with characters to escape.
#[cold]
#[inline(never)]
fn escaped_slow<O: Out>(o: &mut O, s: &str) {
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
        o.bytes(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            o.lit(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            o.bytes(esc);
        }
        start = i + 1;
    }
    o.bytes(&bytes[start..]);
}

/// After the member name `$k` (written with the opening quote in one literal), the
/// value `$v` written by `$write` (`text`: escaped; `hex`) in quotes, or `null`.
macro_rules! opt_quoted {
    ($o:expr, $k:expr, $v:expr, $write:ident) => {
        match $v {
            Some(v) => {
                lit!($o, $k, "\"");
                $write($o, v);
                lit!($o, "\"");
            }
            None => lit!($o, $k, "null"),
        }
    };
}

/// A number or `null`.
#[inline(always)]
fn opt_number<O: Out>(o: &mut O, v: Option<u64>) {
    match v {
        Some(n) => number(o, n),
        None => lit!(o, "null"),
    }
}

/// A number in decimal. Most numbers of a CDR (shard, rating group, result codes,
/// reporting reason, small costs) have at most four digits: those are written as
/// fixed-size stores; longer ones out of line (`number_long`).
#[inline(always)]
fn number<O: Out>(o: &mut O, n: u64) {
    if n < 10_000 {
        short(o, n);
    } else {
        number_long(o, n);
    }
}

/// A number below 10,000, as fixed-size stores from a table of digit pairs.
#[inline(always)]
fn short<O: Out>(o: &mut O, n: u64) {
    match n {
        0..=9 => o.lit(&[b'0' + n as u8]),
        10..=99 => o.lit(&pair(n)),
        100..=999 => {
            let [a, b] = pair(n);
            o.lit(&[b'0' + (n / 100) as u8, a, b]);
        }
        _ => four(o, n),
    }
}

/// The last four decimal digits of `n`.
#[inline(always)]
fn four<O: Out>(o: &mut O, n: u64) {
    let ([a, b], [c, d]) = (pair(n / 100), pair(n));
    o.lit(&[a, b, c, d]);
}

/// A number of five to eight digits (quotas, usage, costs): its high part and its
/// last four digits.
#[inline(always)]
fn number_long<O: Out>(o: &mut O, n: u64) {
    if n < 100_000_000 {
        short(o, n / 10_000);
        four(o, n % 10_000);
    } else {
        number_huge(o, n);
    }
}

/// A number of nine digits or more: up to sixteen (timestamps in milliseconds) as its
/// high part and its last eight digits; longer ones through `itoa`.
#[inline(never)]
fn number_huge<O: Out>(o: &mut O, n: u64) {
    if n < 10_000_000_000_000_000 {
        let high = n / 100_000_000;
        if high < 10_000 {
            short(o, high);
        } else {
            short(o, high / 10_000);
            four(o, high % 10_000);
        }
        let low = n % 100_000_000;
        four(o, low / 10_000);
        four(o, low % 10_000);
    } else {
        let mut b = itoa::Buffer::new();
        o.bytes(b.format(n).as_bytes());
    }
}

#[inline(always)]
fn signed<O: Out>(o: &mut O, n: i64) {
    if n < 0 {
        lit!(o, "-");
    }
    number(o, n.unsigned_abs());
}

/// Bytes in hex (User-Location-Info and RAT type are short; at most the first 64
/// bytes are written). Hex digits need no escaping.
#[inline(never)]
fn hex<O: Out>(o: &mut O, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in &bytes[..bytes.len().min(64)] {
        o.lit(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

/// An address as text, or `null`.
#[inline(never)]
fn address<O: Out>(o: &mut O, a: Option<Address<'_>>) {
    let mut buf = [0u8; 64];
    let s = match a {
        None => return lit!(o, "null"),
        Some(Address::V4(v)) => {
            fmt_into(&mut buf, format_args!("{}", core::net::Ipv4Addr::from(v)))
        }
        Some(Address::V6(v)) => {
            fmt_into(&mut buf, format_args!("{}", core::net::Ipv6Addr::from(v)))
        }
        Some(Address::E164(d)) => core::str::from_utf8(d).unwrap_or(""),
    };
    lit!(o, "\"");
    text(o, s);
    lit!(o, "\"");
}

/// The line billing gets for a session that supervision closed (Tcc) without its
/// CCR-T: its reservations went back, nothing was charged. No trailing newline (the log
/// frames records).
pub fn write_expired(
    session_id: &str,
    seq: u64,
    shard: u16,
    ts_ms: u64,
    company: &str,
    buf: &mut [u8],
) -> Result<usize, BufferFull> {
    let mut w = JsonWriter::new(buf);
    w.begin_object();
    w.key("id");
    w.raw(b"\"");
    w.escaped(session_id);
    w.raw(b"#expired\"");
    w.comma = true;
    w.field_str("kind", "supervision_timeout");
    w.field_u64("seq", seq);
    w.field_u64("shard", u64::from(shard));
    w.field_u64("ts", ts_ms);
    w.field_str("session_id", session_id);
    w.field_str("company", company);
    w.key("services");
    w.begin_array();
    w.end_array();
    w.end_object();
    w.finish()
}

/// Writes one CDR as a JSON line (ending in `\n`) into `buf`; returns its length.
/// The line's fixed parts (keys, punctuation) are written as whole literals. A buffer
/// of `2 * ROOM` bytes or more takes a line shorter than `ROOM` through `Line`; any
/// other line is written by `JsonWriter`.
pub fn write_cdr(cdr: &Cdr<'_>, buf: &mut [u8]) -> Result<usize, BufferFull> {
    if let Some(window) = buf.first_chunk_mut::<{ 2 * ROOM }>() {
        let mut l = Line { buf: window, at: 0 };
        line(cdr, &mut l);
        if l.at < ROOM {
            return Ok(l.at);
        }
    }
    let mut w = JsonWriter::new(buf);
    line(cdr, &mut w);
    w.finish()
}

#[inline(always)]
fn line<O: Out>(cdr: &Cdr<'_>, o: &mut O) {
    let c = cdr.ccr;
    // The id is stable when the same CCR is retried: Session-Id and CC-Request-Number.
    lit!(o, "{\"id\":\"");
    let id_at = o.at();
    text(o, c.session_id);
    let id_end = o.at();
    lit!(o, "#");
    number(o, u64::from(c.request_number));
    match cdr.kind {
        CdrKind::Ccr => lit!(o, "\",\"kind\":\"ccr\",\"seq\":"),
        CdrKind::SupervisionTimeout => lit!(o, "\",\"kind\":\"supervision_timeout\",\"seq\":"),
    }
    number(o, cdr.seq);
    lit!(o, ",\"shard\":");
    number(o, u64::from(cdr.shard));
    lit!(o, ",\"ts\":");
    number(o, cdr.ts_ms);
    lit!(o, ",\"session_id\":\"");
    // The Session-Id as escaped for the id above.
    o.repeat(id_at, id_end);
    lit!(o, "\",\"origin_host\":\"");
    text(o, c.origin_host);
    match c.request_type {
        RequestType::Initial => lit!(o, "\",\"request_type\":\"initial\",\"request_number\":"),
        RequestType::Update => lit!(o, "\",\"request_type\":\"update\",\"request_number\":"),
        RequestType::Termination => {
            lit!(o, "\",\"request_type\":\"termination\",\"request_number\":")
        }
        RequestType::Event => lit!(o, "\",\"request_type\":\"event\",\"request_number\":"),
    }
    number(o, u64::from(c.request_number));
    // What an event did (its Requested-Action, DIRECT_DEBITING when absent); null for
    // a session's requests.
    if c.request_type == RequestType::Event {
        match c
            .requested_action
            .unwrap_or(RequestedAction::DirectDebiting)
        {
            RequestedAction::DirectDebiting => {
                lit!(o, ",\"requested_action\":\"direct_debiting\"")
            }
            RequestedAction::RefundAccount => lit!(o, ",\"requested_action\":\"refund_account\""),
            RequestedAction::CheckBalance => lit!(o, ",\"requested_action\":\"check_balance\""),
            RequestedAction::PriceEnquiry => lit!(o, ",\"requested_action\":\"price_enquiry\""),
        }
    } else {
        lit!(o, ",\"requested_action\":null");
    }
    opt_quoted!(o, ",\"msisdn\":", cdr.msisdn, text);
    opt_quoted!(o, ",\"imsi\":", cdr.imsi, text);
    opt_quoted!(o, ",\"company\":", cdr.company, text);
    lit!(o, ",\"result_code\":");
    number(o, u64::from(cdr.result_code));
    lit!(o, ",\"services\":[");
    for (i, s) in cdr.services.iter().enumerate() {
        if i == 0 {
            lit!(o, "{\"rating_group\":");
        } else {
            lit!(o, ",{\"rating_group\":");
        }
        opt_number(o, s.rating_group.map(u64::from));
        lit!(o, ",\"service_identifier\":");
        opt_number(o, s.service_identifier.map(u64::from));
        match s.unit {
            Some(Unit::Octets) => lit!(o, ",\"unit\":\"octets\",\"requested\":"),
            Some(Unit::Seconds) => lit!(o, ",\"unit\":\"seconds\",\"requested\":"),
            Some(Unit::Units) => lit!(o, ",\"unit\":\"units\",\"requested\":"),
            None => lit!(o, ",\"unit\":null,\"requested\":"),
        }
        number(o, s.requested);
        lit!(o, ",\"granted\":");
        number(o, s.granted);
        lit!(o, ",\"used\":");
        number(o, s.used);
        lit!(o, ",\"cost\":");
        signed(o, s.cost);
        opt_quoted!(o, ",\"package\":", s.package, text);
        lit!(o, ",\"package_units\":");
        number(o, s.package_units);
        lit!(o, ",\"result_code\":");
        number(o, u64::from(s.result_code));
        lit!(o, ",\"reporting_reason\":");
        opt_number(o, s.reporting_reason.map(u64::from));
        if s.overuse {
            lit!(o, ",\"overuse\":true}");
        } else {
            lit!(o, ",\"overuse\":false}");
        }
    }
    // 3GPP fields the request carried (PS-Information).
    let ps = &c.ps;
    lit!(o, "],\"charging_id\":");
    opt_number(o, ps.charging_id.map(u64::from));
    opt_quoted!(o, ",\"apn\":", ps.called_station_id, text);
    opt_quoted!(o, ",\"rat_type\":", ps.rat_type, hex);
    opt_quoted!(o, ",\"location\":", ps.user_location_info, hex);
    opt_quoted!(
        o,
        ",\"mcc_mnc\":",
        ps.sgsn_mcc_mnc.or(ps.imsi_mcc_mnc),
        text
    );
    lit!(o, ",\"sgsn_address\":");
    address(o, ps.sgsn_address.or(ps.sgw_address));
    lit!(o, "}\n");
}

#[cfg(test)]
mod tests {
    use super::needs_escape;
    use proptest::prelude::*;

    /// Strings of every kind a CDR carries: empty, short, around the word sizes, around
    /// `ROOM` and beyond, with characters to escape and non-ASCII ones.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9.;-]{0,40}",
            2 => "[a-z\"\\\\\u{1}\t\né€😀]{0,40}",
            1 => "[a-z]{1900,2100}",
            1 => "[a-z\"]{300,700}",
        ]
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![0..10_000u64, 10_000..100_000_000u64, any::<u64>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The fast writer (`Line`) writes exactly what the checked one (`JsonWriter`)
        /// writes, and hands a line of `ROOM` bytes or more to it.
        #[test]
        fn both_writers_write_the_same_line(
            session_id in text(),
            origin_host in text(),
            company in proptest::option::of(text()),
            package in proptest::option::of(text()),
            apn in proptest::option::of(text()),
            location in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
            numbers in proptest::array::uniform8(number()),
            cost in any::<i64>(),
            services in 0usize..4,
            supervision in any::<bool>(),
        ) {
            use super::*;
            use crate::diameter::ccr::sample_ccr_update;
            let mut ccr = sample_ccr_update();
            ccr.session_id = &session_id;
            ccr.origin_host = &origin_host;
            ccr.request_number = numbers[0] as u32;
            ccr.ps.called_station_id = apn.as_deref();
            ccr.ps.user_location_info = location.as_deref();
            ccr.ps.sgsn_address = Some(Address::V4([10, 0, 0, numbers[1] as u8]));
            let service = CdrService {
                rating_group: Some(numbers[2] as u32),
                unit: Some(Unit::Octets),
                requested: numbers[3],
                granted: numbers[4],
                used: numbers[5],
                cost,
                package: package.as_deref(),
                package_units: numbers[6],
                result_code: 2001,
                reporting_reason: Some(3),
                ..CdrService::default()
            };
            let svc = [service; 3];
            let cdr = Cdr {
                kind: if supervision { CdrKind::SupervisionTimeout } else { CdrKind::Ccr },
                seq: numbers[7],
                shard: 1,
                ts_ms: numbers[1],
                ccr: &ccr,
                msisdn: Some("491701234567"),
                imsi: None,
                company: company.as_deref(),
                result_code: 2001,
                services: &svc[..services],
            };
            let mut fast = vec![0u8; 2 * ROOM];
            let mut checked = vec![0u8; 64 * 1024];
            let mut w = JsonWriter::new(&mut checked);
            line(&cdr, &mut w);
            let n = w.finish().unwrap();
            let mut bytes = checked[..n - 1].to_vec();
            prop_assert!(simd_json::to_owned_value(&mut bytes).is_ok());
            match write_cdr(&cdr, &mut fast) {
                Ok(m) => prop_assert_eq!(&fast[..m], &checked[..n]),
                // Too long for a buffer of `2 * ROOM`: refused, never cut short.
                Err(BufferFull) => prop_assert!(n > 2 * ROOM),
            }
            let mut l = Line { buf: fast.first_chunk_mut().unwrap(), at: 0 };
            line(&cdr, &mut l);
            prop_assert_eq!(l.at < ROOM, n < ROOM, "the fast writer takes a line iff it is shorter than ROOM");
        }
    }

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
