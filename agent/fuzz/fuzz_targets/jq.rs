//! Fuzz target `jq`: see `triggerd::testing::fuzz::jq`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triggerd::testing::fuzz::jq(data));
