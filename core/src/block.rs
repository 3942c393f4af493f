//! Free blocks and the singly linked lists threaded through them.
//!
//! A free block's first word holds the next free block (null ends the list).
//! These functions are the only places that read or write that word, so the
//! hardened encoding of the link has one home.
//!
//! In the default build the word is the plain pointer. With the `secure` or
//! `check-invariants` feature it is the pointer XOR the block's own address
//! XOR a per-process secret: a write after free that puts
//! a plain pointer (or any value the program chose) in the word decodes to an
//! address far from every block, which the allocator's link checks reject
//! before following it; and a freed block is recognisable (its word decodes
//! to null or to a block), which the checking build uses to catch every
//! double free.

use core::sync::atomic::{AtomicUsize, Ordering};

/// A free block; only its first word is used, as the link.
#[repr(C)]
pub(crate) struct Block {
    _next: *mut Block,
}

/// Whether links are encoded.
pub(crate) const ENCODED: bool = cfg!(any(feature = "secure", feature = "check-invariants"));

/// The per-process secret of the encoding (0 until the first segment exists;
/// set once, before any link is written).
static SECRET: AtomicUsize = AtomicUsize::new(0);

/// Set the secret from `entropy` if it is not set yet. Called before the
/// first span of any allocator is carved.
pub(crate) fn seed(entropy: u64) {
    if ENCODED && SECRET.load(Ordering::Relaxed) == 0 {
        // Never 0, and odd-ish bits everywhere even for poor entropy.
        let s = (entropy ^ 0x6a09_e667_f3bc_c909).wrapping_mul(0x9e37_79b9_7f4a_7c15) as usize | 1;
        let _ = SECRET.compare_exchange(0, s, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The key of the link stored at `b`: the secret XOR the slot's address, so
/// a value copied from one free block to another does not decode either.
#[inline(always)]
fn key(b: *mut Block) -> usize {
    // Relaxed: set once before any block exists; a thread reaches a block only
    // through synchronisation that follows the setting.
    SECRET.load(Ordering::Relaxed) ^ b.addr()
}

/// The next block after `b`.
///
/// # Safety
/// `b` is a free block of this allocator, at least pointer-sized and aligned,
/// whose link was written by [`set_next`] and is not being written concurrently.
#[inline(always)]
pub(crate) unsafe fn next(b: *mut Block) -> *mut Block {
    // SAFETY: `b` is a valid, aligned free block by the caller's promise.
    let raw = unsafe { b.cast::<*mut Block>().read() };
    if ENCODED { raw.map_addr(|a| a ^ key(b)) } else { raw }
}

/// Make `n` the block after `b`.
///
/// # Safety
/// `b` is a block of this allocator that nobody else reads or writes now (it
/// is being freed, or is owned by the caller's list).
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut Block, n: *mut Block) {
    let n = if ENCODED { n.map_addr(|a| a ^ key(b)) } else { n };
    // SAFETY: `b` is a valid, aligned block the caller owns.
    unsafe { b.cast::<*mut Block>().write(n) }
}

/// Clear the link word of a block being handed out (checking builds), so that
/// a live block never looks free to the double-free check.
///
/// # Safety
/// `b` is a block the caller is handing out.
#[inline(always)]
pub(crate) unsafe fn clear(b: *mut Block) {
    if cfg!(feature = "check-invariants") {
        // SAFETY: the caller's block.
        unsafe { b.cast::<usize>().write(0) };
    }
}

/// A pseudo-random number for the hardened build's choices (the initial
/// order of fresh blocks): a mix of the secret, `salt` and a counter.
pub(crate) fn random(salt: usize) -> u64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x = (SECRET.load(Ordering::Relaxed) ^ salt ^ n.wrapping_mul(0xa076_1d64_78bd_642f_u64 as usize)) as u64;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}
