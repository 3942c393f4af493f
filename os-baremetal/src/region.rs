//! [`StaticRegion`]: a [`PageSource`] over memory handed over once.
//!
//! The memory is cut into *granules* of one segment each (`Geo::<G>::SEGMENT_SIZE`,
//! aligned to it). The core only ever asks for regions aligned to a segment or
//! more, so two regions can never share a granule and nothing finer is needed:
//! a region is a run of granules. Two bitmaps, one bit per granule, say which
//! granules are in use and where live regions start. The first is only touched
//! under the source's lock (reserving and releasing are cold paths); the second
//! is atomic, so [`owns`](PageSource::owns) — called on every free — is a
//! subtraction, a comparison and one bit test per added area, with no lock.
//!
//! The bytes of an added area before its first aligned granule and after its
//! last whole one cannot hold a segment and stay unused; see the crate docs
//! for how much that is and how to avoid it (align the heap to a segment).

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use hakmem_core::{Geo, Geometry, PageSource, Reservation};

/// Most areas (discontiguous pieces of memory) one source accepts.
pub const MAX_AREAS: usize = 8;
/// The default `MAP_WORDS` of [`StaticRegion`]: room for 1024 segments
/// (8 MiB with [`Tiny`](crate::Tiny)'s 8 KiB segments, 32 MiB with 32 KiB
/// ones) in 256 bytes of bitmaps.
pub const DEFAULT_MAP_WORDS: usize = 32;

/// One piece of memory given to the source. Its fields are written once,
/// before `StaticRegion::count` publishes it, and never change.
struct Area {
    /// Address of the first granule.
    base: AtomicUsize,
    /// Bytes covered by whole granules.
    len: AtomicUsize,
    /// Index of the first granule in the bitmaps.
    first: AtomicUsize,
}

/// What the lock guards.
struct Inner<const W: usize> {
    /// Bit `g` set iff granule `g` belongs to a live region.
    used: [u32; W],
    /// Granules handed out to areas so far (the next area's `first`).
    granules: usize,
    /// Granules in live regions.
    live: usize,
    /// Every granule below this one is in use.
    hint: usize,
}

/// A [`PageSource`] over static memory: one or more areas handed over by
/// [`add`](Self::add) (or [`add_raw`](Self::add_raw), for memory named by
/// linker symbols), carved into segment-aligned regions on demand.
///
/// - It never hands out memory outside the areas it was given.
/// - Exhaustion is `None` from `reserve` (the allocator then returns null).
/// - More areas, anywhere in memory, can be added at any time.
/// - `owns(addr)` is exact (true iff `addr` is the base of a live region) and
///   takes no lock.
/// - `resize` grows a region in place when the granules after it are free and
///   always shrinks in place; it never moves a region (it cannot remap).
///
/// Regions are not zeroed (`Reservation::zeroed` is false): memory that was
/// freed and reserved again keeps its old bytes.
///
/// It manages at most `32 × MAP_WORDS` segments over all its areas (two
/// bitmaps of `MAP_WORDS` words); memory beyond that is left unused.
pub struct StaticRegion<G: Geometry, const MAP_WORDS: usize = DEFAULT_MAP_WORDS> {
    /// Areas published so far.
    count: AtomicUsize,
    areas: [Area; MAX_AREAS],
    /// Bit `g` set iff a live region starts at granule `g`.
    starts: [AtomicU32; MAP_WORDS],
    inner: spin::mutex::SpinMutex<Inner<MAP_WORDS>>,
    _geometry: PhantomData<fn() -> G>,
}

/// Why [`StaticRegion::add`] took less than it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// The memory holds no whole segment-aligned segment.
    TooSmall,
    /// [`MAX_AREAS`] areas were added already.
    TooManyAreas,
    /// The bitmaps are full (`32 × MAP_WORDS` segments).
    TooManyGranules,
    /// The memory overlaps an area added before.
    Overlaps,
}

impl core::fmt::Display for AddError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AddError::TooSmall => "the region holds no whole aligned segment",
            AddError::TooManyAreas => "too many regions (MAX_AREAS)",
            AddError::TooManyGranules => "too many segments in all (32 × MAP_WORDS)",
            AddError::Overlaps => "the region overlaps one added before",
        })
    }
}

impl<G: Geometry, const MAP_WORDS: usize> StaticRegion<G, MAP_WORDS> {
    const MAX_GRANULES: usize = 32 * MAP_WORDS;
    const GRAN: usize = Geo::<G>::SEGMENT_SIZE;
    const SHIFT: u32 = G::SEGMENT_SHIFT;

    /// An empty source: every `reserve` fails until memory is added.
    pub const fn new() -> Self {
        StaticRegion {
            count: AtomicUsize::new(0),
            areas: [const { Area { base: AtomicUsize::new(0), len: AtomicUsize::new(0), first: AtomicUsize::new(0) } };
                MAX_AREAS],
            starts: [const { AtomicU32::new(0) }; MAP_WORDS],
            inner: spin::mutex::SpinMutex::new(Inner { used: [0; MAP_WORDS], granules: 0, live: 0, hint: 0 }),
            _geometry: PhantomData,
        }
    }

    /// Hand `mem` over to the source. Returns the bytes it can use: the whole
    /// segment-aligned segments inside `mem` (what lies before the first and
    /// after the last is never touched).
    pub fn add(&self, mem: &'static mut [u8]) -> Result<usize, AddError> {
        let len = mem.len();
        // SAFETY: a `&'static mut` is memory nobody else will ever use.
        unsafe { self.add_raw(mem.as_mut_ptr(), len) }
    }

    /// Hand the memory `[start, start + len)` over to the source (for memory
    /// named by linker symbols). Returns the bytes it can use, as for
    /// [`add`](Self::add).
    ///
    /// # Safety
    /// The range is readable and writable memory that nothing else uses, now
    /// or ever after (it stays the source's for good).
    pub unsafe fn add_raw(&self, start: *mut u8, len: usize) -> Result<usize, AddError> {
        // Expose the memory's provenance: regions are handed out by address.
        let addr = start.expose_provenance();
        let lo = addr.checked_next_multiple_of(Self::GRAN);
        let hi = addr.saturating_add(len) & !(Self::GRAN - 1);
        let Some(lo) = lo.filter(|&lo| lo < hi && lo != 0) else {
            return Err(AddError::TooSmall);
        };
        let mut inner = self.inner.lock();
        let n = self.count.load(Ordering::Relaxed);
        if n == MAX_AREAS {
            return Err(AddError::TooManyAreas);
        }
        for a in &self.areas[..n] {
            let (b, l) = (a.base.load(Ordering::Relaxed), a.len.load(Ordering::Relaxed));
            if lo < b + l && b < hi {
                return Err(AddError::Overlaps);
            }
        }
        let room = Self::MAX_GRANULES - inner.granules;
        if room == 0 {
            return Err(AddError::TooManyGranules);
        }
        let granules = ((hi - lo) >> Self::SHIFT).min(room);
        let a = &self.areas[n];
        a.base.store(lo, Ordering::Relaxed);
        a.len.store(granules << Self::SHIFT, Ordering::Relaxed);
        a.first.store(inner.granules, Ordering::Relaxed);
        inner.granules += granules;
        // Release: a reader that sees the new count sees the area's fields.
        self.count.store(n + 1, Ordering::Release);
        Ok(granules << Self::SHIFT)
    }

    /// Bytes the source manages (whole granules of every area).
    pub fn capacity(&self) -> usize {
        self.inner.lock().granules << Self::SHIFT
    }

    /// Bytes in live regions (granule-rounded).
    pub fn in_use(&self) -> usize {
        self.inner.lock().live << Self::SHIFT
    }

    /// The area holding granule-aligned `addr` and the granule's index.
    #[inline(always)]
    fn granule_of(&self, addr: usize) -> Option<(&Area, usize)> {
        // Acquire: pairs with the Release in `add_raw`, so the fields of every
        // counted area are seen (even when racing with an `add` and given a
        // foreign pointer, `owns` must not match a half-written area).
        let n = self.count.load(Ordering::Acquire);
        for a in &self.areas[..n] {
            let off = addr.wrapping_sub(a.base.load(Ordering::Relaxed));
            if off < a.len.load(Ordering::Relaxed) {
                if off & (Self::GRAN - 1) != 0 {
                    return None;
                }
                return Some((a, a.first.load(Ordering::Relaxed) + (off >> Self::SHIFT)));
            }
        }
        None
    }

    fn set_start(&self, g: usize, on: bool) {
        let (w, bit) = (&self.starts[g / 32], 1u32 << (g % 32));
        // Release: a free that sees the bit (through the allocation's own
        // hand-off) sees the region as ours; see `owns`.
        if on {
            w.fetch_or(bit, Ordering::Release);
        } else {
            w.fetch_and(!bit, Ordering::Release);
        }
    }
}

impl<const W: usize> Inner<W> {
    #[inline]
    fn is_used(&self, g: usize) -> bool {
        self.used[g / 32] & (1 << (g % 32)) != 0
    }

    fn mark(&mut self, g: usize, n: usize, on: bool) {
        for i in g..g + n {
            if on {
                self.used[i / 32] |= 1 << (i % 32);
            } else {
                self.used[i / 32] &= !(1 << (i % 32));
            }
        }
        if on {
            self.live += n;
            if g == self.hint {
                self.hint = g + n;
            }
        } else {
            self.live -= n;
            self.hint = self.hint.min(g);
        }
    }

    /// The first granule at or after `g` (and before `end`) whose `used`
    /// bit is `want`, or `end`.
    fn next_with(&self, g: usize, end: usize, want: bool) -> usize {
        if g >= end {
            return end;
        }
        let word = |w: usize| if want { self.used[w] } else { !self.used[w] };
        let mut w = g / 32;
        let mut bits = word(w) & (u32::MAX << (g % 32));
        loop {
            if bits != 0 {
                return (w * 32 + bits.trailing_zeros() as usize).min(end);
            }
            w += 1;
            if w * 32 >= end {
                return end;
            }
            bits = word(w);
        }
    }

    /// First run of `n` free granules in `[first, first + count)` whose start
    /// index `g` makes `base + (g - first) * gran` a multiple of `align`.
    /// Granules below `self.hint` are all in use, so the search starts there.
    fn find(&self, base: usize, first: usize, count: usize, n: usize, align: usize, shift: u32) -> Option<usize> {
        let end = first + count;
        // Index of the first aligned granule at or after `g`.
        let aligned = |g: usize| -> usize {
            let addr = base + ((g - first) << shift);
            first + ((addr.next_multiple_of(align) - base) >> shift)
        };
        let mut start = self.hint.max(first);
        loop {
            start = aligned(self.next_with(start, end, false));
            if start + n > end {
                return None;
            }
            let used = self.next_with(start, start + n, true);
            if used == start + n {
                return Some(start);
            }
            start = used + 1;
        }
    }
}

impl<G: Geometry, const MAP_WORDS: usize> Default for StaticRegion<G, MAP_WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: regions are runs of whole granules of memory given to us for good
// (`add`/`add_raw`), never overlapping: `used` is set for every granule of a
// live region and tested before any is handed out, under the lock. Bases are
// granule aligned and, when `align` is larger, aligned to it (`find`).
// `owns` reads `starts`, which is set exactly for the first granule of each
// live region (set in `reserve`/`resize` before the region is returned,
// cleared in `release`). Nothing here allocates. Regions are reported as not
// zeroed. Every method is callable from several threads (lock and atomics).
unsafe impl<G: Geometry, const MAP_WORDS: usize> PageSource for StaticRegion<G, MAP_WORDS> {
    fn reserve(&self, size: usize, align: usize) -> Option<Reservation> {
        let n = size.div_ceil(Self::GRAN);
        if n == 0 {
            return None;
        }
        let align = align.max(Self::GRAN);
        let mut inner = self.inner.lock();
        let count = self.count.load(Ordering::Relaxed);
        for a in &self.areas[..count] {
            let base = a.base.load(Ordering::Relaxed);
            let len = a.len.load(Ordering::Relaxed);
            let first = a.first.load(Ordering::Relaxed);
            if let Some(g) = inner.find(base, first, len >> Self::SHIFT, n, align, Self::SHIFT) {
                inner.mark(g, n, true);
                self.set_start(g, true);
                let addr = base + ((g - first) << Self::SHIFT);
                // `add_raw` exposed the area's provenance.
                let p = core::ptr::with_exposed_provenance_mut::<u8>(addr);
                return Some(Reservation { base: NonNull::new(p)?, zeroed: false });
            }
        }
        None
    }

    unsafe fn release(&self, base: NonNull<u8>, size: usize) {
        let n = size.div_ceil(Self::GRAN);
        let mut inner = self.inner.lock();
        let Some((_, g)) = self.granule_of(base.as_ptr().addr()) else {
            debug_assert!(false, "release of a region that is not ours");
            return;
        };
        self.set_start(g, false);
        inner.mark(g, n, false);
    }

    unsafe fn resize(
        &self,
        base: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        _align: usize,
        _may_move: bool,
    ) -> Option<NonNull<u8>> {
        let (old_n, new_n) = (old_size.div_ceil(Self::GRAN), new_size.div_ceil(Self::GRAN));
        let mut inner = self.inner.lock();
        let (area, g) = self.granule_of(base.as_ptr().addr())?;
        if new_n <= old_n {
            inner.mark(g + new_n, old_n - new_n, false);
            return Some(base);
        }
        let end = area.first.load(Ordering::Relaxed) + (area.len.load(Ordering::Relaxed) >> Self::SHIFT);
        if g + new_n > end || (g + old_n..g + new_n).any(|i| inner.is_used(i)) {
            return None;
        }
        inner.mark(g + old_n, new_n - old_n, true);
        Some(base)
    }

    #[inline(always)]
    fn owns(&self, addr: usize) -> bool {
        match self.granule_of(addr) {
            // Relaxed: a pointer into a live region reaches a freeing thread
            // only through synchronisation that follows the Release that set
            // the bit (as for the Linux source's registry).
            Some((_, g)) => self.starts[g / 32].load(Ordering::Relaxed) & (1 << (g % 32)) != 0,
            None => false,
        }
    }

    fn page_size(&self) -> usize {
        // Regions are whole granules anyway; a small page keeps the offset of
        // a Large block (the header rounded up to a page) small.
        64
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use hakmem_core::Small;
    use std::boxed::Box;
    use std::vec::Vec;

    const GRAN: usize = Geo::<Small>::SEGMENT_SIZE;

    fn leak(bytes: usize) -> &'static mut [u8] {
        Box::leak(std::vec![0u8; bytes].into_boxed_slice())
    }

    #[test]
    fn carves_aligned_segments_and_reports_exhaustion() {
        let src = StaticRegion::<Small>::new();
        assert!(src.reserve(GRAN, GRAN).is_none(), "empty source must fail");
        let mem = leak(5 * GRAN);
        let (lo, hi) = (mem.as_ptr().addr(), mem.as_ptr().addr() + mem.len());
        let usable = src.add(mem).unwrap();
        assert!((4 * GRAN..=5 * GRAN).contains(&usable));
        let mut got = Vec::new();
        while let Some(r) = src.reserve(GRAN, GRAN) {
            let a = r.base.as_ptr().addr();
            assert_eq!(a % GRAN, 0);
            assert!(a >= lo && a + GRAN <= hi, "region outside the memory given");
            assert!(src.owns(a));
            assert!(!src.owns(a + 64));
            got.push(r.base);
        }
        assert_eq!(got.len() * GRAN, usable);
        assert_eq!(src.in_use(), usable);
        // SAFETY: regions just reserved, released once each.
        unsafe { src.release(got[1], GRAN) };
        assert!(!src.owns(got[1].as_ptr().addr()));
        assert_eq!(src.reserve(GRAN, GRAN).unwrap().base, got[1]);
    }

    #[test]
    fn multi_granule_regions_alignment_and_resize() {
        let src = StaticRegion::<Small>::new();
        src.add(leak(9 * GRAN)).unwrap();
        let a = src.reserve(GRAN + 100, GRAN).unwrap().base;
        let b = src.reserve(3 * GRAN, 4 * GRAN).unwrap().base;
        assert_eq!(b.as_ptr().addr() % (4 * GRAN), 0);
        assert_ne!(a, b);
        // `a` spans two granules: growing to three needs the next one free.
        // SAFETY: `a` is live with the sizes given.
        let grown = unsafe { src.resize(a, 2 * GRAN, 3 * GRAN, GRAN, false) };
        let next_free = !src.owns(a.as_ptr().addr() + 2 * GRAN) && b.as_ptr().addr() != a.as_ptr().addr() + 2 * GRAN;
        assert_eq!(grown.is_some(), next_free);
        // SAFETY: as above; shrinking always works in place.
        let shrunk = unsafe { src.resize(b, 3 * GRAN, GRAN, GRAN, true) };
        assert_eq!(shrunk, Some(b));
        assert!(src.owns(b.as_ptr().addr()));
        assert!(!src.owns(b.as_ptr().addr() + GRAN));
    }

    #[test]
    fn discontiguous_areas_and_bad_adds() {
        let src = StaticRegion::<Small>::new();
        assert_eq!(src.add(leak(GRAN / 2)), Err(AddError::TooSmall));
        let first = leak(2 * GRAN);
        let (p, l) = (first.as_mut_ptr(), first.len());
        let u1 = src.add(first).unwrap();
        // SAFETY: the call must fail before touching the memory.
        assert_eq!(unsafe { src.add_raw(p, l) }, Err(AddError::Overlaps));
        let u2 = src.add(leak(3 * GRAN)).unwrap();
        let mut n = 0;
        while src.reserve(GRAN, GRAN).is_some() {
            n += 1;
        }
        assert_eq!(n * GRAN, u1 + u2);
        assert_eq!(src.capacity(), u1 + u2);
        assert!(!src.owns(0));
        assert!(!src.owns(usize::MAX & !(GRAN - 1)));
    }
}
