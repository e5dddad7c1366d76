//! Fuzz target: see `gyro_engine::fuzzing::ccr_roundtrip` for the properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gyro_engine::fuzzing::ccr_roundtrip(data);
});
