//! Provisioning datasets for load tests, in gyro's NDJSON format
//! (`docs/provisioning.md`): tariffs for data, voice and SMS, companies of very
//! different sizes (a few with thousands of subscribers, most small), packages, and
//! subscribers with an MSISDN and an IMSI. Deterministic for a seed.

use std::io::{self, Write};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub subscribers: u64,
    pub companies: u64,
    pub seed: u64,
}

/// The rating groups and service identifiers the tariffs cover, for the traffic mix.
pub const DATA_RATING_GROUPS: [u32; 2] = [10, 20];
pub const VOICE_RATING_GROUP: u32 = 100;
pub const SMS_SERVICE_IDENTIFIER: u32 = 1;

/// MSISDN of subscriber `i` (German mobile range, 12 digits).
pub fn msisdn(i: u64) -> String {
    format!("4917{i:08}")
}

/// IMSI of subscriber `i` (MCC 262, MNC 01, 15 digits).
pub fn imsi(i: u64) -> String {
    format!("26201{i:010}")
}

/// A small deterministic generator (splitmix64): the same seed gives the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Which company subscriber `i` belongs to: a skewed assignment in which company 0 and
/// the next few hold a large share (as a carrier's biggest enterprise accounts do) and
/// the rest share the remainder evenly.
pub fn company_of(i: u64, spec: &Spec) -> u64 {
    let c = spec.companies.max(1);
    let big = c.min(4);
    // Half of all subscribers go to the `big` largest companies.
    if i.is_multiple_of(2) || c == big {
        (i / 2) % big
    } else {
        big + (i / 2) % (c - big)
    }
}

/// Writes the dataset; returns the number of lines.
pub fn write(spec: &Spec, out: &mut impl Write) -> io::Result<u64> {
    let mut rng = Rng(spec.seed);
    let mut lines = 0u64;
    let mut line = |out: &mut dyn Write, s: &str| -> io::Result<()> {
        lines += 1;
        out.write_all(s.as_bytes())?;
        out.write_all(b"\n")
    };
    // 1 MiB blocks at 2,000 micro-units (2 EUR/GiB); voice per minute; SMS per message.
    line(out, &format!("{{\"type\":\"tariff\",\"rating_group\":{},\"unit\":\"octets\",\"unit_size\":1048576,\"price\":2000}}", DATA_RATING_GROUPS[0]))?;
    line(out, &format!("{{\"type\":\"tariff\",\"rating_group\":{},\"unit\":\"octets\",\"unit_size\":1048576,\"price\":5000}}", DATA_RATING_GROUPS[1]))?;
    line(out, &format!("{{\"type\":\"tariff\",\"rating_group\":{VOICE_RATING_GROUP},\"unit\":\"seconds\",\"unit_size\":60,\"price\":90000}}"))?;
    line(out, &format!("{{\"type\":\"tariff\",\"service_identifier\":{SMS_SERVICE_IDENTIFIER},\"unit\":\"units\",\"unit_size\":1,\"price\":50000}}"))?;
    for c in 0..spec.companies {
        // Balances from 10 to 1,000 EUR; a credit limit for one company in ten.
        let balance = 10_000_000 + rng.below(990) * 1_000_000;
        let credit_limit = if c % 10 == 0 { 5_000_000 } else { 0 };
        line(out, &format!("{{\"type\":\"company\",\"id\":\"company-{c}\",\"balance\":{balance},\"credit_limit\":{credit_limit}}}"))?;
        // A data package for most companies, a voice bundle for some.
        if c % 4 != 3 {
            let gib = 1 + rng.below(100);
            line(out, &format!(
                "{{\"type\":\"package\",\"id\":\"company-{c}-data\",\"company\":\"company-{c}\",\"unit\":\"octets\",\"amount\":{},\"rating_groups\":[{}],\"valid_until\":\"2027-12-31T23:59:59Z\",\"priority\":1}}",
                gib << 30,
                DATA_RATING_GROUPS[0]
            ))?;
        }
        if c % 3 == 0 {
            line(out, &format!(
                "{{\"type\":\"package\",\"id\":\"company-{c}-voice\",\"company\":\"company-{c}\",\"unit\":\"seconds\",\"amount\":{},\"priority\":2}}",
                60 * (100 + rng.below(900))
            ))?;
        }
    }
    for i in 0..spec.subscribers {
        line(out, &format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"{}\",\"imsi\":\"{}\",\"company\":\"company-{}\"}}",
            msisdn(i),
            imsi(i),
            company_of(i, spec)
        ))?;
    }
    Ok(lines)
}
