//! Every configuration switch, observed through its effect; and exact
//! statistics in a single-thread run whose true counts are known.

use std::vec::Vec;

use super::*;
use crate::class::{FIRST_MID, NUM_TINY, size_of_class};
use crate::config::ALL_TINY;
use crate::testing::TestGeo;
use crate::{Config, Geo, Stats};

type A = Allocator<TestSource, TestGeo>;

fn with(config: Config) -> A {
    Allocator::new(TestSource::new(4096), config)
}

/// Exact counting: every fast-path operation sampled.
const EXACT: Config = Config { tiny_sample_shift: 0, mid_sample_shift: 0, ..Config::DEFAULT };

fn class_of(size: usize) -> usize {
    crate::class::class_of(size, 8).unwrap()
}

/// Blocks of `size` filling `pages` spans; returns them in allocation order.
fn fill_spans(a: &A, heap: &mut LocalHeap, size: usize, pages: usize) -> Vec<*mut u8> {
    let c = class_of(size);
    let cap = Geo::<TestGeo>::SPAN[c] as usize * Geo::<TestGeo>::PAGE_SIZE / size_of_class(c);
    (0..cap * pages).map(|_| a.alloc(heap, layout(size, 8))).collect()
}

fn free_all(a: &A, heap: &mut LocalHeap, ptrs: &[*mut u8]) {
    for &p in ptrs {
        // SAFETY: live blocks, freed once.
        unsafe { a.free(heap, p) }.unwrap();
    }
}

#[test]
fn stats_are_exact_in_a_single_thread() {
    let a = with(EXACT);
    let mut heap = heap();
    let mut rng = Rng(99);
    let mut want = [(0u64, 0u64); crate::class::NUM_CLASSES];
    let mut live = Vec::new();
    let mut large = (0u64, 0u64);
    for _ in 0..steps(20_000) {
        if rng.below(3) != 0 || live.is_empty() {
            let size = [8usize, 48, 200, 1000, 3000, 9000, 30000, 100_000][rng.below(8) as usize];
            let p = a.alloc(&mut heap, layout(size, 8));
            match crate::class::class_of(size, 8) {
                Some(c) if Geo::<TestGeo>::SPAN[c] != 0 => want[c].0 += 1,
                _ => large.0 += 1,
            }
            live.push((p, size));
        } else {
            let (p, size) = live.swap_remove(rng.below(live.len() as u64) as usize);
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
            match crate::class::class_of(size, 8) {
                Some(c) if Geo::<TestGeo>::SPAN[c] != 0 => want[c].1 += 1,
                _ => large.1 += 1,
            }
        }
    }
    let s: Stats = a.stats();
    for (c, (cs, want)) in s.classes.iter().zip(want).enumerate().skip(1) {
        assert_eq!((cs.allocs(), cs.frees()), want, "class {c}: {cs:?}");
    }
    assert_eq!((s.large_allocs, s.large_frees), large);
    for (p, _) in live {
        // SAFETY: live, freed once.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

#[test]
fn remote_frees_are_counted_when_drained() {
    let a = with(EXACT);
    let mut heap = heap();
    let ptrs: Vec<_> = (0..100).map(|_| a.alloc(&mut heap, layout(64, 8))).collect();
    struct Send(Vec<*mut u8>);
    // SAFETY: the blocks are handed over whole.
    unsafe impl core::marker::Send for Send {}
    let batch = Send(ptrs);
    std::thread::scope(|s| {
        s.spawn(|| {
            let b = batch;
            for p in b.0 {
                // SAFETY: live blocks handed to us.
                unsafe { a.free_detached(p) }.unwrap();
            }
        });
    });
    a.collect(Some(&mut heap));
    assert_eq!(a.stats().classes[class_of(64)].remote_free, 100);
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Frees of the first of three full pages: on TinyHeap they go back to their
/// page (slow path); on the magazine they stay in the bin (fast path).
fn first_page_frees_slow(config: Config, size: usize) -> u64 {
    let a = with(Config { ..config });
    let mut heap = heap();
    let ptrs = fill_spans(&a, &mut heap, size, 3);
    let first = Geo::<TestGeo>::desc_of(ptrs[0]);
    let on_first: Vec<_> = ptrs.iter().copied().filter(|&p| Geo::<TestGeo>::desc_of(p) == first).collect();
    let before = a.stats().classes[class_of(size)].slow_free;
    free_all(&a, &mut heap, &on_first[..on_first.len().min(100)]);
    a.stats().classes[class_of(size)].slow_free - before
}

#[test]
fn switch_tiny_heap_box_and_classes() {
    let on = first_page_frees_slow(EXACT, 64);
    assert!(on > 0, "TinyHeap: frees to a non-current page go to the page");
    let off = first_page_frees_slow(Config { tiny_heap: false, ..EXACT }, 64);
    assert_eq!(off, 0, "magazine: they stay in the bin");
    let bit = 1 << (class_of(64) - 1);
    assert_eq!(first_page_frees_slow(Config { tiny_heap_classes: ALL_TINY & !bit, ..EXACT }, 64), 0);
    assert!(first_page_frees_slow(Config { tiny_heap_classes: ALL_TINY & !bit, ..EXACT }, 128) > 0);
}

#[test]
fn switch_hot_front() {
    for (mask, hot) in [(ALL_TINY, true), (0, false)] {
        let a = with(Config { tiny_hot_classes: mask, ..EXACT });
        let mut heap = heap();
        let p = a.alloc(&mut heap, layout(1000, 8));
        let q = a.alloc(&mut heap, layout(1000, 8));
        let before = a.source().owns_calls();
        // SAFETY: live block allocated with this layout.
        unsafe { a.free_sized_or(&mut heap, p, layout(1000, 8), |f| panic!("{f}")) };
        let asked = a.source().owns_calls() - before;
        assert_eq!(asked == 0, hot, "hot front {hot}: {asked} descriptor lookups");
        // SAFETY: live block.
        unsafe { a.free(&mut heap, q) }.unwrap();
        a.detach(&mut heap);
    }
    let mut c = Config::DEFAULT;
    c.set("HAKMEM_TINY_C6_HOT", "0").unwrap();
    assert!(!c.is_hot_class(class_of(400)) && c.is_hot_class(class_of(200)) && c.is_hot_class(class_of(600)));
}

/// Magazine classes: a free that finds the magazine full flushes half of it
/// (SAFE); with meta mode 0 nothing is flushed until the thread detaches.
#[test]
fn switch_meta_mode() {
    for (safe, flushes) in [(true, true), (false, false)] {
        let a = with(Config { tiny_heap: false, tiny_mag_cap: 16, meta_safe: safe, ..EXACT });
        let mut heap = heap();
        let ptrs = fill_spans(&a, &mut heap, 64, 3);
        free_all(&a, &mut heap, &ptrs);
        assert_eq!(a.stats().flushes > 0, flushes, "meta_safe {safe}");
        a.detach(&mut heap);
        assert_all_returned(&a);
    }
}

#[test]
fn switch_mag_cap() {
    let flushes = |cap| {
        let a = with(Config { tiny_heap: false, tiny_mag_cap: cap, ..EXACT });
        let mut heap = heap();
        let ptrs = fill_spans(&a, &mut heap, 64, 4);
        free_all(&a, &mut heap, &ptrs);
        a.stats().flushes
    };
    assert!(flushes(8) > flushes(64), "a smaller magazine flushes more often");
}

#[test]
fn switch_count_sample() {
    let a = with(Config { tiny_sample_shift: 4, mid_sample_shift: 2, ..Config::DEFAULT });
    let mut heap = heap();
    let mut ptrs = Vec::new();
    for i in 0..1000 {
        ptrs.push(a.alloc(&mut heap, layout(if i % 2 == 0 { 32 } else { 2000 }, 8)));
    }
    free_all(&a, &mut heap, &ptrs);
    let s = a.stats();
    let (t, m) = (s.classes[class_of(32)], s.classes[class_of(2000)]);
    assert_eq!(t.fast_alloc % 16, 0);
    assert_eq!(m.fast_alloc % 4, 0);
    assert!(t.allocs().abs_diff(500) <= 16 && m.allocs().abs_diff(500) <= 4, "{t:?} {m:?}");
}

/// Mid frees absorbed by the bins, by ring and LIFO size.
fn mid_fast_frees(config: Config) -> (u64, u64) {
    let a = with(config);
    let mut heap = heap();
    let ptrs: Vec<_> = (0..64).map(|_| a.alloc(&mut heap, layout(2000, 8))).collect();
    free_all(&a, &mut heap, &ptrs);
    let cs = a.stats().classes[class_of(2000)];
    (cs.fast_free, cs.slow_free)
}

#[test]
fn switch_ring_and_lifo() {
    assert_eq!(mid_fast_frees(Config { mid_ring: 0, mid_lifo_max: 0, ..EXACT }), (0, 64));
    assert_eq!(mid_fast_frees(Config { mid_ring: 8, mid_lifo_max: 0, ..EXACT }), (8, 56));
    // Ring 8, LIFO 16: frees 1-24 are absorbed; the 25th finds both full,
    // flushes half the LIFO and is pushed; then every 8th free does the same.
    assert_eq!(mid_fast_frees(Config { mid_ring: 8, mid_lifo_max: 16, ..EXACT }), (59, 5));
    // The byte cap bounds ring and LIFO together: 4 blocks of 2 KiB here.
    assert_eq!(mid_fast_frees(Config { mid_ring: 16, mid_lifo_max: 256, mid_bin_bytes: 2048 * 4, ..EXACT }), (4, 60));
}

#[test]
fn switch_ring_return_div() {
    for (div, left) in [(2u8, 8u32 + 1), (4, 12 + 1)] {
        let a = with(Config { mid_ring: 0, mid_lifo_max: 16, ring_return_div: div, ..EXACT });
        let mut heap = heap();
        let ptrs: Vec<_> = (0..17).map(|_| a.alloc(&mut heap, layout(2000, 8))).collect();
        free_all(&a, &mut heap, &ptrs);
        // The 17th free found the LIFO full and flushed len/div of it.
        assert_eq!(heap.mid[class_of(2000) - FIRST_MID].lifo_len, left, "div {div}");
        a.detach(&mut heap);
    }
}

#[test]
fn switch_drain_budget() {
    let a = with(Config { drain_budget: 10, ..EXACT });
    let mut heap = heap();
    let keep: Vec<_> = (0..100).map(|_| a.alloc(&mut heap, layout(64, 8))).collect();
    for &p in &keep {
        // SAFETY: live blocks; a free without a heap is a remote free.
        unsafe { a.free_detached(p) }.unwrap();
    }
    // One slow path (of another class) drains one budget's worth.
    let big = a.alloc(&mut heap, layout(3000, 8));
    assert_eq!(a.stats().classes[class_of(64)].remote_free, 10, "one drain of budget 10");
    // SAFETY: live.
    unsafe { a.free(&mut heap, big) }.unwrap();
    a.detach(&mut heap);
    assert_eq!(a.stats().classes[class_of(64)].remote_free, 100, "detach drains the rest");
    assert_all_returned(&a);
}

#[test]
fn switch_heap_page_cache_and_segment_reserve() {
    for (cache, reserve) in [(0u8, 0u8), (4, 2)] {
        let a = with(Config { heap_page_cache: cache, segment_reserve: reserve, ..EXACT });
        let mut heap = heap();
        let ptrs = fill_spans(&a, &mut heap, 64, 40);
        free_all(&a, &mut heap, &ptrs);
        let s = a.stats();
        // Emptied spans stay in the heap's cache (counted as in use) up to `cache`.
        assert!(s.pages_in_use <= 1 + cache as usize, "cache {cache}: {s:?}");
        a.detach(&mut heap);
        let s = a.stats();
        assert!(s.empty_segments <= reserve as usize, "reserve {reserve}: {s:?}");
        if reserve > 0 {
            assert!(s.empty_segments > 0, "reserve {reserve}: {s:?}");
        }
    }
}

#[test]
fn switch_large_cache_bytes() {
    for limit in [0usize, 1 << 20] {
        let a = with(Config { large_cache_bytes: limit, ..EXACT });
        let mut heap = heap();
        let p = a.alloc(&mut heap, layout(300_000, 8));
        // SAFETY: live.
        unsafe { a.free(&mut heap, p) }.unwrap();
        let cached = a.stats().large_cached_bytes;
        assert!(cached <= limit && (cached > 0) == (limit > 0), "limit {limit}: {cached}");
        a.detach(&mut heap);
    }
}

#[test]
fn tiny_classes_cover_the_mask() {
    assert_eq!(ALL_TINY.count_ones() as usize, NUM_TINY);
}

/// The debug family, in checking builds.
#[cfg(feature = "check-invariants")]
mod debug {
    use super::*;
    use crate::segment::site;

    #[test]
    fn delta_trace_stamps_the_last_site() {
        let mut c = EXACT;
        c.set("HAKMEM_TINY_C6_DELTA_TRACE", "1").unwrap();
        let a = with(c);
        let mut heap = heap();
        let ptrs = fill_spans(&a, &mut heap, 64, 3);
        let first = crate::alloc::head_desc::<TestGeo>(ptrs[0]);
        // SAFETY: the span is ours; reading its stamp.
        assert_eq!(unsafe { (*first).site.get() }, site::ALLOC);
        // SAFETY: live, freed once: the first page is not current, so the
        // block goes back to its span.
        unsafe { a.free(&mut heap, ptrs[0]) }.unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { (*first).site.get() }, site::FREE);
        free_all(&a, &mut heap, &ptrs[1..]);
        a.detach(&mut heap);
    }

    #[test]
    fn delta_debug_summarises_sites() {
        let mut c = EXACT;
        c.set("HAKMEM_TINY_C6_DELTA_DEBUG", "1").unwrap();
        let a = with(c);
        let mut heap = heap();
        let ptrs = fill_spans(&a, &mut heap, 64, 3);
        free_all(&a, &mut heap, &ptrs);
        let sum = a.delta_summary(&heap);
        let get = |name| sum.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(get("alloc") >= 3 && get("attach") >= 3 && get("free") > 0, "{sum:?}");
        a.detach(&mut heap);
    }

    #[test]
    #[should_panic(expected = "outside the span or off a block boundary")]
    fn debug_pop_fails_fast_on_a_corrupt_free_list() {
        let mut c = EXACT;
        c.set("HAKMEM_TINY_C6_DEBUG_POP", "1").unwrap();
        let a = with(c);
        let mut heap = heap();
        let ptrs = fill_spans(&a, &mut heap, 64, 3);
        // All but one block of the first span go back to it (it is not the
        // current page), leaving it partial with a free list.
        let first = Geo::<TestGeo>::desc_of(ptrs[0]);
        let on_first: Vec<_> = ptrs.iter().copied().filter(|&p| Geo::<TestGeo>::desc_of(p) == first).collect();
        free_all(&a, &mut heap, &on_first[1..]);
        // SAFETY: deliberately corrupt: a write after free puts a link into
        // the middle of a block.
        unsafe { on_first[3].cast::<usize>().write(on_first[0].addr() + 3) };
        // Exhaust the current page: the next refill takes the first span.
        for _ in 0..ptrs.len() {
            a.alloc(&mut heap, layout(64, 8));
        }
    }
}
