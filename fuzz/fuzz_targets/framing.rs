//! Fuzz target: see `gyro_engine::fuzzing::framing` for the properties it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gyro_engine::fuzzing::framing(data);
});
