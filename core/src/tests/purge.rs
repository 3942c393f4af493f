//! Returning memory: delayed purging of free pages in batches, release of
//! empty segments beyond the reserve, purging of cached Large regions.

use std::vec::Vec;

use super::*;
use crate::testing::TestGeo;
use crate::{Config, Geo, Stats};

type A = Allocator<TestSource, TestGeo>;

fn with(config: Config) -> A {
    Allocator::new(TestSource::new(4096), config)
}

/// A delay of 100 ms and room for 64 MiB of free memory to wait for it.
const CFG: Config = Config { purge_delay_ms: 100, purge_dirty_min: 64 << 20, heap_page_cache: 0, ..Config::DEFAULT };

/// Allocate `n` blocks of `size`, then free all but every `keep`-th, so that
/// segments stay in use while most of their pages go back to the pool.
fn sparse(a: &A, heap: &mut LocalHeap, size: usize, n: usize, keep: usize) -> Vec<*mut u8> {
    let ptrs: Vec<_> = (0..n).map(|_| a.alloc(heap, layout(size, 8))).collect();
    let mut kept = Vec::new();
    for (i, p) in ptrs.into_iter().enumerate() {
        if i % keep == 0 {
            kept.push(p);
        } else {
            // SAFETY: live, freed once.
            unsafe { a.free(heap, p) }.unwrap();
        }
    }
    kept
}

fn purged(s: &Stats) -> u64 {
    s.bytes_purged
}

#[test]
fn free_pages_are_purged_after_the_delay_on_a_later_event() {
    let a = with(CFG);
    let mut heap = heap();
    // 2000 B blocks, 16 per 32 KiB span; keep one block in every 100: most
    // spans empty out and go back to the pool, dirty.
    let kept = sparse(&a, &mut heap, 2000, 3000, 100);
    a.detach(&mut heap);
    let s = a.stats();
    assert_eq!(purged(&s), 0, "nothing purged before the delay: {s:?}");
    assert!(s.bytes_dirty > 0, "free pages wait, resident: {s:?}");
    // Time passes; the next pool event (a new span for a class the adopted
    // heap has none of) purges the expired pages, a batch at a time.
    a.source().set_now(1 + 100);
    let mut heap = self::heap();
    let p = a.alloc(&mut heap, layout(64, 8));
    let s = a.stats();
    assert!(purged(&s) > 0, "a pool event after the delay purges: {s:?}");
    assert!(a.source().purged() > 0);
    // collect() purges everything that is left, whatever the clock says.
    a.collect(Some(&mut heap));
    assert_eq!(a.stats().bytes_dirty, 0);
    // SAFETY: live blocks, freed once.
    unsafe { a.free(&mut heap, p) }.unwrap();
    for p in kept {
        // SAFETY: as above.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

#[test]
fn empty_segments_beyond_the_reserve_are_released_at_once() {
    for reserve in [0u8, 2] {
        let a = with(Config { segment_reserve: reserve, ..CFG });
        let mut heap = heap();
        let ptrs: Vec<_> = (0..2000).map(|_| a.alloc(&mut heap, layout(2000, 8))).collect();
        let peak = a.stats().segments;
        for p in ptrs {
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
        a.detach(&mut heap);
        let s = a.stats();
        assert!(peak > 4, "{peak}");
        assert_eq!(s.empty_segments, reserve as usize, "reserve {reserve}: {s:?}");
        assert!(s.segments <= reserve as usize + 1, "reserve {reserve}: {s:?}");
    }
}

/// A program that oscillates around one size does not reserve and release
/// a segment on every swing: the reserve absorbs it.
#[test]
fn the_reserve_stops_oscillation_from_thrashing() {
    for (reserve, max_reserves) in [(0u8, usize::MAX), (1, 4)] {
        let a = with(Config { segment_reserve: reserve, ..CFG });
        let mut heap = heap();
        let before = a.source().counts().0;
        for _ in 0..20 {
            let ptrs: Vec<_> = (0..40).map(|_| a.alloc(&mut heap, layout(2000, 8))).collect();
            for p in ptrs {
                // SAFETY: live, freed once.
                unsafe { a.free(&mut heap, p) }.unwrap();
            }
            a.detach(&mut heap);
        }
        let reserves = a.source().counts().0 - before;
        if reserve == 0 {
            assert!(reserves >= 20, "without a reserve every swing maps again: {reserves}");
        } else {
            assert!(reserves <= max_reserves, "with a reserve the swings reuse it: {reserves}");
        }
    }
}

#[test]
fn cached_large_regions_are_purged_after_the_delay() {
    let a = with(Config { large_cache_bytes: 8 << 20, ..CFG });
    let mut heap = heap();
    let p = a.alloc(&mut heap, layout(1 << 20, 8));
    // SAFETY: ours.
    unsafe { p.write_bytes(0xaa, 1 << 20) };
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, p) }.unwrap();
    assert!(a.stats().large_cached_bytes > 0);
    assert_eq!(a.stats().bytes_purged, 0);
    a.source().set_now(1 + 100);
    a.purge(false);
    let s = a.stats();
    assert!(s.bytes_purged >= 1 << 20, "{s:?}");
    // The purged region is reused, and reads as zero: no clearing needed.
    let q = a.alloc_zeroed(&mut heap, layout(1 << 20, 8));
    // SAFETY: ours, `1 << 20` bytes.
    assert!(unsafe { core::slice::from_raw_parts(q, 1 << 20) }.iter().all(|&b| b == 0));
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, q) }.unwrap();
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Free pages beyond `max(purge_dirty_min, in-use / 4)` do not wait for
/// the delay: a big release returns its memory as it happens.
#[test]
fn a_big_release_is_purged_at_once_beyond_the_dirty_limit() {
    for (min, at_once) in [(64usize << 20, false), (256 << 10, true)] {
        let a = with(Config { purge_dirty_min: min, ..CFG });
        let mut heap = heap();
        let kept = sparse(&a, &mut heap, 2000, 3000, 100);
        let s = a.stats();
        assert_eq!(s.bytes_purged > 0, at_once, "dirty min {min}: {s:?}");
        if at_once {
            assert!(s.bytes_dirty <= min.max(s.pages_in_use * Geo::<TestGeo>::PAGE_SIZE / 4), "{s:?}");
        }
        for p in kept {
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
        a.detach(&mut heap);
        assert_all_returned(&a);
    }
}
