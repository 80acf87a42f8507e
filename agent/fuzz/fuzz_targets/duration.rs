//! Fuzz target `duration`: see `triggerd::testing::fuzz::duration`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triggerd::testing::fuzz::duration(data));
