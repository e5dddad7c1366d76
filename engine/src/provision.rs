//! Provisioning: the tariffs, companies, packages and subscribers gyro charges against,
//! read from NDJSON (one object per line; `docs/provisioning.md`), validated with the
//! line number and field of every bad record, indexed for lookup, and saved to and
//! read from an rkyv snapshot.
//!
//! Money is integers in micro-units of currency; times are Unix seconds. No I/O here:
//! the caller reads the file (or maps it) and hands over the bytes.

use std::collections::HashMap;
use std::fmt;

use rkyv::{Archive, Deserialize, Serialize};
use simd_json::prelude::*;

/// What a tariff or package counts (3GPP TS 32.299: data octets, time, service units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Archive, Serialize, Deserialize)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Unit {
    Octets,
    Seconds,
    Units,
}

impl Unit {
    fn parse(s: &str) -> Option<Unit> {
        match s {
            "octets" => Some(Unit::Octets),
            "seconds" => Some(Unit::Seconds),
            "units" => Some(Unit::Units),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Octets => "octets",
            Unit::Seconds => "seconds",
            Unit::Units => "units",
        }
    }
}

/// A price per block of units for a rating group or a service identifier.
#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Tariff {
    pub rating_group: Option<u32>,
    pub service_identifier: Option<u32>,
    pub unit: Unit,
    /// Units per block; a started block is charged whole.
    pub unit_size: u64,
    /// Micro-units of currency per block.
    pub price: i64,
}

/// The account that pays for its subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Company {
    pub id: String,
    /// Micro-units.
    pub balance: i64,
    /// How far below zero new grants may take the balance, in micro-units (≥ 0).
    pub credit_limit: i64,
    /// Refused service (4010). Not in the dataset snapshot's format: a dataset's barred
    /// companies are journaled when a log starts (and kept in engine snapshots).
    #[rkyv(with = rkyv::with::Skip)]
    pub barred: bool,
}

/// A bundle of units a company bought.
#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Package {
    pub id: String,
    /// Index into `Dataset::companies`.
    pub company: u32,
    pub unit: Unit,
    pub amount: u64,
    /// Empty: every rating group of its unit.
    pub rating_groups: Vec<u32>,
    /// Unix seconds; `None` never expires.
    pub valid_until: Option<i64>,
    /// Lower is used first.
    pub priority: u32,
}

/// A subscriber: its identities as packed digit keys (`digits_key`) and its company.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Subscriber {
    pub msisdn: Option<u64>,
    pub imsi: Option<u64>,
    /// Index into `Dataset::companies`.
    pub company: u32,
    /// Refused service (4010); as for `Company::barred`.
    #[rkyv(with = rkyv::with::Skip)]
    pub barred: bool,
}

/// Everything provisioned, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct Dataset {
    pub tariffs: Vec<Tariff>,
    pub companies: Vec<Company>,
    pub packages: Vec<Package>,
    pub subscribers: Vec<Subscriber>,
}

/// Most digits of an MSISDN (E.164: 15) or IMSI (15) gyro accepts.
pub const IDENTITY_DIGITS_MAX: usize = 15;

/// Packs a string of 1 to 15 decimal digits into a `u64` that keeps its length, so
/// "0123" and "123" differ: the value in the low 56 bits, the length in the top 8.
pub fn digits_key(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > IDENTITY_DIGITS_MAX {
        return None;
    }
    let mut value = 0u64;
    for b in s.bytes() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value * 10 + u64::from(d);
    }
    Some(value | (s.len() as u64) << 56)
}

/// The digits back from a `digits_key`.
pub fn digits_of(key: u64) -> String {
    let len = (key >> 56) as usize;
    format!("{:0len$}", key & ((1 << 56) - 1), len = len)
}

/// One bad record: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    /// 1-based line number.
    pub line: usize,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "line {}, field `{}`: {}", self.line, field, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// How bad records are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Load nothing if any record is bad (the default).
    #[default]
    Reject,
    /// Load the good records and report the bad ones.
    Skip,
}

/// The result of an import.
#[derive(Debug)]
pub struct Import {
    pub dataset: Dataset,
    /// Every bad record; with `OnError::Reject` and errors, `dataset` is empty.
    pub errors: Vec<ImportError>,
}

impl Import {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Errors of one record, collected (a record can be wrong in several fields).
struct Record<'v> {
    line: usize,
    obj: &'v simd_json::borrowed::Object<'v>,
    errors: &'v mut Vec<ImportError>,
    bad: bool,
}

impl Record<'_> {
    fn fail(&mut self, field: Option<&'static str>, message: impl Into<String>) {
        self.bad = true;
        self.errors.push(ImportError {
            line: self.line,
            field,
            message: message.into(),
        });
    }
    fn str(&mut self, field: &'static str) -> Option<&str> {
        match self.obj.get(field) {
            Some(v) => match v.as_str() {
                Some(s) => Some(s),
                None => {
                    self.fail(Some(field), "expected a string");
                    None
                }
            },
            None => {
                self.fail(Some(field), "missing");
                None
            }
        }
    }
    fn opt_u32(&mut self, field: &'static str) -> Option<Option<u32>> {
        match self.obj.get(field) {
            None => Some(None),
            Some(v) if v.is_null() => Some(None),
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => Some(Some(n)),
                None => {
                    self.fail(Some(field), "expected an integer from 0 to 4294967295");
                    None
                }
            },
        }
    }
    fn u64(&mut self, field: &'static str, min: u64) -> Option<u64> {
        match self.obj.get(field).map(|v| v.as_u64()) {
            Some(Some(n)) if n >= min => Some(n),
            Some(Some(_)) => {
                self.fail(Some(field), format!("must be at least {min}"));
                None
            }
            Some(None) => {
                self.fail(Some(field), "expected a non-negative integer");
                None
            }
            None => {
                self.fail(Some(field), "missing");
                None
            }
        }
    }
    fn i64(&mut self, field: &'static str) -> Option<i64> {
        match self.obj.get(field).map(|v| v.as_i64()) {
            Some(Some(n)) => Some(n),
            Some(None) => {
                self.fail(Some(field), "expected an integer (micro-units)");
                None
            }
            None => {
                self.fail(Some(field), "missing");
                None
            }
        }
    }
    fn opt_bool(&mut self, field: &'static str) -> Option<bool> {
        match self.obj.get(field) {
            None => Some(false),
            Some(v) if v.is_null() => Some(false),
            Some(v) => match v.as_bool() {
                Some(b) => Some(b),
                None => {
                    self.fail(Some(field), "expected true or false");
                    None
                }
            },
        }
    }
    fn id(&mut self, field: &'static str) -> Option<String> {
        let id = self.str(field)?.to_owned();
        if id.is_empty() {
            self.fail(Some(field), "must not be empty");
            return None;
        }
        if id.len() > ID_BYTES_MAX {
            self.fail(
                Some(field),
                format!("longer than {ID_BYTES_MAX} bytes ({})", id.len()),
            );
            return None;
        }
        Some(id)
    }
    fn unit(&mut self) -> Option<Unit> {
        let s = self.str("unit")?;
        match Unit::parse(s) {
            Some(u) => Some(u),
            None => {
                self.fail(
                    Some("unit"),
                    "expected \"octets\", \"seconds\" or \"units\"",
                );
                None
            }
        }
    }
}

/// One provisioning object, parsed, before references to other objects are resolved:
/// a line of a dataset, or a change made at run time (`Engine::provision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Tariff(Tariff),
    /// `balance_given`: false when the object has no `balance` (allowed for a company
    /// that exists, whose balance moves only by top-ups and adjustments).
    Company {
        company: Company,
        balance_given: bool,
    },
    Package {
        package: Package,
        company: String,
    },
    Subscriber {
        msisdn: Option<u64>,
        imsi: Option<u64>,
        company: String,
        barred: bool,
    },
    /// `"delete": true` with the subscriber's key alone.
    DeleteSubscriber {
        msisdn: Option<u64>,
        imsi: Option<u64>,
    },
}

use Change as Parsed;

/// Longest company or package id accepted, in bytes.
pub const ID_BYTES_MAX: usize = 256;

/// Deepest nesting of arrays and objects accepted in a provisioning object (the format
/// needs 2). The JSON parser builds values recursively: a line of thousands of `[`
/// would overflow a thread's stack, so it is refused before parsing.
pub const NESTING_MAX: usize = 32;

/// Whether the JSON text's arrays and objects nest at most `max` deep (strings, and
/// escapes in them, are passed over; the text need not be valid).
pub fn nesting_within(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn too_deep(line: usize) -> ImportError {
    ImportError {
        line,
        field: None,
        message: format!("arrays and objects nested more than {NESTING_MAX} deep"),
    }
}

/// Reads provisioning NDJSON. `bytes` is modified in place (simd-json parses in place).
/// Blank lines are ignored.
pub fn import_ndjson(bytes: &mut [u8], on_error: OnError) -> Import {
    import_ndjson_with_progress(bytes, on_error, &mut |_, _| {})
}

/// Lines between two calls of the progress callback.
pub const PROGRESS_EVERY_LINES: usize = 65_536;

/// As `import_ndjson`, calling `progress(bytes_read, bytes_total)` every
/// `PROGRESS_EVERY_LINES` lines and once at the end of parsing.
pub fn import_ndjson_with_progress(
    bytes: &mut [u8],
    on_error: OnError,
    progress: &mut dyn FnMut(usize, usize),
) -> Import {
    let total = bytes.len();
    let mut done = 0usize;
    let mut errors = Vec::new();
    let mut parsed: Vec<(usize, Parsed)> = Vec::new();
    let mut buffers = simd_json::Buffers::new(256);
    let mut line_no = 0usize;
    for line in bytes.split_mut(|&b| b == b'\n') {
        line_no += 1;
        done += line.len() + 1;
        if line_no.is_multiple_of(PROGRESS_EVERY_LINES) {
            progress(done.min(total), total);
        }
        let line = trim_mut(line);
        if line.is_empty() {
            continue;
        }
        if !nesting_within(line, NESTING_MAX) {
            errors.push(too_deep(line_no));
            continue;
        }
        let value = match simd_json::borrowed::to_value_with_buffers(line, &mut buffers) {
            Ok(v) => v,
            Err(e) => {
                errors.push(ImportError {
                    line: line_no,
                    field: None,
                    message: format!("not JSON: {e}"),
                });
                continue;
            }
        };
        let Some(obj) = value.as_object() else {
            errors.push(ImportError {
                line: line_no,
                field: None,
                message: "expected an object".into(),
            });
            continue;
        };
        if let Some(p) = parse_record(line_no, obj, &mut errors) {
            parsed.push((line_no, p));
        }
    }
    progress(total, total);
    let dataset = resolve(parsed, &mut errors);
    if !errors.is_empty() && on_error == OnError::Reject {
        return Import {
            dataset: Dataset::default(),
            errors,
        };
    }
    Import { dataset, errors }
}

/// Reads one provisioning object (a dataset line; `type` may be left out when
/// `default_type` names it, as on a REST route) for a change made at run time, or
/// every problem found, reported on line `line`.
pub fn parse_change(
    bytes: &mut [u8],
    line: usize,
    default_type: Option<&'static str>,
) -> Result<Change, Vec<ImportError>> {
    let bad = |message: String, field: Option<&'static str>| {
        vec![ImportError {
            line,
            field,
            message,
        }]
    };
    if !nesting_within(bytes, NESTING_MAX) {
        return Err(vec![too_deep(line)]);
    }
    let value = match simd_json::to_borrowed_value(bytes) {
        Ok(v) => v,
        Err(e) => return Err(bad(format!("not JSON: {e}"), None)),
    };
    let Some(obj) = value.as_object() else {
        return Err(bad("expected an object".into(), None));
    };
    let mut errors = Vec::new();
    let parsed = match (obj.get("type").and_then(|t| t.as_str()), default_type) {
        (None, Some(t)) => {
            let mut obj = obj.clone();
            obj.insert("type".into(), simd_json::BorrowedValue::from(t));
            parse_record(line, &obj, &mut errors)
        }
        (Some(given), Some(t)) if given != t => {
            return Err(bad(format!("expected {t:?}, got {given:?}"), Some("type")))
        }
        _ => parse_record(line, obj, &mut errors),
    };
    match parsed {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(errors),
    }
}

fn quote(s: &str) -> String {
    simd_json::to_string(&simd_json::OwnedValue::from(s)).unwrap_or_else(|_| "\"\"".into())
}

/// A Unix time as RFC 3339 (UTC).
pub fn format_time(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_s.to_string())
}

/// A tariff as a provisioning line (no newline).
pub fn tariff_line(t: &Tariff) -> String {
    let mut v = String::from("{\"type\":\"tariff\"");
    if let Some(rg) = t.rating_group {
        v.push_str(&format!(",\"rating_group\":{rg}"));
    }
    if let Some(si) = t.service_identifier {
        v.push_str(&format!(",\"service_identifier\":{si}"));
    }
    v.push_str(&format!(
        ",\"unit\":\"{}\",\"unit_size\":{},\"price\":{}}}",
        t.unit.as_str(),
        t.unit_size,
        t.price
    ));
    v
}

/// A company as a provisioning line, with `balance` (micro-units).
pub fn company_line(c: &Company, balance: i64) -> String {
    format!(
        "{{\"type\":\"company\",\"id\":{},\"balance\":{},\"credit_limit\":{}{}}}",
        quote(&c.id),
        balance,
        c.credit_limit,
        if c.barred { ",\"barred\":true" } else { "" }
    )
}

/// A package of company `company` as a provisioning line, with `amount` units.
pub fn package_line(p: &Package, company: &str, amount: u64) -> String {
    let groups: Vec<String> = p.rating_groups.iter().map(u32::to_string).collect();
    let mut v = format!(
        "{{\"type\":\"package\",\"id\":{},\"company\":{},\"unit\":\"{}\",\"amount\":{}",
        quote(&p.id),
        quote(company),
        p.unit.as_str(),
        amount
    );
    if !p.rating_groups.is_empty() {
        v.push_str(&format!(",\"rating_groups\":[{}]", groups.join(",")));
    }
    if let Some(t) = p.valid_until {
        v.push_str(&format!(",\"valid_until\":{}", quote(&format_time(t))));
    }
    v.push_str(&format!(",\"priority\":{}}}", p.priority));
    v
}

/// The dataset as provisioning NDJSON, the format `import_ndjson` reads: tariffs,
/// companies, packages, subscribers.
pub fn write_ndjson(d: &Dataset, w: &mut impl std::io::Write) -> std::io::Result<()> {
    let company = |i: u32| d.companies.get(i as usize).map_or("", |c| c.id.as_str());
    for t in &d.tariffs {
        writeln!(w, "{}", tariff_line(t))?;
    }
    for c in &d.companies {
        writeln!(w, "{}", company_line(c, c.balance))?;
    }
    for p in &d.packages {
        writeln!(w, "{}", package_line(p, company(p.company), p.amount))?;
    }
    for s in &d.subscribers {
        writeln!(w, "{}", subscriber_line(s, company(s.company)))?;
    }
    Ok(())
}

/// The lines that bar what `d` bars (the dataset snapshot does not keep barring: a
/// new log journals these after its provisioning record).
pub fn barred_lines(d: &Dataset) -> Vec<String> {
    let company = |i: u32| d.companies.get(i as usize).map_or("", |c| c.id.as_str());
    let companies = d
        .companies
        .iter()
        .filter(|c| c.barred)
        .map(|c| company_line(c, c.balance));
    let subscribers = d
        .subscribers
        .iter()
        .filter(|s| s.barred)
        .map(|s| subscriber_line(s, company(s.company)));
    companies.chain(subscribers).collect()
}

/// The shards' exports (`Engine::export`) as one dataset: every shard holds the same
/// provisioning and a part of each company's money and each package's units, which
/// are summed. `None` when the parts do not hold the same provisioning.
pub fn merge_exports(parts: Vec<Dataset>) -> Option<Dataset> {
    let mut parts = parts.into_iter();
    let mut total = parts.next()?;
    for part in parts {
        if part.companies.len() != total.companies.len()
            || part.packages.len() != total.packages.len()
        {
            return None;
        }
        for (t, p) in total.companies.iter_mut().zip(&part.companies) {
            t.balance = t.balance.saturating_add(p.balance);
        }
        for (t, p) in total.packages.iter_mut().zip(&part.packages) {
            t.amount = t.amount.saturating_add(p.amount);
        }
    }
    Some(total)
}

/// A subscriber of company `company` as a provisioning line.
pub fn subscriber_line(s: &Subscriber, company: &str) -> String {
    let mut v = String::from("{\"type\":\"subscriber\"");
    if let Some(m) = s.msisdn {
        v.push_str(&format!(",\"msisdn\":\"{}\"", digits_of(m)));
    }
    if let Some(i) = s.imsi {
        v.push_str(&format!(",\"imsi\":\"{}\"", digits_of(i)));
    }
    v.push_str(&format!(",\"company\":{}", quote(company)));
    if s.barred {
        v.push_str(",\"barred\":true");
    }
    v.push('}');
    v
}

/// Reads one package object in the import format (`"type":"package"` may be left out)
/// for a company added at run time: the package (its `company` index left 0) and the
/// company's id, or every problem found.
pub fn parse_package(bytes: &mut [u8]) -> Result<(Package, String), Vec<ImportError>> {
    if !nesting_within(bytes, NESTING_MAX) {
        return Err(vec![too_deep(1)]);
    }
    let mut errors = Vec::new();
    let value = match simd_json::to_borrowed_value(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![ImportError {
                line: 1,
                field: None,
                message: format!("not JSON: {e}"),
            }])
        }
    };
    let Some(obj) = value.as_object() else {
        return Err(vec![ImportError {
            line: 1,
            field: None,
            message: "expected an object".into(),
        }]);
    };
    let mut obj = obj.clone();
    match obj.get("type").and_then(|t| t.as_str()) {
        None => {
            obj.insert("type".into(), simd_json::BorrowedValue::from("package"));
        }
        Some("package") => {}
        Some(other) => {
            return Err(vec![ImportError {
                line: 1,
                field: Some("type"),
                message: format!("expected \"package\", got {other:?}"),
            }])
        }
    }
    match parse_record(1, &obj, &mut errors) {
        Some(Parsed::Package { package, company }) if errors.is_empty() => Ok((package, company)),
        _ => Err(errors),
    }
}

fn trim_mut(s: &mut [u8]) -> &mut [u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &mut s[start..end]
}

fn parse_record(
    line: usize,
    obj: &simd_json::borrowed::Object<'_>,
    errors: &mut Vec<ImportError>,
) -> Option<Parsed> {
    let mut r = Record {
        line,
        obj,
        errors,
        bad: false,
    };
    let kind = r.str("type")?.to_owned();
    let parsed = match kind.as_str() {
        "tariff" => {
            let rating_group = r.opt_u32("rating_group");
            let service_identifier = r.opt_u32("service_identifier");
            let unit = r.unit();
            let unit_size = r.u64("unit_size", 1);
            let price = r.i64("price");
            if let (Some(None), Some(None)) = (rating_group, service_identifier) {
                r.fail(
                    Some("rating_group"),
                    "a tariff needs a rating_group or a service_identifier",
                );
            }
            if let Some(p) = price.filter(|p| *p < 0) {
                r.fail(Some("price"), format!("must not be negative, got {p}"));
            }
            Parsed::Tariff(Tariff {
                rating_group: rating_group.flatten(),
                service_identifier: service_identifier.flatten(),
                unit: unit?,
                unit_size: unit_size?,
                price: price?,
            })
        }
        "company" => {
            let id = r.id("id");
            let balance = match r.obj.get("balance") {
                None => Some(None),
                Some(_) => r.i64("balance").map(Some),
            };
            let credit_limit = match r.obj.get("credit_limit") {
                None => Some(0),
                Some(_) => r.i64("credit_limit"),
            };
            let barred = r.opt_bool("barred");
            if let Some(c) = credit_limit.filter(|c| *c < 0) {
                r.fail(
                    Some("credit_limit"),
                    format!("must not be negative, got {c}"),
                );
            }
            let balance = balance?;
            Parsed::Company {
                company: Company {
                    id: id?,
                    balance: balance.unwrap_or(0),
                    credit_limit: credit_limit?,
                    barred: barred?,
                },
                balance_given: balance.is_some(),
            }
        }
        "package" => {
            let id = r.id("id");
            let company = r.str("company").map(str::to_owned);
            let unit = r.unit();
            let amount = r.u64("amount", 0);
            let rating_groups = match r.obj.get("rating_groups") {
                None => Some(Vec::new()),
                Some(v) => match v.as_array() {
                    Some(a) => {
                        let groups: Option<Vec<u32>> = a
                            .iter()
                            .map(|g| g.as_u64().and_then(|n| u32::try_from(n).ok()))
                            .collect();
                        if groups.is_none() {
                            r.fail(Some("rating_groups"), "expected a list of integers");
                        }
                        groups
                    }
                    None => {
                        r.fail(Some("rating_groups"), "expected a list of integers");
                        None
                    }
                },
            };
            let valid_until = match r.obj.get("valid_until") {
                None => Some(None),
                Some(v) if v.is_null() => Some(None),
                Some(v) => match v.as_str().map(parse_time) {
                    Some(Some(t)) => Some(Some(t)),
                    _ => {
                        r.fail(
                            Some("valid_until"),
                            "expected an RFC 3339 time such as 2026-12-31T23:59:59Z",
                        );
                        None
                    }
                },
            };
            let priority = r.opt_u32("priority").map(|p| p.unwrap_or(0));
            Parsed::Package {
                package: Package {
                    id: id?,
                    company: 0,
                    unit: unit?,
                    amount: amount?,
                    rating_groups: rating_groups?,
                    valid_until: valid_until?,
                    priority: priority?,
                },
                company: company?,
            }
        }
        "subscriber" => {
            let identity = |r: &mut Record<'_>, field: &'static str| match r.obj.get(field) {
                None => Some(None),
                Some(v) if v.is_null() => Some(None),
                Some(v) => match v.as_str().and_then(digits_key) {
                    Some(k) => Some(Some(k)),
                    None => {
                        r.fail(Some(field), "expected a string of 1 to 15 digits");
                        None
                    }
                },
            };
            let msisdn = identity(&mut r, "msisdn");
            let imsi = identity(&mut r, "imsi");
            if let (Some(None), Some(None)) = (msisdn, imsi) {
                r.fail(Some("msisdn"), "a subscriber needs an msisdn or an imsi");
            }
            let delete = r.opt_bool("delete");
            if delete == Some(true) {
                if r.bad {
                    return None;
                }
                return Some(Parsed::DeleteSubscriber {
                    msisdn: msisdn?,
                    imsi: imsi?,
                });
            }
            let company = r.str("company").map(str::to_owned);
            let barred = r.opt_bool("barred");
            Parsed::Subscriber {
                msisdn: msisdn?,
                imsi: imsi?,
                company: company?,
                barred: barred?,
            }
        }
        other => {
            r.fail(
                Some("type"),
                format!("unknown record type {other:?} (tariff, company, package, subscriber)"),
            );
            return None;
        }
    };
    (!r.bad).then_some(parsed)
}

fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Resolves company references, checks uniqueness, and builds the dataset.
fn resolve(parsed: Vec<(usize, Parsed)>, errors: &mut Vec<ImportError>) -> Dataset {
    let mut d = Dataset::default();
    let mut company_index: HashMap<String, u32> = HashMap::new();
    for (line, p) in &parsed {
        if let Parsed::Company {
            company: c,
            balance_given,
        } = p
        {
            if !balance_given {
                errors.push(ImportError {
                    line: *line,
                    field: Some("balance"),
                    message: "missing".into(),
                });
                continue;
            }
            if company_index.contains_key(&c.id) {
                errors.push(ImportError {
                    line: *line,
                    field: Some("id"),
                    message: format!("company {:?} defined twice", c.id),
                });
                continue;
            }
            company_index.insert(c.id.clone(), d.companies.len() as u32);
            d.companies.push(c.clone());
        }
    }
    let mut package_ids: HashMap<String, ()> = HashMap::new();
    let mut msisdns: HashMap<u64, ()> = HashMap::new();
    let mut imsis: HashMap<u64, ()> = HashMap::new();
    let mut tariff_keys: HashMap<(Option<u32>, Option<u32>), ()> = HashMap::new();
    for (line, p) in parsed {
        let line_err = |field: &'static str, message: String| ImportError {
            line,
            field: Some(field),
            message,
        };
        match p {
            Parsed::Company { .. } => {}
            Parsed::DeleteSubscriber { .. } => errors.push(line_err(
                "delete",
                "a dataset holds no deletions (they are for provisioning at run time)".into(),
            )),
            Parsed::Tariff(t) => {
                if tariff_keys
                    .insert((t.rating_group, t.service_identifier), ())
                    .is_some()
                {
                    errors.push(line_err(
                        "rating_group",
                        "a tariff for this rating group and service identifier is defined twice"
                            .into(),
                    ));
                    continue;
                }
                d.tariffs.push(t);
            }
            Parsed::Package {
                mut package,
                company,
            } => {
                let Some(&c) = company_index.get(&company) else {
                    errors.push(line_err("company", format!("no company {company:?}")));
                    continue;
                };
                if package_ids.insert(package.id.clone(), ()).is_some() {
                    errors.push(line_err(
                        "id",
                        format!("package {:?} defined twice", package.id),
                    ));
                    continue;
                }
                package.company = c;
                d.packages.push(package);
            }
            Parsed::Subscriber {
                msisdn,
                imsi,
                company,
                barred,
            } => {
                let Some(&c) = company_index.get(&company) else {
                    errors.push(line_err("company", format!("no company {company:?}")));
                    continue;
                };
                if let Some(m) = msisdn {
                    if msisdns.insert(m, ()).is_some() {
                        errors.push(line_err(
                            "msisdn",
                            format!("msisdn {} belongs to two subscribers", digits_of(m)),
                        ));
                        continue;
                    }
                }
                if let Some(i) = imsi {
                    if imsis.insert(i, ()).is_some() {
                        errors.push(line_err(
                            "imsi",
                            format!("imsi {} belongs to two subscribers", digits_of(i)),
                        ));
                        continue;
                    }
                }
                d.subscribers.push(Subscriber {
                    msisdn,
                    imsi,
                    company: c,
                    barred,
                });
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    d
}

/// Lookup tables over a dataset: subscribers by MSISDN and IMSI, companies by id,
/// tariffs by rating group and service identifier.
#[derive(Debug, Default)]
pub struct Index {
    pub by_msisdn: crate::FastMap<u64, u32>,
    pub by_imsi: crate::FastMap<u64, u32>,
    pub company_by_id: crate::FastMap<String, u32>,
    pub tariff_by_rating_group: crate::FastMap<u32, u32>,
    pub tariff_by_service_identifier: crate::FastMap<u32, u32>,
}

impl Index {
    pub fn build(d: &Dataset) -> Index {
        let mut ix = Index {
            by_msisdn: crate::FastMap::with_capacity_and_hasher(
                d.subscribers.len(),
                Default::default(),
            ),
            by_imsi: crate::FastMap::with_capacity_and_hasher(
                d.subscribers.len(),
                Default::default(),
            ),
            ..Index::default()
        };
        for (i, s) in d.subscribers.iter().enumerate() {
            if let Some(m) = s.msisdn {
                ix.by_msisdn.insert(m, i as u32);
            }
            if let Some(m) = s.imsi {
                ix.by_imsi.insert(m, i as u32);
            }
        }
        for (i, c) in d.companies.iter().enumerate() {
            ix.company_by_id.insert(c.id.clone(), i as u32);
        }
        ix.index_tariffs(&d.tariffs);
        ix
    }

    /// Indexes the tariffs (again, after a tariff changed).
    pub fn index_tariffs(&mut self, tariffs: &[Tariff]) {
        let ix = self;
        ix.tariff_by_rating_group.clear();
        ix.tariff_by_service_identifier.clear();
        for (i, t) in tariffs.iter().enumerate() {
            match (t.rating_group, t.service_identifier) {
                (Some(rg), _) => {
                    ix.tariff_by_rating_group.insert(rg, i as u32);
                }
                (None, Some(si)) => {
                    ix.tariff_by_service_identifier.insert(si, i as u32);
                }
                (None, None) => {}
            }
            if let (Some(_), Some(si)) = (t.rating_group, t.service_identifier) {
                ix.tariff_by_service_identifier
                    .entry(si)
                    .or_insert(i as u32);
            }
        }
    }

    /// The subscriber with this MSISDN (as digits).
    pub fn subscriber_by_msisdn(&self, msisdn: &str) -> Option<u32> {
        self.by_msisdn.get(&digits_key(msisdn)?).copied()
    }
    /// The subscriber with this IMSI (as digits).
    pub fn subscriber_by_imsi(&self, imsi: &str) -> Option<u32> {
        self.by_imsi.get(&digits_key(imsi)?).copied()
    }
}

/// Snapshots of a dataset in rkyv's format.
pub mod snapshot {
    use super::{ArchivedDataset, Dataset};

    /// A snapshot that cannot be read.
    #[derive(Debug)]
    pub struct SnapshotError(pub String);

    impl std::fmt::Display for SnapshotError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "bad snapshot: {}", self.0)
        }
    }

    /// The snapshot's bytes (write them to a file; rkyv aligns them for mapping).
    pub fn encode(d: &Dataset) -> rkyv::util::AlignedVec {
        // Serializing plain vectors and strings cannot fail.
        rkyv::to_bytes::<rkyv::rancor::Error>(d).expect("a dataset always serializes")
    }

    /// A validated, zero-copy view of a snapshot's bytes (a memory-mapped file, aligned
    /// to 16 bytes).
    pub fn view(bytes: &[u8]) -> Result<&ArchivedDataset, SnapshotError> {
        rkyv::access::<ArchivedDataset, rkyv::rancor::Error>(bytes)
            .map_err(|e| SnapshotError(e.to_string()))
    }

    /// The dataset back from a snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Dataset, SnapshotError> {
        let archived = view(bytes)?;
        rkyv::deserialize::<Dataset, rkyv::rancor::Error>(archived)
            .map_err(|e| SnapshotError(e.to_string()))
    }
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing_and_strings_do_not_count() {
        let deep = format!(
            "{{\"type\":\"tariff\",\"x\":{}{}}}",
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        let errs = parse_change(&mut deep.into_bytes(), 3, None).unwrap_err();
        assert_eq!(errs[0].line, 3);
        assert!(errs[0].message.contains("nested"), "{errs:?}");
        let mut file = format!("{}\n", "{".repeat(100_000)).into_bytes();
        let imp = import_ndjson(&mut file, OnError::Skip);
        assert!(imp.errors[0].message.contains("nested"));
        assert!(nesting_within(br#"{"a":"[[[[[[[[\"[[[[","b":[1,[2]]}"#, 3));
        assert!(!nesting_within(br#"{"b":[1,[2,[3]]]}"#, 3));
        assert!(parse_package(&mut "[".repeat(100).into_bytes()).is_err());
    }
}
