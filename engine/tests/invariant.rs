//! A broken money invariant stops the process: a non-zero exit whatever the build,
//! naming the invariant and the company, before a wrong balance is written.

use std::process::Command;

use gyro_engine::charging::escrow::OwnerBucket;

const CHILD: &str = "GYRO_TEST_BREAK_INVARIANT";

#[test]
fn a_remainder_that_would_wrap_stops_the_process_naming_the_company() {
    if std::env::var_os(CHILD).is_some() {
        // In the child: a top-up the owner's remainder cannot hold.
        let mut owner = OwnerBucket::new(i64::MAX, 0);
        owner.credit("acme", 1, &mut |_, _| {});
        unreachable!("the invariant stops the process");
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_remainder_that_would_wrap_stops_the_process_naming_the_company",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "invariant broken: a top-up added to the owner's remainder, company \"acme\""
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("unreachable"), "{stderr}");
}
