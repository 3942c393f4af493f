//! The same on the microcontroller geometry over a tiny region that runs out.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hakmem_tests::fuzz::region(data));
