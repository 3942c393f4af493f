//! Test support (feature `test-util`): a [`PageSource`] that tracks every
//! region it hands out, can be made to fail, and small geometries that make
//! pages and segments tiny, so tests, Miri and loom reach every path quickly.
//!
//! Not for production: regions come from the host's `std::alloc`.

extern crate std;

use core::ptr::NonNull;
use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::sync::Mutex;
use std::vec::Vec;

use crate::segment::Geometry;
use crate::source::{PageSource, Purged, Reservation};

/// 64 KiB segments of 16 × 4 KiB pages: small enough for Miri, large enough
/// that every Tiny and Mid class up to 32 KiB is served by spans.
pub enum TestGeo {}
impl Geometry for TestGeo {
    const SEGMENT_SHIFT: u32 = 16;
    const PAGE_SHIFT: u32 = 12;
}

/// 4 KiB segments of 16 × 256 B pages (the header takes five): two to four
/// blocks of the classes the loom models use fill a page, and the four
/// smallest Mid classes still fit a span.
pub enum TinyGeo {}
impl Geometry for TinyGeo {
    const SEGMENT_SHIFT: u32 = 12;
    const PAGE_SHIFT: u32 = 8;
}

/// One region handed out.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// First byte.
    pub base: usize,
    /// Bytes the allocator may use (shrinks in place on `resize`).
    pub size: usize,
    layout: Layout,
    ptr: *mut u8,
}

// SAFETY: the pointer is to host memory owned by the source; it is only
// dereferenced by the allocator, which the source's contract governs.
unsafe impl Send for Region {}

struct State {
    regions: Vec<Region>,
    /// Reservations still allowed (`None`: unlimited).
    budget: Option<usize>,
    reserves: usize,
    failures: usize,
    purged: usize,
}

/// A tracking, failable page source over the host allocator.
pub struct TestSource {
    state: Mutex<State>,
    page_size: usize,
    owns_calls: core::sync::atomic::AtomicUsize,
    now: core::sync::atomic::AtomicU64,
}

impl TestSource {
    /// A source with the given page size (a power of two).
    pub fn new(page_size: usize) -> TestSource {
        assert!(page_size.is_power_of_two());
        TestSource {
            state: Mutex::new(State { regions: Vec::new(), budget: None, reserves: 0, failures: 0, purged: 0 }),
            page_size,
            owns_calls: core::sync::atomic::AtomicUsize::new(0),
            now: core::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Set the clock `now_ms` reports (it starts at 1 ms).
    pub fn set_now(&self, ms: u64) {
        self.now.store(ms, core::sync::atomic::Ordering::Relaxed);
    }

    /// How many times `owns` was asked (a free that took the descriptor
    /// path asks once; the hot front does not ask).
    pub fn owns_calls(&self) -> usize {
        self.owns_calls.load(core::sync::atomic::Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Allow only `n` more reservations (`None`: no limit).
    pub fn set_budget(&self, n: Option<usize>) {
        self.state().budget = n;
    }

    /// Live regions.
    pub fn regions(&self) -> Vec<Region> {
        self.state().regions.clone()
    }

    /// Bytes in live regions.
    pub fn live_bytes(&self) -> usize {
        self.state().regions.iter().map(|r| r.size).sum()
    }

    /// Reservations made so far, and how many were refused.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.reserves, s.failures)
    }

    /// Bytes purged so far.
    pub fn purged(&self) -> usize {
        self.state().purged
    }

    /// Whether `[addr, addr + len)` lies inside one live region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        self.state().regions.iter().any(|r| addr >= r.base && addr + len <= r.base + r.size)
    }
}

impl Drop for TestSource {
    fn drop(&mut self) {
        for r in self.state().regions.drain(..) {
            // SAFETY: allocated by `reserve` with this layout.
            unsafe { dealloc(r.ptr, r.layout) };
        }
    }
}

// SAFETY: regions come zeroed from `alloc_zeroed` with the requested size and
// alignment and stay valid until `release`; `owns` is exact for region bases;
// `purge` zeroes what it reports zeroed; `resize` only shrinks in place.
unsafe impl PageSource for TestSource {
    fn reserve(&self, size: usize, align: usize) -> Option<Reservation> {
        assert!(align.is_power_of_two() && align >= self.page_size, "align {align}");
        assert!(size != 0 && size.is_multiple_of(self.page_size), "size {size}");
        let mut s = self.state();
        s.reserves += 1;
        if let Some(b) = s.budget.as_mut() {
            if *b == 0 {
                s.failures += 1;
                return None;
            }
            *b -= 1;
        }
        let layout = Layout::from_size_align(size, align).ok()?;
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(ptr)?;
        s.regions.push(Region { base: ptr.addr(), size, layout, ptr });
        Some(Reservation { base, zeroed: true })
    }

    unsafe fn release(&self, base: NonNull<u8>, size: usize) {
        let mut s = self.state();
        let i = s
            .regions
            .iter()
            .position(|r| r.base == base.as_ptr().addr())
            .unwrap_or_else(|| panic!("release of {base:p}: not a region"));
        assert_eq!(s.regions[i].size, size, "release of {base:p} with the wrong size");
        let r = s.regions.swap_remove(i);
        // SAFETY: allocated by `reserve` with this layout.
        unsafe { dealloc(r.ptr, r.layout) };
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, len: usize) -> Purged {
        assert!(self.contains(ptr.as_ptr().addr(), len), "purge outside a region");
        // SAFETY: inside a live region, whose contents the caller gives up.
        unsafe { ptr.as_ptr().write_bytes(0, len) };
        self.state().purged += len;
        Purged::Zeroed
    }

    unsafe fn resize(
        &self,
        base: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        _align: usize,
        _may_move: bool,
    ) -> Option<NonNull<u8>> {
        let mut s = self.state();
        let r = s.regions.iter_mut().find(|r| r.base == base.as_ptr().addr()).expect("resize of a non-region");
        assert_eq!(r.size, old_size);
        // Only shrinking in place: the host allocation keeps its layout.
        if new_size <= r.size {
            r.size = new_size;
            Some(base)
        } else {
            None
        }
    }

    fn owns(&self, addr: usize) -> bool {
        self.owns_calls.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        self.state().regions.iter().any(|r| r.base == addr)
    }

    fn page_size(&self) -> usize {
        self.page_size
    }

    fn now_ms(&self) -> u64 {
        self.now.load(core::sync::atomic::Ordering::Relaxed)
    }
}
