//! Keeps docs/dictionary.md in step with the compiled dictionary: the coverage table in
//! the document must be exactly what the dictionary holds. `GYRO_BLESS=1 cargo test
//! --test docs` rewrites the table after a dictionary change.

use gyro_engine::diameter::dict::{self, DataType, MBit, DEFS};

fn table() -> String {
    let mut out = String::from(
        "| code | vendor | name | type | M bit | values |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for d in DEFS {
        let vendor = match d.vendor_id {
            0 => "-".to_string(),
            10415 => "10415 (3GPP)".to_string(),
            v => v.to_string(),
        };
        let ty = match d.data_type {
            DataType::Utf8String => "UTF8String".to_string(),
            DataType::DiameterUri => "DiameterURI".to_string(),
            DataType::IpFilterRule => "IPFilterRule".to_string(),
            t => format!("{t:?}"),
        };
        let m = match d.m_bit {
            MBit::Must => "must",
            MBit::May => "may",
            MBit::MustNot => "must not",
        };
        let values = if d.data_type == DataType::Enumerated {
            format!("{}..={}", d.enum_min, d.enum_max)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            d.code, vendor, d.name, ty, m, values
        ));
    }
    out
}

fn commands() -> String {
    let mut out = String::new();
    for c in dict::COMMANDS {
        let rules: Vec<String> = c
            .rules
            .iter()
            .map(|r| {
                let n = r.avp.def().name;
                match (r.min, r.max) {
                    (1, 1) => format!("{{{n}}}"),
                    (0, 1) => format!("[{n}]"),
                    (0, u8::MAX) => format!("*[{n}]"),
                    (1, u8::MAX) => format!("1*{{{n}}}"),
                    (a, b) => format!("{a}*{b}{{{n}}}"),
                }
            })
            .collect();
        out.push_str(&format!(
            "- **{}** ({}): {} *[AVP]\n",
            c.name,
            c.code,
            rules.join(" ")
        ));
    }
    out
}

fn between(doc: &str, begin: &str, end: &str) -> (usize, usize) {
    let a = doc.find(begin).unwrap_or_else(|| panic!("{begin} missing")) + begin.len();
    let b = doc[a..]
        .find(end)
        .unwrap_or_else(|| panic!("{end} missing"))
        + a;
    (a, b)
}

#[test]
fn dictionary_doc_matches_the_dictionary() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dictionary.md");
    let mut doc = std::fs::read_to_string(&path).expect("docs/dictionary.md");
    let parts = [
        ("<!-- avps:begin -->\n", "<!-- avps:end -->", table()),
        (
            "<!-- commands:begin -->\n",
            "<!-- commands:end -->",
            commands(),
        ),
    ];
    for (begin, end, want) in parts {
        let (a, b) = between(&doc, begin, end);
        if std::env::var("GYRO_BLESS").is_ok() {
            doc.replace_range(a..b, &want);
        } else {
            assert_eq!(
                doc[a..b],
                want,
                "docs/dictionary.md is out of date: GYRO_BLESS=1 cargo test --test docs"
            );
        }
    }
    if std::env::var("GYRO_BLESS").is_ok() {
        std::fs::write(&path, doc).unwrap();
    }
}

#[test]
fn conformance_doc_links_every_row_to_its_test() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc =
        std::fs::read_to_string(root.join("../docs/conformance.md")).expect("docs/conformance.md");
    let tests = std::fs::read_to_string(root.join("tests/conformance.rs")).unwrap();
    for row in 1..=30 {
        let name = format!("row{row:02}_");
        let fn_name = tests
            .lines()
            .find_map(|l| l.strip_prefix("fn ").filter(|n| n.starts_with(&name)))
            .unwrap_or_else(|| panic!("no test for row {row}"));
        let fn_name = fn_name.split('(').next().unwrap();
        assert!(
            doc.contains(fn_name),
            "docs/conformance.md does not name {fn_name}"
        );
    }
}
