//! Provisioning import: the documented format loads, every kind of bad record is
//! reported with its line and field, nothing loads from a bad file unless skipping is
//! asked for, and a snapshot written to a real file and memory-mapped reads back equal.

use gyro_engine::provision::{
    digits_key, digits_of, import_ndjson, snapshot, Index, OnError, Unit,
};

const GOOD: &str = r#"{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":2000}
{"type":"tariff","service_identifier":1,"unit":"units","unit_size":1,"price":50000}
{"type":"company","id":"acme","balance":50000000,"credit_limit":0}

{"type":"package","id":"acme-data","company":"acme","unit":"octets","amount":10737418240,"rating_groups":[10],"valid_until":"2026-12-31T23:59:59Z","priority":1}
{"type":"subscriber","msisdn":"491701234567","imsi":"262011234567890","company":"acme"}
"#;

#[test]
fn the_documented_example_loads() {
    let mut bytes = GOOD.as_bytes().to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok(), "{:?}", imp.errors);
    let d = imp.dataset;
    assert_eq!(d.tariffs.len(), 2);
    assert_eq!(d.tariffs[0].rating_group, Some(10));
    assert_eq!(d.tariffs[0].unit, Unit::Octets);
    assert_eq!(d.tariffs[0].price, 2000);
    assert_eq!(d.tariffs[1].service_identifier, Some(1));
    assert_eq!(d.companies[0].id, "acme");
    assert_eq!(d.companies[0].balance, 50_000_000);
    let p = &d.packages[0];
    assert_eq!((p.amount, p.priority, p.company), (10_737_418_240, 1, 0));
    assert_eq!(p.rating_groups, vec![10]);
    assert_eq!(p.valid_until, Some(1_798_761_599));
    let ix = Index::build(&d);
    assert_eq!(ix.subscriber_by_msisdn("491701234567"), Some(0));
    assert_eq!(ix.subscriber_by_imsi("262011234567890"), Some(0));
    assert_eq!(ix.subscriber_by_msisdn("491701234568"), None);
    assert_eq!(ix.tariff_by_rating_group.get(&10), Some(&0));
    assert_eq!(ix.tariff_by_service_identifier.get(&1), Some(&1));
}

#[test]
fn every_bad_record_is_reported_with_line_and_field() {
    let input = r#"{"type":"company","id":"acme","balance":100}
{"type":"company","id":"acme","balance":5}
not json
{"type":"tariff","unit":"octets","unit_size":0,"price":-1}
{"type":"package","id":"p","company":"nobody","unit":"bytes","amount":1}
{"type":"package","id":"q","company":"acme","unit":"octets","amount":1,"valid_until":"tomorrow"}
{"type":"subscriber","msisdn":"49-170","company":"acme"}
{"type":"subscriber","msisdn":"491","company":"acme"}
{"type":"subscriber","msisdn":"491","company":"acme"}
{"type":"gift","id":"x"}
{"type":"company","id":"beta","balance":"lots"}
[1,2]
"#;
    let mut bytes = input.as_bytes().to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    let got: Vec<String> = imp.errors.iter().map(|e| e.to_string()).collect();
    let want_prefixes = [
        "line 2, field `id`: company \"acme\" defined twice",
        "line 3: not JSON",
        "line 4, field `unit_size`: must be at least 1",
        "line 4, field `price`: must not be negative, got -1",
        "line 4, field `rating_group`: a tariff needs a rating_group or a service_identifier",
        "line 5, field `unit`: expected \"octets\", \"seconds\" or \"units\"",
        "line 6, field `valid_until`: expected an RFC 3339 time",
        "line 7, field `msisdn`: expected a string of 1 to 15 digits",
        "line 9, field `msisdn`: msisdn 491 belongs to two subscribers",
        "line 10, field `type`: unknown record type \"gift\"",
        "line 11, field `balance`: expected an integer",
        "line 12: expected an object",
    ];
    for w in want_prefixes {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
    // Reject: nothing is loaded.
    assert!(imp.dataset.companies.is_empty() && imp.dataset.subscribers.is_empty());
}

#[test]
fn skipping_loads_the_good_records() {
    let input = "{\"type\":\"company\",\"id\":\"acme\",\"balance\":100}\n{\"type\":\"subscriber\",\"msisdn\":\"1\",\"company\":\"ghost\"}\n{\"type\":\"subscriber\",\"msisdn\":\"2\",\"company\":\"acme\"}\n";
    let mut bytes = input.as_bytes().to_vec();
    let imp = import_ndjson(&mut bytes, OnError::Skip);
    assert_eq!(imp.errors.len(), 1);
    assert_eq!(
        imp.errors[0].to_string(),
        "line 2, field `company`: no company \"ghost\""
    );
    assert_eq!(imp.dataset.subscribers.len(), 1);
    assert_eq!(imp.dataset.subscribers[0].msisdn, digits_key("2"));
}

#[test]
fn digit_keys_keep_leading_zeros_and_length() {
    assert_ne!(digits_key("0123"), digits_key("123"));
    assert_eq!(
        digits_of(digits_key("000491701234567").unwrap()),
        "000491701234567"
    );
    assert_eq!(digits_key(""), None);
    assert_eq!(digits_key("1234567890123456"), None);
    assert_eq!(digits_key("12a"), None);
}

#[test]
fn snapshot_written_and_memory_mapped_reads_back_equal() {
    let mut input = String::from(GOOD);
    for i in 0..1000 {
        input.push_str(&format!(
            "{{\"type\":\"subscriber\",\"msisdn\":\"4917{i:08}\",\"company\":\"acme\"}}\n"
        ));
    }
    let mut bytes = input.into_bytes();
    let imp = import_ndjson(&mut bytes, OnError::Reject);
    assert!(imp.is_ok());
    let encoded = snapshot::encode(&imp.dataset);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("snapshot-{}.rkyv", std::process::id()));
    std::fs::write(&path, &encoded).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the file is private to this test and not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let view = snapshot::view(&map).expect("valid snapshot");
    assert_eq!(view.subscribers.len(), 1001);
    assert_eq!(view.companies[0].id.as_str(), "acme");
    assert_eq!(snapshot::decode(&map).unwrap(), imp.dataset);
    // A damaged snapshot is refused, not trusted.
    let mut bad = encoded.to_vec();
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&[0xff; 4]);
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(&bad);
    assert!(snapshot::view(&aligned).is_err());
    std::fs::remove_file(path).ok();
}
