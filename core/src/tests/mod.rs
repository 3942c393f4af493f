//! Tests of the allocator over the tracking `TestSource`.

mod basic;
mod config;
mod model;
mod purge;
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

/// Fill `len` bytes at `p` with a pattern derived from `seed`.
pub(crate) fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in pattern_bytes(len) {
        // SAFETY: the caller's block has `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

/// The bytes of a `len`-byte block that `fill` and `check` touch: all of
/// them natively; under Miri, where each byte costs thousands of
/// instructions, every 61st and the last (still every page of the block and
/// both ends, so an out-of-bounds block is still caught).
fn pattern_bytes(len: usize) -> impl Iterator<Item = usize> {
    let step = if cfg!(miri) { 61 } else { 1 };
    (0..len).step_by(step).chain((len > 0 && !(len - 1).is_multiple_of(step)).then(|| len - 1))
}

/// Check the pattern `fill` wrote.
pub(crate) fn check(p: *mut u8, len: usize, seed: u8) {
    for i in pattern_bytes(len) {
        // SAFETY: the caller's block has `len` bytes.
        let v = unsafe { p.add(i).read() };
        assert_eq!(v, seed.wrapping_add(i as u8), "byte {i} of {p:p} ({len} bytes) corrupted");
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
