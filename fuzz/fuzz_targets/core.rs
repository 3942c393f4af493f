//! Alloc / realloc / free / hand-off / check sequences on the core over the
//! test geometry, against the shadow model, in checking mode.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hakmem_tests::fuzz::core_actions(data));
