//! Where all memory comes from: the [`PageSource`] trait.
//!
//! The core never names an operating system. An adapter (the Linux `mmap`
//! source, the bare-metal static region, a test buffer) implements this trait
//! and the core asks it for aligned regions, gives them back, and, where the
//! platform can, tells it that the contents of a range are no longer needed.

use core::ptr::NonNull;

/// A region handed out by [`PageSource::reserve`].
#[derive(Clone, Copy, Debug)]
pub struct Reservation {
    /// First byte of the region, aligned as requested.
    pub base: NonNull<u8>,
    /// Whether every byte of the region reads as zero until the core writes it.
    pub zeroed: bool,
}

/// What [`PageSource::purge`] did to a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purged {
    /// Nothing: the range keeps its contents and stays resident.
    No,
    /// The physical memory was given back; the range now reads as zero and is
    /// backed again on the next touch (Linux `MADV_DONTNEED`).
    Zeroed,
    /// The memory may be given back lazily; until the core writes it again the
    /// range reads as either its old contents or zero (Linux `MADV_FREE`).
    Lazily,
}

/// A supplier of memory regions for the allocator.
///
/// # Safety
///
/// **Implementors must guarantee:**
/// - a region returned by [`reserve`](Self::reserve) is readable and writable
///   for `size` bytes, aligned to `align`, disjoint from every other live
///   region, and stays so until it is passed to [`release`](Self::release);
/// - if [`Reservation::zeroed`] is `true`, every byte of it reads as zero;
/// - [`owns`](Self::owns)`(a)` is `true` exactly when `a` is the base of a live
///   region (a region returned by `reserve` or `resize` and not yet released)
///   of this source. It must be safe to call with any address, from any thread,
///   and must not allocate;
/// - [`purge`](Self::purge) and [`resize`](Self::resize) do what their result
///   says and nothing else: a range that was not purged keeps its contents;
/// - every method may be called from several threads at once, and none of
///   them allocates through the allocator that uses this source.
///
/// **Callers (the core) guarantee:**
/// - `align` is a power of two no smaller than [`page_size`](Self::page_size),
///   and `size` is a non-zero multiple of `page_size`;
/// - `release`, `purge` and `resize` are given only ranges inside live regions
///   of this source, with the base and size the region was reserved with where
///   the method says so, and no memory of a released region is touched again.
pub unsafe trait PageSource {
    /// Reserve a region of `size` bytes aligned to `align`, or `None` when the
    /// source is exhausted (the allocator then returns null).
    fn reserve(&self, size: usize, align: usize) -> Option<Reservation>;

    /// Give back a whole region.
    ///
    /// # Safety
    /// `base` and `size` are exactly those of a live region of this source,
    /// and nothing touches the region afterwards.
    unsafe fn release(&self, base: NonNull<u8>, size: usize);

    /// Tell the source that the contents of `[ptr, ptr + len)` are no longer
    /// needed, so it may reclaim the physical memory behind them. The default
    /// does nothing.
    ///
    /// # Safety
    /// The range is page aligned and lies inside a live region of this source
    /// whose contents the caller no longer needs.
    unsafe fn purge(&self, ptr: NonNull<u8>, len: usize) -> Purged {
        let _ = (ptr, len);
        Purged::No
    }

    /// Resize the live region at `base` from `old_size` to `new_size` bytes,
    /// keeping its contents up to the smaller size and its alignment `align`.
    /// When `may_move` is false the region must stay where it is; otherwise it
    /// may move (without copying, on a platform that can remap pages). Returns
    /// the region's (possibly new) base, or `None` if it cannot, in which case
    /// the old region is untouched. The default cannot resize.
    ///
    /// # Safety
    /// `base`, `old_size` and `align` are those of a live region of this source;
    /// `new_size` is a non-zero multiple of `page_size`. On success the old
    /// range (if it moved) is no longer part of any region of the caller's.
    unsafe fn resize(
        &self,
        base: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
        may_move: bool,
    ) -> Option<NonNull<u8>> {
        let _ = (base, old_size, new_size, align, may_move);
        None
    }

    /// Make the page-aligned range `[ptr, ptr + len)` inaccessible: a guard
    /// page (hardened builds put one between segment metadata and blocks).
    /// Returns whether it did; the default cannot.
    ///
    /// # Safety
    /// The range is page aligned and inside a live region of this source
    /// that the core never touches again until it releases the region.
    unsafe fn protect(&self, ptr: NonNull<u8>, len: usize) -> bool {
        let _ = (ptr, len);
        false
    }

    /// Unpredictable bits for the hardened build's secrets (the free-list
    /// link key). The default has none; the core mixes in addresses.
    fn entropy(&self) -> u64 {
        0
    }

    /// Whether `addr` is the base of a live region of this source.
    fn owns(&self, addr: usize) -> bool;

    /// The granularity of regions and purges: sizes and purge ranges are
    /// multiples of it. Must be a power of two.
    fn page_size(&self) -> usize {
        4096
    }

    /// Stop the program after a fatal error the allocator detected (a broken
    /// invariant in a checking build, a corrupted free list): the message
    /// names the fault and the state involved. The default panics; a platform
    /// that can should print the message and abort, since unwinding out of an
    /// allocator is not allowed.
    fn fatal(&self, msg: core::fmt::Arguments<'_>) -> ! {
        panic!("hakmem: fatal: {msg}")
    }

    /// A monotonic clock in milliseconds, used to delay purging of free pages.
    /// A source without a clock returns 0, and purging then happens on the
    /// first opportunity after the configured number of calls.
    fn now_ms(&self) -> u64 {
        0
    }
}
