//! Fuzz target `manifest`: see `triggerd::testing::fuzz::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triggerd::testing::fuzz::manifest(data));
