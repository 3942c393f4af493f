//! The allocator's own accounting: per-class operation counters kept by each
//! heap (fast paths sampled once every `2^N` operations, slow paths exact) and
//! the cold side's page, segment and byte counts, merged when read.

use core::fmt;

use crate::class::{self, NUM_CLASSES, NUM_TINY};
use crate::sync::{AtomicUsize, Ordering};

/// Which counter of a class.
#[derive(Clone, Copy)]
pub(crate) enum Op {
    /// Fast-path allocation (counted in samples).
    FastAlloc = 0,
    /// Fast-path free (counted in samples).
    FastFree = 1,
    /// Allocation served by the slow path.
    SlowAlloc = 2,
    /// Local free that the bins could not absorb.
    SlowFree = 3,
    /// Remote free, counted when the owner drains it.
    Remote = 4,
}

/// A heap's counters. Only the heap's holder writes them (load and store,
/// `Relaxed`: no read-modify-write); any thread may read them for a snapshot.
pub(crate) struct Counters {
    class: [[AtomicUsize; 5]; NUM_CLASSES],
    flushes: AtomicUsize,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            class: core::array::from_fn(|_| core::array::from_fn(|_| AtomicUsize::new(0))),
            flushes: AtomicUsize::new(0),
        }
    }

    /// Add `n` to a counter (holder only).
    #[inline]
    pub(crate) fn add(&self, c: usize, op: Op, n: usize) {
        let a = &self.class[c][op as usize];
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Count a threshold flush (holder only).
    #[inline]
    pub(crate) fn flush(&self) {
        self.flushes.store(self.flushes.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// Add this heap's counts into `s`.
    pub(crate) fn merge_into(&self, s: &mut Stats) {
        for (c, row) in self.class.iter().enumerate() {
            let cs = &mut s.classes[c];
            let shift = if class::is_tiny(c) { s.tiny_sample_shift } else { s.mid_sample_shift };
            let get = |op: Op| row[op as usize].load(Ordering::Relaxed) as u64;
            cs.fast_alloc += get(Op::FastAlloc) << shift;
            cs.fast_free += get(Op::FastFree) << shift;
            cs.slow_alloc += get(Op::SlowAlloc);
            cs.slow_free += get(Op::SlowFree);
            cs.remote_free += get(Op::Remote);
        }
        s.flushes += self.flushes.load(Ordering::Relaxed) as u64;
    }
}

/// Operation counts of one size class. Fast-path counts are estimates
/// (samples × 2^N; exact when N = 0); the others are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Allocations served by a thread's bins.
    pub fast_alloc: u64,
    /// Frees absorbed by a thread's bins.
    pub fast_free: u64,
    /// Allocations that took the slow path (a refill).
    pub slow_alloc: u64,
    /// Local frees that went back to their span.
    pub slow_free: u64,
    /// Frees by a thread that did not own the block, drained by the owner.
    pub remote_free: u64,
}

impl ClassStats {
    /// Allocations of the class.
    pub fn allocs(&self) -> u64 {
        self.fast_alloc + self.slow_alloc
    }
    /// Frees of the class (remote ones once drained).
    pub fn frees(&self) -> u64 {
        self.fast_free + self.slow_free + self.remote_free
    }
}

/// A snapshot of the allocator's accounting (see `Allocator::stats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Live small segments.
    pub segments: usize,
    /// Of those, segments whose every page is free (kept as a reserve).
    pub empty_segments: usize,
    /// Pages handed to heaps (spans in use or in a heap's span cache).
    pub pages_in_use: usize,
    /// Pages holding heap metadata (kept for good; heaps are recycled).
    pub meta_pages: usize,
    /// Regions of their own holding heap metadata (tiny geometries only).
    pub meta_regions: usize,
    /// Heaps ever created (each thread that allocated needed one at a time).
    pub heaps: usize,
    /// Heaps owning spans whose thread has gone, waiting for adoption.
    pub abandoned_heaps: usize,
    /// Live Large allocations.
    pub large_live: usize,
    /// Bytes of their regions.
    pub large_live_bytes: usize,
    /// Bytes of freed Large regions kept for reuse.
    pub large_cached_bytes: usize,
    /// Large allocations and frees so far.
    pub large_allocs: u64,
    /// Large frees so far.
    pub large_frees: u64,
    /// Bytes reserved from the source and not released.
    pub bytes_reserved: usize,
    /// Bytes purged so far (given back to the source's OS while kept reserved).
    pub bytes_purged: u64,
    /// Of the reserved bytes, free ones known not to be resident (purged, or
    /// never touched).
    pub bytes_decommitted: usize,
    /// Free bytes in the pool that may still be resident, waiting for their
    /// purge delay.
    pub bytes_dirty: usize,
    /// Threshold flushes of magazines and LIFOs.
    pub flushes: u64,
    /// The sampling shifts the fast-path counts were taken with.
    pub tiny_sample_shift: u32,
    /// See `tiny_sample_shift`.
    pub mid_sample_shift: u32,
    /// Per-class operation counts.
    pub classes: [ClassStats; NUM_CLASSES],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            segments: 0,
            empty_segments: 0,
            pages_in_use: 0,
            meta_pages: 0,
            meta_regions: 0,
            heaps: 0,
            abandoned_heaps: 0,
            large_live: 0,
            large_live_bytes: 0,
            large_cached_bytes: 0,
            large_allocs: 0,
            large_frees: 0,
            bytes_reserved: 0,
            bytes_purged: 0,
            bytes_decommitted: 0,
            bytes_dirty: 0,
            flushes: 0,
            tiny_sample_shift: 0,
            mid_sample_shift: 0,
            classes: [ClassStats::default(); NUM_CLASSES],
        }
    }
}

impl Stats {
    /// Bytes reserved and backed by memory (reserved minus purged).
    pub fn bytes_committed(&self) -> usize {
        self.bytes_reserved - self.bytes_decommitted
    }

    /// Sum of the per-class counts over a range of classes.
    pub fn total(&self, classes: core::ops::Range<usize>) -> ClassStats {
        let mut t = ClassStats::default();
        for c in &self.classes[classes] {
            t.fast_alloc += c.fast_alloc;
            t.fast_free += c.fast_free;
            t.slow_alloc += c.slow_alloc;
            t.slow_free += c.slow_free;
            t.remote_free += c.remote_free;
        }
        t
    }

    /// Tiny classes' counts.
    pub fn tiny(&self) -> ClassStats {
        self.total(1..NUM_TINY + 1)
    }

    /// Mid classes' counts.
    pub fn mid(&self) -> ClassStats {
        self.total(NUM_TINY + 1..NUM_CLASSES)
    }
}

/// The printer: a summary in a few lines, then one line per class in use.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = |b: usize| b / 1024;
        writeln!(
            f,
            "hakmem: reserved {} KiB (committed {} KiB, {} KiB free and resident, purged {} KiB so far), {} segments ({} empty), {} pages in use",
            kib(self.bytes_reserved),
            kib(self.bytes_committed()),
            kib(self.bytes_dirty),
            self.bytes_purged / 1024,
            self.segments,
            self.empty_segments,
            self.pages_in_use
        )?;
        writeln!(
            f,
            "hakmem: {} heaps ({} abandoned), Large {} live ({} KiB, {} KiB cached), {} allocs / {} frees, {} flushes",
            self.heaps,
            self.abandoned_heaps,
            self.large_live,
            kib(self.large_live_bytes),
            kib(self.large_cached_bytes),
            self.large_allocs,
            self.large_frees,
            self.flushes
        )?;
        for (name, t) in [("tiny", self.tiny()), ("mid", self.mid())] {
            let fast = t.fast_alloc as f64 / (t.allocs().max(1)) as f64;
            writeln!(
                f,
                "hakmem: {name:4} allocs {} ({:.1}% fast), frees {} ({} remote)",
                t.allocs(),
                100.0 * fast,
                t.frees(),
                t.remote_free
            )?;
        }
        for (c, cs) in self.classes.iter().enumerate() {
            if cs.allocs() + cs.frees() == 0 {
                continue;
            }
            writeln!(
                f,
                "hakmem:   class {c:2} ({:6} B): fast {}/{} slow {}/{} remote {}",
                class::size_of_class(c),
                cs.fast_alloc,
                cs.fast_free,
                cs.slow_alloc,
                cs.slow_free,
                cs.remote_free
            )?;
        }
        Ok(())
    }
}
