//! Tests of the allocator over the tracking `TestSource`.

mod basic;
mod config;
mod model;
mod purge;
mod safety;
mod threads;

use core::alloc::Layout;
use std::vec::Vec;

use crate::testing::TestSource;
use crate::{Allocator, Config, Geometry, LocalHeap};

/// A small deterministic generator (xorshift64*).
pub(crate) struct Rng(pub u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How many steps a randomised test takes: fewer under Miri.
pub(crate) fn steps(native: usize) -> usize {
    if cfg!(miri) { native / 50 } else { native }
}

pub(crate) fn new_alloc<G: Geometry>(page: usize) -> Allocator<TestSource, G> {
    Allocator::new(TestSource::new(page), Config::DEFAULT)
}

pub(crate) fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// The 256-byte period of the pattern `fill` writes: byte `i` is `seed + i`.
fn pattern(seed: u8) -> [u8; 256] {
    core::array::from_fn(|i| seed.wrapping_add(i as u8))
}

/// Fill `len` bytes at `p` with a pattern derived from `seed`. Copies and
/// compares by whole chunks, which Miri runs as single operations (a loop
/// over bytes costs thousands of interpreted instructions per byte).
pub(crate) fn fill(p: *mut u8, len: usize, seed: u8) {
    let pat = pattern(seed);
    for off in (0..len).step_by(pat.len()) {
        let n = pat.len().min(len - off);
        // SAFETY: the caller's block has `len` bytes.
        unsafe { core::ptr::copy_nonoverlapping(pat.as_ptr(), p.add(off), n) };
    }
}

/// Check the pattern `fill` wrote.
pub(crate) fn check(p: *mut u8, len: usize, seed: u8) {
    expect_bytes(p, len, &pattern(seed), "corrupted");
}

/// Check that `len` bytes at `p` repeat `pat` (from offset 0).
pub(crate) fn expect_bytes(p: *mut u8, len: usize, pat: &[u8; 256], what: &str) {
    for off in (0..len).step_by(pat.len()) {
        let n = pat.len().min(len - off);
        // SAFETY: the caller's block has `len` bytes.
        let got = unsafe { core::slice::from_raw_parts(p.add(off), n) };
        if got != &pat[..n] {
            let i = off + got.iter().zip(pat).position(|(a, b)| a != b).unwrap_or(0);
            panic!("byte {i} of {p:p} ({len} bytes) {what}");
        }
    }
}

/// After every block is freed and every heap detached: all pages and Large
/// regions are back, and the source holds only the segments that keep heap
/// metadata.
pub(crate) fn assert_all_returned<G: Geometry>(a: &Allocator<TestSource, G>) {
    a.collect(None);
    let s = a.stats();
    assert_eq!(s.pages_in_use, 0, "{s:?}");
    assert_eq!(s.large_live, 0, "{s:?}");
    assert_eq!(s.large_cached_bytes, 0, "{s:?}");
    assert_eq!(s.abandoned_heaps, 0, "{s:?}");
    let regions: Vec<_> = a.source().regions();
    assert_eq!(regions.len(), s.segments + s.meta_regions, "{s:?} {regions:?}");
    assert!(s.segments <= 1 + s.meta_pages, "{s:?}");
}

pub(crate) fn heap() -> std::boxed::Box<LocalHeap> {
    std::boxed::Box::new(LocalHeap::new())
}
