//! The C ABI (`libhakmem.so`'s functions, prefixed) with hostile arguments:
//! impossible sizes and alignments, overflowing products, foreign pointers,
//! cross-thread frees and thread exits, each answer checked; the core in
//! checking mode.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hakmem_cabi::fuzz::c_abi(data, true));
