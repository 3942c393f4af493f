//! Alignment, realloc across tiers, zeroing, exhaustion, descriptors.

use std::vec::Vec;

use super::*;
use crate::class::{CLASS_SIZE, NUM_CLASSES};
use crate::testing::TestGeo;
use crate::{Geo, PageSource, Server};

/// Every power-of-two alignment from 1 B to four segments, with sizes from 0
/// to past the Mid limit: aligned, usable, writable, freed.
fn alignment_matrix<G: Geometry>(page: usize, max_size: usize) {
    let a = new_alloc::<G>(page);
    let mut heap = heap();
    let mut sizes: Vec<usize> = std::vec![0, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 1024, 1025];
    for &s in &CLASS_SIZE[1..] {
        let s = s as usize;
        sizes.extend([s - 1, s, s + 1]);
    }
    let mut s = 2048;
    while s <= max_size {
        sizes.extend([s - 1, s, s + 1]);
        s *= 2;
    }
    if cfg!(miri) {
        // A third of the sizes, still spread over every class and tier.
        sizes = sizes.into_iter().step_by(3).collect();
    }
    let mut align = 1;
    while align <= 4 * Geo::<G>::SEGMENT_SIZE {
        // Under Miri, the alignments that change the path: none, a block's,
        // a page, a segment and above (the probing free).
        if cfg!(miri) && ![1, 16, 4096, Geo::<G>::SEGMENT_SIZE, 4 * Geo::<G>::SEGMENT_SIZE].contains(&align) {
            align *= 2;
            continue;
        }
        let mut ptrs = Vec::new();
        for &size in &sizes {
            let p = a.alloc(&mut heap, layout(size, align));
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p.addr() % align, 0, "size {size} align {align}");
            // SAFETY: a live block.
            assert!(unsafe { a.usable_size(p) }.unwrap() >= size);
            fill(p, size.min(4096), size as u8);
            ptrs.push((p, size));
        }
        for (p, size) in ptrs {
            check(p, size.min(4096), size as u8);
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
        align *= 2;
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

#[test]
fn alignment_matrix_test_geometry() {
    alignment_matrix::<TestGeo>(4096, if cfg!(miri) { 1 << 17 } else { 8 << 20 });
}

#[test]
#[cfg_attr(miri, ignore = "2 MiB segments are slow under Miri")]
fn alignment_matrix_server_geometry() {
    alignment_matrix::<Server>(4096, 8 << 20);
}

/// Naturally aligned small sizes are not over-allocated.
#[test]
fn natural_alignment_costs_nothing() {
    let a = new_alloc::<Server>(4096);
    let mut heap = heap();
    for size in [8usize, 16, 64, 256, 1024, 4096, 8192, 32768, 65536] {
        let p = a.alloc(&mut heap, layout(size, size));
        assert_eq!(p.addr() % size, 0);
        // SAFETY: live block.
        assert_eq!(unsafe { a.usable_size(p) }.unwrap(), size, "({size}, {size}) over-allocated");
        // SAFETY: live, freed once.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    a.detach(&mut heap);
}

/// Growing and shrinking through every class boundary and into Large keeps
/// the bytes; a size that stays in its class stays in place.
#[test]
fn realloc_across_every_tier_keeps_bytes() {
    let a = new_alloc::<TestGeo>(4096);
    let mut heap = heap();
    let mut steps: Vec<usize> =
        (1..NUM_CLASSES).flat_map(|c| [CLASS_SIZE[c] as usize, CLASS_SIZE[c] as usize + 1]).collect();
    steps.extend([100_000, 300_000, 1 << 20]);
    let mut p = a.alloc(&mut heap, layout(1, 8));
    let mut len = 1;
    fill(p, len, 42);
    for &n in steps.iter().chain(steps.iter().rev()) {
        // SAFETY: live block of `len` bytes.
        let q = unsafe { a.realloc(&mut heap, p, len, 8, n) }.unwrap();
        check(q, len.min(n), 42);
        fill(q, n, 42);
        p = q;
        len = n;
    }
    // Same class: in place.
    // SAFETY: live block.
    let q = unsafe { a.realloc(&mut heap, p, len, 8, len - 1) }.unwrap();
    assert_eq!(q, p);
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, q) }.unwrap();
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Zeroed allocations are zero, including reused dirty blocks and Large
/// regions taken from the cache.
#[test]
fn zeroed_is_zero() {
    let a = new_alloc::<TestGeo>(4096);
    let mut heap = heap();
    for round in 0..3 {
        let mut ptrs = Vec::new();
        for &size in &[8usize, 100, 1024, 5000, 30000, 100_000, 200_000] {
            let p = a.alloc_zeroed(&mut heap, layout(size, 16));
            expect_bytes(p, size, &[0; 256], &std::format!("not zero (round {round})"));
            fill(p, size, 0xa5);
            ptrs.push(p);
        }
        for p in ptrs {
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// A source that runs dry: allocations return null, nothing already
/// allocated is disturbed, and allocation works again once memory returns.
#[test]
fn exhausted_source_gives_null_then_recovers() {
    for budget in 0..6 {
        let a = new_alloc::<TestGeo>(4096);
        let mut heap = heap();
        let mut live = Vec::new();
        a.source().set_budget(Some(budget));
        let mut nulls = 0;
        // (Under Miri 40 steps: still eight Large reservations, more than
        // the largest budget.)
        for i in 0..steps(2000) {
            let size = [16usize, 200, 3000, 20000, 70000][i % 5];
            let p = a.alloc(&mut heap, layout(size, 8));
            if p.is_null() {
                nulls += 1;
                continue;
            }
            fill(p, size, i as u8);
            live.push((p, size, i as u8));
        }
        assert!(nulls > 0, "budget {budget}: the source never ran dry");
        for &(p, size, seed) in &live {
            check(p, size, seed);
        }
        a.source().set_budget(None);
        for size in [16usize, 200, 3000, 20000, 70000] {
            let p = a.alloc(&mut heap, layout(size, 8));
            assert!(!p.is_null(), "budget {budget}: no recovery for {size}");
            live.push((p, size, 0));
            fill(p, size, 0);
        }
        for (p, size, seed) in live {
            check(p, size, seed);
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
        a.detach(&mut heap);
        assert_all_returned(&a);
    }
}

/// Every block of every class of a span finds that span's descriptor.
#[test]
fn every_block_finds_its_span() {
    let a = new_alloc::<TestGeo>(4096);
    let mut heap = heap();
    #[allow(clippy::needless_range_loop)]
    for c in 1..NUM_CLASSES {
        if Geo::<TestGeo>::SPAN[c] == 0 {
            continue;
        }
        let size = CLASS_SIZE[c] as usize;
        let first = a.alloc(&mut heap, layout(size, 8));
        let head = crate::alloc::head_desc::<TestGeo>(first);
        let mut ptrs = std::vec![first];
        // SAFETY: the head of a live span.
        let cap = unsafe { (*head).capacity.get() } as usize;
        while ptrs.len() < cap {
            let p = a.alloc(&mut heap, layout(size, 8));
            ptrs.push(p);
        }
        for &p in &ptrs {
            assert_eq!(crate::alloc::head_desc::<TestGeo>(p), head, "class {c}: {p:p}");
            // SAFETY: live block.
            assert_eq!(unsafe { a.usable_size(p) }.unwrap(), size);
        }
        for p in ptrs {
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Pointers that are not blocks are reported, not followed.
#[test]
fn bad_frees_are_reported() {
    use crate::FaultKind;
    let a = new_alloc::<TestGeo>(4096);
    let mut heap = heap();
    let mut local = 0u64;
    // SAFETY: the pointer is not ours; `free` must say so without touching it.
    let f = unsafe { a.free(&mut heap, (&raw mut local).cast()) }.unwrap_err();
    assert_eq!(f.kind, FaultKind::NotOurs);
    let big = a.alloc(&mut heap, layout(200_000, 8));
    // SAFETY: an interior pointer of a Large block; reported, not freed.
    let f = unsafe { a.free(&mut heap, big.add(64)) }.unwrap_err();
    assert_eq!(f.kind, FaultKind::NotABlock);
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, big) }.unwrap();
    // The span of a freed page is free: a second free of a block in it is caught.
    let p = a.alloc(&mut heap, layout(20_000, 8));
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, p) }.unwrap();
    a.detach(&mut heap);
    a.collect(None);
    if a.source().owns(Geo::<TestGeo>::segment_of(p).addr()) {
        // SAFETY: deliberately stale: its span went back to the pool, and
        // the allocator must report it without touching it.
        let f = unsafe { a.free(&mut heap, p) }.unwrap_err();
        assert_eq!(f.kind, FaultKind::DoubleFree);
    }
    assert_all_returned(&a);
}
