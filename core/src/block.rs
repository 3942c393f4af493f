//! Free blocks and the singly linked lists threaded through them.
//!
//! A free block's first word holds the next free block (null ends the list).
//! These two functions are the only places that read or write that word, so a
//! hardened encoding of the link has one home.

/// A free block; only its first word is used, as the link.
#[repr(C)]
pub(crate) struct Block {
    _next: *mut Block,
}

/// The next block after `b`.
///
/// # Safety
/// `b` is a free block of this allocator, at least pointer-sized and aligned,
/// whose link was written by [`set_next`] and is not being written concurrently.
#[inline(always)]
pub(crate) unsafe fn next(b: *mut Block) -> *mut Block {
    // SAFETY: `b` is a valid, aligned free block by the caller's promise.
    unsafe { b.cast::<*mut Block>().read() }
}

/// Make `n` the block after `b`.
///
/// # Safety
/// `b` is a block of this allocator that nobody else reads or writes now (it
/// is being freed, or is owned by the caller's list).
#[inline(always)]
pub(crate) unsafe fn set_next(b: *mut Block, n: *mut Block) {
    // SAFETY: `b` is a valid, aligned block the caller owns.
    unsafe { b.cast::<*mut Block>().write(n) }
}
