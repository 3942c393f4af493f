//! Shared helpers for hakmem's integration and stress tests.

use core::alloc::Layout;

pub mod fuzz;

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A size drawn across every tier: mostly Tiny, often Mid, sometimes Large.
    pub fn size(&mut self) -> usize {
        match self.below(100) {
            0..=59 => 1 + self.below(1024),
            60..=94 => 1025 + self.below(128 * 1024),
            _ => 128 * 1024 + self.below(2 << 20),
        }
    }
}

/// `Layout` from parts that are known valid.
pub fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

/// Bytes of a block that `fill`/`check` cover: all of a small block, the
/// head and tail of a big one.
fn spans(len: usize) -> [(usize, usize); 2] {
    if len <= 8192 { [(0, len), (len, len)] } else { [(0, 4096), (len - 4096, len)] }
}

/// Fill the block at `p` (of `len` bytes) with a pattern derived from `seed`.
///
/// # Safety
/// `p` is valid for writes of `len` bytes.
pub unsafe fn fill(p: *mut u8, len: usize, seed: u64) {
    for (a, b) in spans(len) {
        for i in a..b {
            // SAFETY: `i < len`.
            unsafe { p.add(i).write((seed as u8).wrapping_add(i as u8) ^ (seed >> 8) as u8) };
        }
    }
}

/// Check the pattern `fill` wrote; panics with the first bad byte.
///
/// # Safety
/// `p` is valid for reads of `len` bytes.
pub unsafe fn check(p: *const u8, len: usize, seed: u64) {
    for (a, b) in spans(len) {
        for i in a..b {
            // SAFETY: `i < len`.
            let v = unsafe { p.add(i).read() };
            let want = (seed as u8).wrapping_add(i as u8) ^ (seed >> 8) as u8;
            assert_eq!(v, want, "byte {i} of block {p:p} ({len} bytes) corrupted");
        }
    }
}

/// After a block of `old_len` bytes filled by [`fill`] was reallocated,
/// check the bytes of the first `keep` that `fill` had written.
///
/// # Safety
/// `p` is valid for reads of `keep` bytes.
pub unsafe fn check_kept(p: *const u8, old_len: usize, keep: usize, seed: u64) {
    for (a, b) in spans(old_len) {
        for i in a..b.min(keep) {
            // SAFETY: `i < keep`.
            let v = unsafe { p.add(i).read() };
            let want = (seed as u8).wrapping_add(i as u8) ^ (seed >> 8) as u8;
            assert_eq!(v, want, "byte {i} of reallocated block {p:p} ({keep} kept of {old_len}) corrupted");
        }
    }
}

/// A block pointer to send to another thread.
pub struct Block {
    /// The block.
    pub ptr: *mut u8,
    /// Its length.
    pub len: usize,
    /// Its pattern seed.
    pub seed: u64,
}

// SAFETY: a block belongs to whoever holds its `Block`.
unsafe impl Send for Block {}
