//! The defined answers to bad input (docs/SAFETY.md), at the core's API:
//! faults with nothing changed, nulls, and fail-fast stops (the test source's
//! `fatal` panics, so a stop is a `should_panic` here).

use std::vec::Vec;

use super::*;
use crate::testing::TestGeo;
use crate::{FaultKind, Geo};

type A = Allocator<TestSource, TestGeo>;

fn new() -> A {
    new_alloc::<TestGeo>(4096)
}

/// Interior pointers of Tiny, Mid and Large blocks, and the start of a block
/// never handed out, are `NotABlock`; the blocks stay live and usable.
#[test]
fn interior_pointers_are_not_blocks() {
    let a = new();
    let mut heap = heap();
    for size in [8usize, 24, 48, 1000, 1280, 5000, 30000, 200_000] {
        let p = a.alloc(&mut heap, layout(size, 8));
        fill(p, size, 3);
        for off in [1usize, 4, 8, size / 2, size - 1] {
            if off == 0 || off >= size || (size == 8 && off == 8) {
                continue;
            }
            // (Deep inside a Large block, past its first segment, the
            // pointer's segment is no region of ours: `NotOurs`.)
            let want = |k| k == FaultKind::NotABlock || (size > 100_000 && k == FaultKind::NotOurs);
            // SAFETY: deliberately bad: must be reported without any change.
            let f = unsafe { a.free(&mut heap, p.add(off)) }.unwrap_err();
            assert!(want(f.kind), "size {size} offset {off}: {f:?}");
            // SAFETY: as above.
            let f = unsafe { a.realloc(&mut heap, p.add(off), 1, 8, size * 2) }.unwrap_err();
            assert!(want(f.kind), "realloc: size {size} offset {off}: {f:?}");
            // SAFETY: as above; a thread without a heap reports it too.
            let f = unsafe { a.free_detached(p.add(off)) }.unwrap_err();
            assert!(want(f.kind), "detached: size {size} offset {off}: {f:?}");
        }
        check(p, size, 3);
        // SAFETY: live, freed once.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
    // A block boundary past the span's bump: never carved, never handed out
    // (server pages hold 1365 blocks of 48 B; a refill carves 85).
    let a = new_alloc::<crate::Server>(4096);
    let mut heap = super::heap();
    let p = a.alloc(&mut heap, layout(48, 8));
    // SAFETY: deliberately bad: inside the span, on a boundary, not carved.
    let f = unsafe { a.free(&mut heap, p.add(1000 * 48)) }.unwrap_err();
    assert_eq!(f.kind, FaultKind::NotABlock);
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, p) }.unwrap();
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Impossible requests are null, never a panic: sizes near `isize::MAX`,
/// alignments no source can give, reallocs to such sizes (which leave the
/// block as it was).
#[test]
// Miri backs the test source with real allocations and stops at a huge one
// (resource exhaustion) instead of letting the source refuse it.
#[cfg_attr(miri, ignore)]
fn impossible_requests_are_null() {
    let a = new();
    let mut heap = heap();
    let huge = isize::MAX as usize;
    for (size, align) in [(huge - 4096, 8), (huge / 2, 4096), (huge - 7, 8), (1 << 62, 1), (8, 1 << 62), (1, 1 << 45)] {
        if core::alloc::Layout::from_size_align(size, align).is_err() {
            continue;
        }
        assert!(a.alloc(&mut heap, layout(size, align)).is_null(), "({size}, {align})");
        assert!(a.alloc_zeroed(&mut heap, layout(size, align)).is_null(), "zeroed ({size}, {align})");
    }
    let p = a.alloc(&mut heap, layout(100, 8));
    fill(p, 100, 9);
    for n in [huge - 4096, huge, usize::MAX] {
        // SAFETY: a live block; the answer is null and the block unchanged.
        let q = unsafe { a.realloc(&mut heap, p, 100, 8, n) }.unwrap();
        assert!(q.is_null(), "realloc to {n}");
        check(p, 100, 9);
    }
    // Zero sizes are served (as one byte) and freed.
    let z = a.alloc(&mut heap, layout(0, 1));
    assert!(!z.is_null());
    // SAFETY: live blocks, freed once.
    unsafe {
        a.free(&mut heap, z).unwrap();
        a.free(&mut heap, p).unwrap();
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// A realloc of a block whose page went back is a double free, reported.
#[test]
fn realloc_of_a_freed_block_is_reported() {
    let a = new();
    let mut heap = heap();
    let big = a.alloc(&mut heap, layout(200_000, 8));
    // SAFETY: live, freed once.
    unsafe { a.free(&mut heap, big) }.unwrap();
    // SAFETY: deliberately stale: the Large region is cached (its descriptor
    // says so) or released (not ours).
    let f = unsafe { a.realloc(&mut heap, big, 10, 8, 20) }.unwrap_err();
    assert!(matches!(f.kind, FaultKind::DoubleFree | FaultKind::NotOurs), "{f:?}");
    // SAFETY: as above.
    let f = unsafe { a.free(&mut heap, big) }.unwrap_err();
    assert!(matches!(f.kind, FaultKind::DoubleFree | FaultKind::NotOurs), "{f:?}");
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Fill a Tiny page, free all but the first block back to the bin, then
/// overwrite the link of the bin's head with `bad`: the next allocations
/// must stop before following it.
fn corrupt_tiny_link(bad: impl Fn(*mut u8) -> *mut u8) {
    let a = new();
    let mut heap = heap();
    let ptrs: Vec<_> = (0..8).map(|_| a.alloc(&mut heap, layout(64, 8))).collect();
    for &p in &ptrs[1..] {
        // SAFETY: live, freed once.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    let victim = ptrs[7];
    // SAFETY: deliberately corrupt: a write after free into the link word.
    // A pointer with provenance, so that Miri judges the allocator's reads
    // and not the test's forging of an address.
    unsafe { victim.cast::<*mut u8>().write(bad(ptrs[0])) };
    for _ in 0..16 {
        a.alloc(&mut heap, layout(64, 8));
    }
    unreachable!("a corrupt link was followed");
}

#[test]
#[should_panic(expected = "corrupted free list")]
fn corrupt_tiny_link_to_foreign_memory_stops() {
    static mut OUTSIDE: [u64; 16] = [0; 16];
    corrupt_tiny_link(|_| (&raw mut OUTSIDE).cast());
}

#[test]
#[should_panic(expected = "corrupted free list")]
fn corrupt_tiny_link_to_another_page_stops() {
    // Far away in the same segment: the segment header.
    corrupt_tiny_link(|p| p.map_addr(|a| a & !(Geo::<TestGeo>::SEGMENT_SIZE - 1)));
}

/// The same in a Mid LIFO: fill the ring and the LIFO behind it, corrupt the
/// LIFO head's link, allocate.
#[test]
#[should_panic(expected = "corrupted free list")]
fn corrupt_mid_lifo_link_stops() {
    static mut OUTSIDE: [u64; 16] = [0; 16];
    let a = new();
    let mut heap = heap();
    let ptrs: Vec<_> = (0..40).map(|_| a.alloc(&mut heap, layout(2000, 8))).collect();
    for &p in &ptrs {
        // SAFETY: live, freed once.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    // The last frees overflowed the ring (16) onto the LIFO: the last one is
    // its head. Corrupt the head's link.
    // SAFETY: deliberately corrupt.
    unsafe { ptrs[39].cast::<usize>().write((&raw mut OUTSIDE).addr()) };
    for _ in 0..40 {
        a.alloc(&mut heap, layout(2000, 8));
    }
    unreachable!("a corrupt link was followed");
}

/// A remote free's link corrupted while it waits on the transfer list: the
/// owner's drain stops before following it.
#[test]
#[should_panic(expected = "corrupted free list")]
fn corrupt_remote_link_stops() {
    static mut OUTSIDE: [u64; 16] = [0; 16];
    let a = new();
    let mut heap = heap();
    let ptrs: Vec<_> = (0..4).map(|_| a.alloc(&mut heap, layout(64, 8))).collect();
    for &p in &ptrs {
        // SAFETY: live, freed once, by a thread without a heap (remote).
        unsafe { a.free_detached(p) }.unwrap();
    }
    // The transfer list is ptrs[3] -> ptrs[2] -> ...: corrupt ptrs[3]'s link.
    // SAFETY: deliberately corrupt.
    unsafe { ptrs[3].cast::<usize>().write((&raw mut OUTSIDE).addr()) };
    // Run the slow path (which drains) until the list is processed.
    for _ in 0..2000 {
        a.alloc(&mut heap, layout(64, 8));
    }
    unreachable!("a corrupt link was followed");
}

/// Checking builds: every double free of a block that is free is caught,
/// wherever the block waits (Tiny bin, Mid ring, LIFO, span, transfer list).
#[cfg(feature = "check-invariants")]
#[test]
fn checking_build_catches_every_double_free() {
    let a = new();
    let mut heap = heap();
    for size in [8usize, 64, 1000, 2000, 20000] {
        let ptrs: Vec<_> = (0..60).map(|_| a.alloc(&mut heap, layout(size, 8))).collect();
        for (i, &p) in ptrs.iter().enumerate() {
            // SAFETY: live, freed once (every third remotely).
            unsafe {
                if i % 3 == 0 { a.free_detached(p) } else { a.free(&mut heap, p) }.unwrap();
            }
        }
        for (i, &p) in ptrs.iter().enumerate() {
            // SAFETY: deliberately a double free: reported, nothing changed.
            let f = unsafe { if i % 2 == 0 { a.free_detached(p) } else { a.free(&mut heap, p) } }.unwrap_err();
            // (A block whose span went back with its segment is `NotOurs`.)
            assert!(matches!(f.kind, FaultKind::DoubleFree | FaultKind::NotOurs), "size {size} block {i}: {f:?}");
            // SAFETY: as above.
            let f = unsafe { a.realloc(&mut heap, p, 1, 8, 3) }.unwrap_err();
            assert!(matches!(f.kind, FaultKind::DoubleFree | FaultKind::NotOurs), "realloc {size} {i}: {f:?}");
        }
        // Everything still works: allocate them all again, and free.
        let again: Vec<_> = (0..60).map(|_| a.alloc(&mut heap, layout(size, 8))).collect();
        for p in again {
            // SAFETY: live, freed once.
            unsafe { a.free(&mut heap, p) }.unwrap();
        }
    }
    a.detach(&mut heap);
    assert_all_returned(&a);
}

/// Encoded builds: a link overwritten with a plausible pointer (another free
/// block of the same page) is still caught, because it does not decode.
#[cfg(any(feature = "secure", feature = "check-invariants"))]
#[test]
#[should_panic(expected = "corrupted free list")]
fn encoded_link_catches_an_in_page_pointer() {
    corrupt_tiny_link(|p| p.wrapping_add(64 * 5));
}
