//! Fuzz target `webhook_request`: see `triggerd::testing::fuzz::webhook_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| triggerd::testing::fuzz::webhook_request(data));
