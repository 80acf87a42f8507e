//! Fuzz target `conditions`: see `triggerd::testing::fuzz::conditions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triggerd::testing::fuzz::conditions(data));
