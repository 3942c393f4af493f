//! `HakMem` called directly (this binary's global allocator is the system
//! one): alignment, realloc across tiers, zeroing, a random mix.

use std::alloc::GlobalAlloc;

use hakmem::HakMem;
use hakmem_tests::{Rng, check, check_kept, fill, layout};

static H: HakMem = HakMem::new();

/// Alignments 1 B … 4 MiB × sizes 0 … 8 MiB.
#[test]
fn alignment_matrix() {
    let mut sizes = vec![0usize, 1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 100, 1000, 1024, 1025];
    let mut s = 2048;
    while s <= 8 << 20 {
        sizes.extend([s - 1, s, s + 1, s + s / 2]);
        s *= 2;
    }
    let mut align = 1;
    while align <= 4 << 20 {
        let mut blocks = Vec::new();
        for &size in &sizes {
            let l = layout(size.max(1), align);
            // SAFETY: non-zero size.
            let p = unsafe { H.alloc(l) };
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p.addr() % align, 0, "size {size} align {align}");
            // SAFETY: a live block of ours.
            assert!(unsafe { hakmem::usable_size(p) } >= size);
            // SAFETY: `l.size()` bytes are ours.
            unsafe { fill(p, l.size(), l.size() as u64) };
            blocks.push((p, l));
        }
        for (p, l) in blocks {
            // SAFETY: the block we filled.
            unsafe {
                check(p, l.size(), l.size() as u64);
                H.dealloc(p, l);
            }
        }
        align *= 2;
    }
}

/// Grow by doubling and by one byte, and shrink back, through every tier
/// boundary: the bytes survive every move.
#[test]
fn realloc_grow_and_shrink_keep_bytes() {
    let mut targets: Vec<usize> = Vec::new();
    for c in 1..hakmem::class::NUM_CLASSES {
        let s = hakmem::class::size_of_class(c);
        targets.extend([s, s + 1]);
    }
    targets.extend([200_000, 1 << 20, 3 << 20, 9 << 20]);
    for align in [8usize, 64, 4096] {
        let mut l = layout(1, align);
        // SAFETY: non-zero size.
        let mut p = unsafe { H.alloc(l) };
        // SAFETY: one byte is ours.
        unsafe { fill(p, 1, 7) };
        for &n in targets.iter().chain(targets.iter().rev()) {
            // SAFETY: `p` is a live block of layout `l`.
            let q = unsafe { H.realloc(p, l, n) };
            assert!(!q.is_null());
            assert_eq!(q.addr() % align, 0);
            // SAFETY: the first min(old, new) bytes carried over; `n` are ours.
            unsafe {
                check(q, l.size().min(n).min(8192), 7);
                fill(q, n.min(8192), 7);
            }
            p = q;
            l = layout(n, align);
        }
        // SAFETY: live block.
        unsafe { H.dealloc(p, l) };
    }
    // Growing a vector by one byte at a time keeps its contents.
    let mut l = layout(1, 1);
    // SAFETY: non-zero size.
    let mut p = unsafe { H.alloc(l) };
    for n in 2..=70_000usize {
        // SAFETY: `p` is live with layout `l`.
        p = unsafe { H.realloc(p, l, n) };
        // SAFETY: `n` bytes are ours.
        unsafe { p.add(n - 1).write(n as u8) };
        l = layout(n, 1);
    }
    for i in 1..70_000usize {
        // SAFETY: within the block.
        assert_eq!(unsafe { p.add(i).read() }, (i + 1) as u8);
    }
    // SAFETY: live block.
    unsafe { H.dealloc(p, l) };
}

/// `alloc_zeroed` returns zeros, including for blocks that were dirty and
/// for Large regions reused from the cache.
#[test]
fn zeroed_memory_is_zero() {
    for round in 0..4 {
        let mut blocks = Vec::new();
        for &size in &[1usize, 8, 24, 100, 1000, 5000, 30000, 100_000, 200_000, 3 << 20] {
            let l = layout(size, 16);
            // SAFETY: non-zero size.
            let p = unsafe { H.alloc_zeroed(l) };
            // SAFETY: `size` bytes are ours.
            let bytes = unsafe { std::slice::from_raw_parts(p, size) };
            assert!(bytes.iter().all(|&b| b == 0), "round {round}, size {size}");
            // SAFETY: as above.
            unsafe { p.write_bytes(0xa5, size) };
            blocks.push((p, l));
        }
        for (p, l) in blocks {
            // SAFETY: live block.
            unsafe { H.dealloc(p, l) };
        }
    }
}

/// Random allocations, reallocations and frees with every block's contents
/// checked before it is touched again.
#[test]
fn random_mix_keeps_contents() {
    let mut rng = Rng(0xdecaf);
    let mut live: Vec<(*mut u8, std::alloc::Layout, u64)> = Vec::new();
    for step in 0..60_000u64 {
        match rng.below(10) {
            0..=4 => {
                let align = [1usize, 8, 16, 32, 64, 4096][rng.below(6)];
                let l = layout(rng.size(), align);
                // SAFETY: non-zero size.
                let p = unsafe { H.alloc(l) };
                assert!(!p.is_null());
                // SAFETY: ours.
                unsafe { fill(p, l.size(), step) };
                live.push((p, l, step));
            }
            5..=7 if !live.is_empty() => {
                let (p, l, seed) = live.swap_remove(rng.below(live.len()));
                // SAFETY: live block we filled.
                unsafe {
                    check(p, l.size(), seed);
                    H.dealloc(p, l);
                }
            }
            _ if !live.is_empty() => {
                let i = rng.below(live.len());
                let (p, l, seed) = live[i];
                let n = rng.size();
                // SAFETY: live block.
                let q = unsafe { H.realloc(p, l, n) };
                assert!(!q.is_null());
                // SAFETY: the kept prefix is ours.
                unsafe { check_kept(q, l.size(), l.size().min(n), seed) };
                // SAFETY: `n` bytes are ours.
                unsafe { fill(q, n, step) };
                live[i] = (q, layout(n, l.align()), step);
            }
            _ => {}
        }
    }
    for (p, l, seed) in live {
        // SAFETY: live blocks.
        unsafe {
            check(p, l.size(), seed);
            H.dealloc(p, l);
        }
    }
}
