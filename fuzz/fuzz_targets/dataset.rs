#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| harmaug_tests::fuzz::dataset(data));
