//! The CCR decoder's fast path (`diameter/ccr/fast.rs`) against the full decoder
//! (`Ccr::decode_full_into`) on generated requests: every Grouped AVP gyro keeps, in
//! any order, with duplicates, misplaced, unknown and vendor AVPs, bad values and broken
//! framing. The two must agree on every request, result for result and field for field,
//! also when the value decoded into holds an earlier request.

use gyro_engine::diameter::ccr::{encode_ccr, sample_ccr_update, Ccr};
use gyro_engine::diameter::dict::{AvpId, DataType};
use gyro_engine::diameter::{Message, ProtocolError};

/// xorshift64*: the requests are a function of the seed, so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `p` percent.
    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// The members a Grouped AVP is given.
fn members(id: AvpId) -> &'static [AvpId] {
    use AvpId::*;
    match id {
        MultipleServicesCreditControl => &[
            RatingGroup,
            ServiceIdentifier,
            RequestedServiceUnit,
            UsedServiceUnit,
            ReportingReason,
            CcTime,
            Trigger,
            UnitQuotaThreshold,
        ],
        RequestedServiceUnit | UsedServiceUnit => &[
            CcTime,
            CcTotalOctets,
            CcInputOctets,
            CcOutputOctets,
            CcServiceSpecificUnits,
            ReportingReason,
            RatingGroup,
        ],
        SubscriptionId => &[SubscriptionIdType, SubscriptionIdData, RatingGroup],
        ServiceInformation => &[
            PsInformation,
            ImsInformation,
            SmsInformation,
            SubscriptionId,
            NodeId,
        ],
        PsInformation => &[
            TgppChargingId,
            CalledStationId,
            TgppRatType,
            TgppUserLocationInfo,
            SgsnAddress,
            SgwAddress,
            GgsnAddress,
            TgppSgsnMccMnc,
            TgppImsiMccMnc,
            TgppPdpType,
            RatType,
            PdpAddress,
        ],
        ImsInformation => &[
            CallingPartyAddress,
            CalledPartyAddress,
            ImsChargingIdentifier,
            NodeFunctionality,
            RoleOfNode,
        ],
        SmsInformation => &[
            SmscAddress,
            SmsNode,
            RecipientInfo,
            SmMessageType,
            DataCodingScheme,
        ],
        RecipientInfo => &[RecipientAddress, AddressType],
        RecipientAddress => &[AddressData, AddressType],
        UserEquipmentInfo => &[UserEquipmentInfoType, UserEquipmentInfoValue],
        _ => &[OriginStateId, UserName, RatingGroup],
    }
}

const REQUIRED: [AvpId; 8] = [
    AvpId::SessionId,
    AvpId::OriginHost,
    AvpId::OriginRealm,
    AvpId::DestinationRealm,
    AvpId::AuthApplicationId,
    AvpId::ServiceContextId,
    AvpId::CcRequestType,
    AvpId::CcRequestNumber,
];

const TOP_OPTIONAL: [AvpId; 21] = [
    AvpId::DestinationHost,
    AvpId::EventTimestamp,
    AvpId::UserName,
    AvpId::RequestedAction,
    AvpId::ServiceIdentifier,
    AvpId::TerminationCause,
    AvpId::MultipleServicesIndicator,
    AvpId::RequestedServiceUnit,
    AvpId::UsedServiceUnit,
    AvpId::SubscriptionId,
    AvpId::MultipleServicesCreditControl,
    AvpId::ServiceInformation,
    AvpId::UserEquipmentInfo,
    AvpId::OriginStateId,
    AvpId::CcSubSessionId,
    AvpId::AcctMultiSessionId,
    AvpId::CcCorrelationId,
    AvpId::RouteRecord,
    AvpId::ProxyInfo,
    AvpId::RatingGroup,
    AvpId::RedirectAddressType,
];

fn text(r: &mut Rng, out: &mut Vec<u8>) {
    let n = if r.pct(3) { 0 } else { 1 + r.below(40) };
    for _ in 0..n {
        out.push(b'a' + r.below(26) as u8);
    }
    if r.pct(3) {
        out.extend_from_slice("é".as_bytes());
    }
    if r.pct(2) {
        out.push(0xff);
    }
}

fn value(r: &mut Rng, id: AvpId, depth: u32, out: &mut Vec<u8>) {
    let d = id.def();
    match d.data_type {
        DataType::Grouped => {
            let n = r.below(5);
            for _ in 0..n {
                let m = r.pick(members(id));
                avp(r, m, depth + 1, out);
            }
            if r.pct(10) {
                unknown(r, out);
            }
        }
        DataType::Unsigned32 | DataType::Integer32 | DataType::Time | DataType::Float32 => {
            let v: u32 = match id {
                AvpId::AuthApplicationId if r.pct(95) => 4,
                _ if r.pct(50) => r.below(10) as u32,
                _ => r.next() as u32,
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
        DataType::Enumerated => {
            let lo = i64::from(d.enum_min.max(-1));
            let hi = i64::from(d.enum_max.min(40));
            let v = if r.pct(90) {
                lo + r.below((hi - lo + 1) as u64) as i64
            } else {
                lo - 1 + r.below((hi - lo + 3) as u64) as i64
            };
            out.extend_from_slice(&(v as i32).to_be_bytes());
        }
        DataType::Unsigned64 | DataType::Integer64 | DataType::Float64 => {
            let v = if r.pct(10) {
                u64::MAX - r.below(4)
            } else {
                r.below(1 << 40)
            };
            out.extend_from_slice(&v.to_be_bytes());
        }
        DataType::Utf8String | DataType::DiameterIdentity | DataType::DiameterUri => text(r, out),
        DataType::Address => match r.below(5) {
            0 => out.extend_from_slice(&[0, 1, 10, 0, 0, 1]),
            1 => {
                out.extend_from_slice(&[0, 2]);
                out.extend_from_slice(&[0x20; 16]);
            }
            2 => out.extend_from_slice(b"\x00\x08491701234567"),
            3 => out.extend_from_slice(&[0, 1, 10]),
            _ => out.extend_from_slice(&[0, 9, 1, 2, 3, 4]),
        },
        _ => {
            let n = r.below(12);
            for _ in 0..n {
                out.push(r.next() as u8);
            }
        }
    }
}

/// An AVP gyro's dictionary does not know, with or without the M bit, or with a
/// Vendor-ID other than 3GPP's.
fn unknown(r: &mut Rng, out: &mut Vec<u8>) {
    let m = if r.pct(10) { 0x40 } else { 0 };
    if r.pct(50) {
        out.extend_from_slice(&60_000u32.to_be_bytes());
        out.extend_from_slice(&[m, 0, 0, 12, 1, 2, 3, 4]);
    } else {
        out.extend_from_slice(&263u32.to_be_bytes());
        out.extend_from_slice(&[0x80 | m, 0, 0, 16, 0, 0, 0, 9, 1, 2, 3, 4]);
    }
}

fn avp(r: &mut Rng, id: AvpId, depth: u32, out: &mut Vec<u8>) {
    if depth > 6 {
        return;
    }
    let d = id.def();
    let start = out.len();
    let mut vendor = d.vendor_id;
    if r.pct(1) {
        vendor = if vendor == 0 { 10415 } else { 0 };
    }
    let mut flags = if r.pct(85) { 0x40 } else { 0 };
    if vendor != 0 {
        flags |= 0x80;
    }
    // The V bit with Vendor-ID 0: a base AVP all the same.
    let v_zero = vendor == 0 && r.pct(1);
    if v_zero {
        flags |= 0x80;
    }
    if r.pct(1) {
        flags |= 0x20;
    }
    // A code of 2^24 or more whose high byte lands where the fast path's key keeps
    // the V bit.
    let code = if r.pct(1) {
        d.code | 0x8000_0000
    } else {
        d.code
    };
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&[flags, 0, 0, 0]);
    if vendor != 0 {
        let v = if r.pct(1) { 9 } else { vendor };
        out.extend_from_slice(&v.to_be_bytes());
    } else if v_zero {
        out.extend_from_slice(&0u32.to_be_bytes());
    }
    value(r, id, depth, out);
    let mut len = (out.len() - start) as i64;
    if r.pct(1) {
        len += r.below(9) as i64 - 4;
    }
    if r.pct(1) {
        len = r.below(12) as i64;
    }
    let len = len.clamp(0, 0xff_ffff) as u32;
    out[start + 5..start + 8].copy_from_slice(&len.to_be_bytes()[1..]);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One generated CCR: a header and the AVPs, required ones mostly present and in any
/// order.
fn request(r: &mut Rng) -> Vec<u8> {
    let mut ids: Vec<AvpId> = REQUIRED.iter().copied().filter(|_| !r.pct(2)).collect();
    let extra = r.below(8);
    for _ in 0..extra {
        // The last two (misplaced with the M bit: 5001) less often.
        let k = if r.pct(90) {
            TOP_OPTIONAL.len() - 2
        } else {
            TOP_OPTIONAL.len()
        };
        ids.push(TOP_OPTIONAL[r.below(k as u64) as usize]);
    }
    if r.pct(5) {
        let dup = r.pick(&REQUIRED);
        ids.push(dup);
    }
    // Shuffle, keeping Session-Id first most of the time as peers send it.
    for i in (1..ids.len()).rev() {
        let j = r.below(i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    let mut out = vec![1, 0, 0, 0, 0x80 | 0x40, 0, 1, 0x10, 0, 0, 0, 4];
    out.extend_from_slice(&r.next().to_be_bytes());
    for id in ids {
        avp(r, id, 0, &mut out);
        if r.pct(3) {
            unknown(r, &mut out);
        }
    }
    if r.pct(2) {
        out.extend_from_slice(&[0, 0, 1]);
    }
    let len = out.len() as u32;
    out[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    out
}

#[test]
fn the_fast_path_decodes_every_generated_request_as_the_full_decoder_does() {
    let sample = sample_ccr_update();
    let mut buf = [0u8; 1024];
    let n = encode_ccr(&sample, &mut buf).expect("sample encodes");
    let (mut ok, mut errors) = (0u32, 0u32);
    for seed in 1..=60_000u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let bytes = request(&mut r);
        let Some(msg) = Message::new(&bytes) else {
            continue;
        };
        let (got, expected) = fast_and_full(&msg);
        assert_eq!(got, expected, "seed {seed}: {bytes:02x?}");
        // Into a value that holds the sample request.
        let earlier = Message::new(&buf[..n]).expect("sample frames");
        let mut reused = Ccr::default();
        reused.decode_into(&earlier).expect("sample decodes");
        let again = reused.decode_into(&msg).map(|()| reused);
        assert_eq!(again, expected, "seed {seed} (reused): {bytes:02x?}");
        match expected {
            Ok(_) => ok += 1,
            Err(_) => errors += 1,
        }
    }
    // The generator reaches both outcomes often.
    eprintln!("{ok} generated requests decoded, {errors} refused");
    assert!(ok > 12_000, "only {ok} generated requests decoded");
    assert!(
        errors > 15_000,
        "only {errors} generated requests were refused"
    );
}

/// Appends one AVP (code, flags, optional Vendor-ID, data) with its padding.
fn put(out: &mut Vec<u8>, code: u32, flags: u8, vendor: Option<u32>, data: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&[flags, 0, 0, 0]);
    if let Some(v) = vendor {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(data);
    let len = (out.len() - start) as u32;
    out[start + 5..start + 8].copy_from_slice(&len.to_be_bytes()[1..]);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// `msg` decoded as `decode_into` decodes it (the fast path first) and by the full
/// decoder alone.
type Decoded<'a> = Result<Ccr<'a>, ProtocolError>;
fn fast_and_full<'a>(msg: &Message<'a>) -> (Decoded<'a>, Decoded<'a>) {
    let mut full = Ccr::default();
    let expected = full.decode_full_into(msg).map(|()| full);
    let mut fast = Ccr::default();
    let got = fast.decode_into(msg).map(|()| fast);
    (got, expected)
}

/// A CCR-U with the AVPs every request carries, then what `more` appends.
fn ccr_u(more: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = vec![
        1, 0, 0, 0, 0xc0, 0, 1, 0x10, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2,
    ];
    put(&mut out, 263, 0x40, None, b"pgw.example;1;2");
    put(&mut out, 264, 0x40, None, b"pgw.example");
    put(&mut out, 296, 0x40, None, b"example");
    put(&mut out, 283, 0x40, None, b"ocs.example");
    put(&mut out, 258, 0x40, None, &4u32.to_be_bytes());
    put(&mut out, 461, 0x40, None, b"32251@3gpp.org");
    put(&mut out, 416, 0x40, None, &2u32.to_be_bytes());
    put(&mut out, 415, 0x40, None, &1u32.to_be_bytes());
    more(&mut out);
    let len = out.len() as u32;
    out[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    out
}

/// The fast path reads the eight AVPs RFC 8506 §3.1 puts first, while they come in
/// its order, with one compare of each code. For each of them: another code in its
/// place (one byte of the code changed, with and without the M bit), the V bit (with
/// Vendor-ID 10415 and 0), a bad Length, two of them swapped, and a repeat of it later
/// on are all decoded (or refused) as the full decoder does.
#[test]
fn the_leading_avps_are_read_in_order_as_the_full_decoder_reads_them() {
    type Avp = (u32, u8, Option<u32>, Vec<u8>);
    let leading: Vec<Avp> = vec![
        (263, 0x40, None, b"pgw.example;1;2".to_vec()),
        (264, 0x40, None, b"pgw.example".to_vec()),
        (296, 0x40, None, b"example".to_vec()),
        (283, 0x40, None, b"ocs.example".to_vec()),
        (258, 0x40, None, 4u32.to_be_bytes().to_vec()),
        (461, 0x40, None, b"32251@3gpp.org".to_vec()),
        (416, 0x40, None, 2u32.to_be_bytes().to_vec()),
        (415, 0x40, None, 1u32.to_be_bytes().to_vec()),
    ];
    let encode = |avps: &[Avp], short: Option<usize>| {
        let mut out = vec![
            1, 0, 0, 0, 0xc0, 0, 1, 0x10, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        for (i, (code, flags, vendor, data)) in avps.iter().enumerate() {
            let at = out.len();
            put(&mut out, *code, *flags, *vendor, data);
            if short == Some(i) {
                // A Length below the header's.
                out[at + 7] = 4;
            }
        }
        let len = out.len() as u32;
        out[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        out
    };
    let (mut decoded, mut refused) = (0, 0);
    for at in 0..leading.len() {
        let (code, ..) = leading[at];
        let mut cases: Vec<(Vec<Avp>, Option<usize>)> = Vec::new();
        for byte in 0..4 {
            for flags in [0x00, 0x40] {
                let mut v = leading.clone();
                v[at].0 = code ^ (1 << (8 * byte));
                v[at].1 = flags;
                cases.push((v, None));
            }
        }
        for vendor in [10415, 0] {
            let mut v = leading.clone();
            v[at].1 = 0xc0;
            v[at].2 = Some(vendor);
            cases.push((v, None));
        }
        cases.push((leading.clone(), Some(at)));
        if at + 1 < leading.len() {
            let mut v = leading.clone();
            v.swap(at, at + 1);
            cases.push((v, None));
        }
        let mut v = leading.clone();
        v.push((455, 0x40, None, 1u32.to_be_bytes().to_vec()));
        v.push(leading[at].clone());
        cases.push((v, None));
        let mut v = leading.clone();
        v.push((55, 0x40, None, 7u32.to_be_bytes().to_vec()));
        cases.push((v, None));
        for (avps, short) in cases {
            let out = encode(&avps, short);
            let msg = Message::new(&out).expect("frames");
            let (got, expected) = fast_and_full(&msg);
            assert_eq!(got, expected, "AVP {at}: {out:02x?}");
            match expected {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
    }
    assert!(
        decoded >= 16 && refused >= 40,
        "{decoded} decoded, {refused} refused"
    );
}

/// The fast path reads the usual Subscription-Id (its type, then its data, the last
/// member) with a compare of each header: every flag but V may vary, a V bit is not
/// taken for either, a type out of range is refused, and any other layout (the data
/// first, a member after it, a group without its last padding) is read by the loop, all
/// as the full decoder reads them.
#[test]
fn a_subscription_id_of_type_then_data_is_read_as_the_full_decoder_reads_it() {
    let datas: [&[u8]; 6] = [
        b"4",
        b"491701234567",
        b"4917012345678",
        b"\xff\xfe",
        b"",
        b"abcdefghijklmnopq",
    ];
    let flags: [(u8, Option<u32>); 5] = [
        (0x40, None),
        (0x00, None),
        (0x60, None),
        (0xc0, Some(10415)),
        (0xc0, Some(0)),
    ];
    let mut decoded = 0;
    for id_type in [0u32, 1, 4, 5, 6, 0x8000_0000] {
        for data in datas {
            for (tf, tv) in flags {
                for (df, dv) in flags {
                    for layout in 0..4 {
                        let mut g = Vec::new();
                        let ty = |g: &mut Vec<u8>| put(g, 450, tf, tv, &id_type.to_be_bytes());
                        let da = |g: &mut Vec<u8>| put(g, 444, df, dv, data);
                        match layout {
                            0 => {
                                ty(&mut g);
                                da(&mut g);
                            }
                            1 => {
                                da(&mut g);
                                ty(&mut g);
                            }
                            2 => {
                                ty(&mut g);
                                da(&mut g);
                                put(&mut g, 1234, 0x00, None, b"x");
                            }
                            _ => {
                                ty(&mut g);
                                da(&mut g);
                                // The group ends at the data's Length, without its padding.
                                let unpadded = g.len() - (4 - (8 + data.len()) % 4) % 4;
                                g.truncate(unpadded);
                            }
                        }
                        let out = ccr_u(|out| put(out, 443, 0x40, None, &g));
                        let msg = Message::new(&out).expect("frames");
                        let (got, expected) = fast_and_full(&msg);
                        assert_eq!(
                            got, expected,
                            "type {id_type}, data {data:?}, flags {tf:#x}/{tv:?} and {df:#x}/{dv:?}, layout {layout}"
                        );
                        if let Ok(c) = expected {
                            decoded += 1;
                            assert_eq!(c.subscription_ids[0].id_type, id_type);
                            assert_eq!(c.subscription_ids[0].data.as_bytes(), data);
                        }
                    }
                }
            }
        }
    }
    assert!(decoded > 100, "only {decoded} decoded");
}

/// The fast path reads an RSU or USU holding only a CC-Total-Octets with one compare of
/// its header: every flag but V may vary, and a V bit (with a Vendor-ID in place of
/// half the value) is not taken for it.
#[test]
fn a_unit_group_of_one_total_octets_is_read_as_the_full_decoder_reads_it() {
    let cases: [(u8, Option<u32>, &[u8]); 6] = [
        (0x40, None, &[0, 0, 0, 0, 0, 1, 0, 0]),
        (0x00, None, &[0, 0, 0, 0, 0, 1, 0, 0]),
        (0x60, None, &[0, 0, 0, 0, 0, 1, 0, 0]),
        (0x5f, None, &[0xff; 8]),
        (0xc0, Some(10415), &[0, 0, 0, 7]),
        (0xc0, Some(0), &[0, 0, 0, 7]),
    ];
    for (flags, vendor, value) in cases {
        for group in [437u32, 446] {
            let mut units = Vec::new();
            put(&mut units, 421, flags, vendor, value);
            let mut mscc = Vec::new();
            put(&mut mscc, group, 0x40, None, &units);
            put(&mut mscc, 432, 0x40, None, &10u32.to_be_bytes());
            let out = ccr_u(|out| put(out, 456, 0x40, None, &mscc));
            let msg = Message::new(&out).expect("frames");
            let (got, expected) = fast_and_full(&msg);
            assert_eq!(
                got, expected,
                "flags {flags:#x}, vendor {vendor:?}, group {group}"
            );
            if vendor.is_none() {
                let m = expected.expect("decodes").mscc()[0];
                let u = if group == 437 { m.requested } else { m.used };
                let want = u64::from_be_bytes(value.try_into().expect("8 bytes"));
                assert_eq!(u.and_then(|u| u.total_octets), Some(want));
            }
        }
    }
}
