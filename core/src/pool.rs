//! The cold side: state shared by all heaps, each behind its own lock.
//!
//! - [`Pool`]: small segments and their free pages. Heaps take spans of pages
//!   from it and give empty spans back; a segment whose pages are all free is
//!   kept (up to `Config::segment_reserve`) or released to the `PageSource`.
//! - [`HeapPool`]: the metadata arena that `Heap`s are carved from, the list
//!   of clean heaps, and the list of abandoned heaps (owning spans whose
//!   thread has gone) that new threads adopt and others collect.
//! - [`LargeCache`]: freed Large regions kept for reuse.
//!
//! None of these locks is taken on a fast path: a span serves thousands of
//! allocations between two visits to the pool.

use core::ptr;

use crate::heap::Heap;
use crate::segment::{Geo, Geometry, SegmentHeader};

/// Index of the first run of `k` set bits in `mask` (`1 ≤ k ≤ 64`).
#[inline]
pub(crate) fn find_run(mask: u64, k: usize) -> Option<usize> {
    // After each step, bit `i` of `m` is set iff bits `i .. i + have` of
    // `mask` all are; `have` doubles each step, so this takes log2(k) steps
    // (the walk over segments calls it once per segment).
    let mut m = mask;
    let mut have = 1;
    while have < k {
        let step = have.min(k - have);
        m &= m >> step;
        have += step;
    }
    if m == 0 { None } else { Some(m.trailing_zeros() as usize) }
}

/// Bits `idx .. idx + k`.
#[inline]
pub(crate) fn run_bits(idx: usize, k: usize) -> u64 {
    (if k == 64 { u64::MAX } else { (1u64 << k) - 1 }) << idx
}

/// Free pages of the small segments.
pub(crate) struct Pool {
    /// Segments with at least one free page, doubly linked through their
    /// headers' `next`/`prev`.
    avail: *mut SegmentHeader,
    /// Segments on `avail` whose every page is free.
    pub empty_segments: usize,
    /// Live small segments.
    pub segments: usize,
    /// Pages handed to heaps (cached spans included).
    pub pages_in_use: usize,
    /// Segments with dirty pages, oldest first (doubly linked through `dq_*`).
    dq_head: *mut SegmentHeader,
    dq_tail: *mut SegmentHeader,
    /// Free pages known not to be resident (purged or never touched).
    pub clean_pages: usize,
    /// Bytes purged so far.
    pub purged_bytes: u64,
    /// Free pages that may be resident (the dirty bits of all segments).
    pub dirty_pages: usize,
}

// SAFETY: the raw pointers are to segment headers that live as long as the
// pool references them; the pool is only reached through its lock.
unsafe impl Send for Pool {}

impl Pool {
    pub(crate) const fn new() -> Pool {
        Pool {
            avail: ptr::null_mut(),
            empty_segments: 0,
            segments: 0,
            pages_in_use: 0,
            dq_head: ptr::null_mut(),
            dq_tail: ptr::null_mut(),
            clean_pages: 0,
            purged_bytes: 0,
            dirty_pages: 0,
        }
    }

    /// # Safety
    /// `seg` is a live small segment whose header this lock guards.
    unsafe fn link(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: we hold the pool lock, which guards these fields.
        unsafe {
            (*seg).prev.set(ptr::null_mut());
            (*seg).next.set(self.avail);
            if !self.avail.is_null() {
                (*self.avail).prev.set(seg);
            }
            (*seg).listed.set(true);
        }
        self.avail = seg;
    }

    /// # Safety
    /// As for `link`, and `seg` is on the list.
    unsafe fn unlink(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: we hold the pool lock, which guards these fields.
        unsafe {
            let (prev, next) = ((*seg).prev.get(), (*seg).next.get());
            if prev.is_null() {
                self.avail = next;
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
            (*seg).listed.set(false);
        }
    }

    /// Add a freshly initialised segment with all its pages free.
    ///
    /// # Safety
    /// `seg` is a live small segment not yet known to the pool.
    pub(crate) unsafe fn add_segment<G: Geometry>(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: the segment is ours and now guarded by the pool lock.
        unsafe {
            (*seg).free_mask.set(Geo::<G>::ALL_PAGES);
            // Never touched: nothing resident but the header.
            (*seg).clean.set(Geo::<G>::ALL_PAGES);
            self.link(seg);
        }
        self.segments += 1;
        self.empty_segments += 1;
        self.clean_pages += Geo::<G>::ALL_PAGES.count_ones() as usize;
    }

    /// Take a run of `pages` free pages, avoiding the shortened first page
    /// unless `first_ok`. Returns the segment and the run's first page index.
    pub(crate) fn take_span<G: Geometry>(
        &mut self,
        pages: usize,
        first_ok: bool,
    ) -> Option<(*mut SegmentHeader, usize)> {
        let skip = if Geo::<G>::PARTIAL_FIRST && !first_ok { 1u64 << Geo::<G>::FIRST_PAGE } else { 0 };
        let mut seg = self.avail;
        while !seg.is_null() {
            // SAFETY: segments on the list are live; the lock guards the fields.
            unsafe {
                let mask = (*seg).free_mask.get();
                if let Some(idx) = find_run(mask & !skip, pages) {
                    if mask == Geo::<G>::ALL_PAGES {
                        self.empty_segments -= 1;
                    }
                    let bits = run_bits(idx, pages);
                    let left = mask & !bits;
                    (*seg).free_mask.set(left);
                    let dirty = (*seg).dirty.get();
                    self.dirty_pages -= (dirty & bits).count_ones() as usize;
                    (*seg).dirty.set(dirty & !bits);
                    let clean = (*seg).clean.get();
                    self.clean_pages -= (clean & bits).count_ones() as usize;
                    (*seg).clean.set(clean & !bits);
                    if left == 0 {
                        self.unlink(seg);
                    }
                    self.pages_in_use += pages;
                    return Some((seg, idx));
                }
                seg = (*seg).next.get();
            }
        }
        None
    }

    /// Give back the run `idx .. idx + pages` of `seg`. Returns the segment if
    /// it became empty and should be released (it is then off the pool).
    ///
    /// # Safety
    /// The run was taken from this pool and its descriptors are already
    /// marked free.
    pub(crate) unsafe fn give_span<G: Geometry>(
        &mut self,
        seg: *mut SegmentHeader,
        idx: usize,
        pages: usize,
        reserve: usize,
        now: u64,
    ) -> Option<*mut SegmentHeader> {
        self.pages_in_use -= pages;
        // SAFETY: live segment; the lock guards the fields.
        unsafe {
            let bits = run_bits(idx, pages);
            let mask = (*seg).free_mask.get() | bits;
            (*seg).free_mask.set(mask);
            if !(*seg).listed.get() {
                self.link(seg);
            }
            if mask == Geo::<G>::ALL_PAGES {
                if self.empty_segments < reserve {
                    self.empty_segments += 1;
                } else {
                    self.forget(seg);
                    return Some(seg);
                }
            }
            let dirty = (*seg).dirty.get();
            self.dirty_pages += (bits & !dirty).count_ones() as usize;
            (*seg).dirty.set(dirty | bits);
            if !(*seg).in_dq.get() {
                (*seg).dirty_since.set(now);
                self.dq_push(seg);
            }
        }
        None
    }

    /// Take a segment off every list before it is released.
    ///
    /// # Safety
    /// `seg` is a live small segment of this pool with all pages free.
    unsafe fn forget(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: the lock guards the fields.
        unsafe {
            self.unlink(seg);
            if (*seg).in_dq.get() {
                self.dq_remove(seg);
            }
            self.clean_pages -= (*seg).clean.get().count_ones() as usize;
            self.dirty_pages -= (*seg).dirty.get().count_ones() as usize;
            (*seg).dirty.set(0);
        }
        self.segments -= 1;
    }

    /// # Safety
    /// `seg` is live and not on the dirty queue.
    unsafe fn dq_push(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: the lock guards the fields.
        unsafe {
            (*seg).dq_next.set(ptr::null_mut());
            (*seg).dq_prev.set(self.dq_tail);
            if self.dq_tail.is_null() {
                self.dq_head = seg;
            } else {
                (*self.dq_tail).dq_next.set(seg);
            }
            self.dq_tail = seg;
            (*seg).in_dq.set(true);
        }
    }

    /// # Safety
    /// `seg` is on the dirty queue.
    unsafe fn dq_remove(&mut self, seg: *mut SegmentHeader) {
        // SAFETY: the lock guards the fields.
        unsafe {
            let (prev, next) = ((*seg).dq_prev.get(), (*seg).dq_next.get());
            if prev.is_null() {
                self.dq_head = next;
            } else {
                (*prev).dq_next.set(next);
            }
            if next.is_null() {
                self.dq_tail = prev;
            } else {
                (*next).dq_prev.set(prev);
            }
            (*seg).in_dq.set(false);
        }
    }

    /// Purge the dirty free pages of segments whose oldest dirty page has
    /// been free for `delay` ms (all of them with `force`), and, oldest
    /// first, of as many more as it takes to bring the dirty pages down to
    /// `limit`; at most `max_segments` segments. `purge(seg, first_page,
    /// pages)` purges a run and says whether the memory is now not resident.
    pub(crate) fn purge_expired<G: Geometry>(
        &mut self,
        now: u64,
        delay: u64,
        force: bool,
        limit: usize,
        mut max_segments: usize,
        mut purge: impl FnMut(*mut SegmentHeader, usize, usize) -> bool,
    ) {
        while !self.dq_head.is_null() && max_segments > 0 {
            let seg = self.dq_head;
            // SAFETY: queued segments are live; the lock guards the fields.
            unsafe {
                let expired = now.saturating_sub((*seg).dirty_since.get()) >= delay;
                if !force && !expired && self.dirty_pages <= limit {
                    break;
                }
                self.dq_remove(seg);
                let mut dirty = (*seg).dirty.get() & (*seg).free_mask.get();
                self.dirty_pages -= (*seg).dirty.get().count_ones() as usize;
                (*seg).dirty.set(0);
                let mut clean = 0u64;
                while dirty != 0 {
                    let start = dirty.trailing_zeros() as usize;
                    let len = (dirty >> start).trailing_ones() as usize;
                    let run = run_bits(start, len);
                    dirty &= !run;
                    if purge(seg, start, len) {
                        clean |= run;
                        self.purged_bytes += (len * Geo::<G>::PAGE_SIZE) as u64;
                    }
                }
                self.clean_pages += (clean & !(*seg).clean.get()).count_ones() as usize;
                (*seg).clean.set((*seg).clean.get() | clean);
            }
            max_segments -= 1;
        }
    }

    /// Remove every empty segment (for `collect` and teardown); `f` releases each.
    pub(crate) fn drain_empty<G: Geometry>(&mut self, mut f: impl FnMut(*mut SegmentHeader)) {
        let mut seg = self.avail;
        while !seg.is_null() {
            // SAFETY: live segments on the list; the lock guards the fields.
            unsafe {
                let next = (*seg).next.get();
                if (*seg).free_mask.get() == Geo::<G>::ALL_PAGES {
                    self.forget(seg);
                    self.empty_segments -= 1;
                    f(seg);
                }
                seg = next;
            }
        }
    }
}

/// Where `Heap`s come from and wait between owners.
pub(crate) struct HeapPool {
    /// Heaps that own no span.
    pub free: *mut Heap,
    /// Heaps that own spans but have no thread.
    pub abandoned: *mut Heap,
    pub abandoned_count: usize,
    /// Bump arena in the current metadata segment.
    pub arena: *mut u8,
    pub arena_end: *mut u8,
    /// Heaps ever carved.
    pub carved: usize,
    /// Every heap ever carved, linked through `all_next`.
    pub all: *mut Heap,
    /// Pages taken from the pool for metadata (never given back).
    pub meta_pages: usize,
    /// Regions reserved for metadata on geometries too small for a span of it.
    pub meta_regions: usize,
}

// SAFETY: raw pointers into metadata memory that is never released; the pool
// is only reached through its lock.
unsafe impl Send for HeapPool {}

impl HeapPool {
    pub(crate) const fn new() -> HeapPool {
        HeapPool {
            free: ptr::null_mut(),
            abandoned: ptr::null_mut(),
            abandoned_count: 0,
            arena: ptr::null_mut(),
            arena_end: ptr::null_mut(),
            carved: 0,
            all: ptr::null_mut(),
            meta_pages: 0,
            meta_regions: 0,
        }
    }

    /// Push `h` on the free or the abandoned list.
    ///
    /// # Safety
    /// `h` is a heap the caller holds and gives up.
    pub(crate) unsafe fn put(&mut self, h: *mut Heap, abandoned: bool) {
        // SAFETY: the heap pool lock guards `pool_next` and `abandoned`.
        unsafe {
            (*h).abandoned.set(abandoned);
            if abandoned {
                (*h).pool_next.set(self.abandoned);
                self.abandoned = h;
                self.abandoned_count += 1;
            } else {
                (*h).pool_next.set(self.free);
                self.free = h;
            }
        }
    }

    /// Pop an abandoned heap (preferring one with remote frees waiting when
    /// `want_remote`), or with `!want_remote` a free one if none is abandoned.
    pub(crate) fn take(&mut self, want_remote: bool) -> *mut Heap {
        let mut prev: *mut Heap = ptr::null_mut();
        let mut h = self.abandoned;
        while !h.is_null() {
            // SAFETY: heaps on the lists are live forever; the lock guards the links.
            unsafe {
                let next = (*h).pool_next.get();
                if !want_remote || (*h).has_remote() {
                    if prev.is_null() {
                        self.abandoned = next;
                    } else {
                        (*prev).pool_next.set(next);
                    }
                    self.abandoned_count -= 1;
                    (*h).abandoned.set(false);
                    return h;
                }
                prev = h;
                h = next;
            }
        }
        if want_remote || self.free.is_null() {
            return ptr::null_mut();
        }
        let h = self.free;
        // SAFETY: as above.
        unsafe { self.free = (*h).pool_next.get() };
        h
    }
}

/// A freed Large region kept for reuse.
#[derive(Clone, Copy)]
pub(crate) struct LargeEntry {
    pub seg: *mut SegmentHeader,
    pub size: usize,
    /// When it was cached (the source's milliseconds).
    pub since: u64,
    /// Whether its body has been purged, and how.
    pub purged: crate::source::Purged,
}

impl LargeEntry {
    pub(crate) const EMPTY: LargeEntry =
        LargeEntry { seg: ptr::null_mut(), size: 0, since: 0, purged: crate::source::Purged::No };
}

pub(crate) const LARGE_CACHE_SLOTS: usize = 16;

/// Freed Large regions, most recent last.
pub(crate) struct LargeCache {
    pub entries: [LargeEntry; LARGE_CACHE_SLOTS],
    pub len: usize,
    pub bytes: usize,
    /// Live Large allocations and their region bytes.
    pub live: usize,
    pub live_bytes: usize,
    /// Large allocations and frees so far.
    pub allocs: u64,
    pub frees: u64,
    /// Bytes of cached regions purged so far.
    pub purged_bytes: u64,
    /// When a region last went into or came out of the cache (ms).
    pub last_use: u64,
}

// SAFETY: the entries are regions owned by the cache; reached through its lock.
unsafe impl Send for LargeCache {}

impl LargeCache {
    pub(crate) const fn new() -> LargeCache {
        LargeCache {
            entries: [LargeEntry::EMPTY; LARGE_CACHE_SLOTS],
            len: 0,
            bytes: 0,
            live: 0,
            live_bytes: 0,
            allocs: 0,
            frees: 0,
            purged_bytes: 0,
            last_use: 0,
        }
    }

    /// Take the smallest cached region of at least `size` bytes or, failing
    /// that, the largest of at least half of `size` (its pages are worth
    /// moving rather than faulting in afresh). The caller resizes it.
    pub(crate) fn take(&mut self, size: usize, now: u64) -> Option<LargeEntry> {
        let mut best: Option<usize> = None;
        for i in 0..self.len {
            let e = self.entries[i];
            let better = match best.map(|b| self.entries[b].size) {
                None => e.size >= size / 2,
                Some(b) if b >= size => e.size >= size && e.size < b,
                Some(b) => e.size > b,
            };
            if better {
                best = Some(i);
            }
        }
        let i = best?;
        self.last_use = now;
        let e = self.entries[i];
        self.entries.copy_within(i + 1..self.len, i);
        self.len -= 1;
        self.bytes -= e.size;
        Some(e)
    }

    /// Keep `e`, evicting the oldest entries as needed to stay within
    /// `limit` bytes; `evict` receives each region that must go (possibly `e`).
    pub(crate) fn put(&mut self, e: LargeEntry, limit: usize, mut evict: impl FnMut(LargeEntry)) {
        if e.size > limit {
            evict(e);
            return;
        }
        while self.len == LARGE_CACHE_SLOTS || self.bytes + e.size > limit {
            let old = self.entries[0];
            self.entries.copy_within(1..self.len, 0);
            self.len -= 1;
            self.bytes -= old.size;
            evict(old);
        }
        self.entries[self.len] = e;
        self.len += 1;
        self.bytes += e.size;
        self.last_use = self.last_use.max(e.since);
    }

    /// Purge the body of every entry once the cache has seen no use for
    /// `delay` ms (all with `force`), and, oldest first, of as many more as it
    /// takes to keep the resident cached bytes within `limit`; `purge` does
    /// one region and says how. While the program keeps allocating Large
    /// blocks, the delay keeps restarting: a region about to be reused does
    /// not fault its pages in again (the cache's size bounds what it holds).
    /// With `by_age` (a thread's exit), every entry cached for the delay goes.
    pub(crate) fn purge_expired(
        &mut self,
        now: u64,
        delay: u64,
        force: bool,
        by_age: bool,
        limit: usize,
        mut purge: impl FnMut(&LargeEntry) -> crate::source::Purged,
    ) {
        let idle = now.saturating_sub(self.last_use) >= delay;
        let mut resident = self.resident_bytes();
        for e in &mut self.entries[..self.len] {
            let aged = by_age && now.saturating_sub(e.since) >= delay;
            if e.purged == crate::source::Purged::No && (force || idle || aged || resident > limit) {
                e.purged = purge(e);
                if e.purged != crate::source::Purged::No {
                    resident -= e.size;
                }
            }
        }
    }

    /// Bytes of cached regions not purged.
    pub(crate) fn resident_bytes(&self) -> usize {
        self.entries[..self.len].iter().filter(|e| e.purged == crate::source::Purged::No).map(|e| e.size).sum()
    }

    /// Remove every entry.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(LargeEntry)) {
        for i in 0..self.len {
            f(self.entries[i]);
        }
        self.len = 0;
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        assert_eq!(find_run(0b1011_1000, 1), Some(3));
        assert_eq!(find_run(0b1011_1000, 3), Some(3));
        assert_eq!(find_run(0b1011_1000, 4), None);
        assert_eq!(find_run(u64::MAX, 64), Some(0));
        assert_eq!(find_run(0, 1), None);
        assert_eq!(run_bits(3, 2), 0b11000);
        assert_eq!(run_bits(0, 64), u64::MAX);
    }

    /// `find_run` against the obvious bit-by-bit version, over random masks,
    /// masks of one long run, and every run length.
    #[test]
    fn find_run_matches_the_naive_version() {
        let naive = |mask: u64, k: usize| (0..=64 - k).find(|&i| (i..i + k).all(|j| mask >> j & 1 == 1));
        let mut rng = crate::tests::Rng(0x243f_6a88_85a3_08d3);
        for i in 0..crate::tests::steps(4000) {
            let mask = match i % 4 {
                0 => rng.next(),
                1 => rng.next() | rng.next(),
                2 => rng.next() & rng.next() & rng.next(),
                _ => {
                    let (a, b) = (rng.next() % 64, rng.next() % 64);
                    run_bits(a.min(b) as usize, (a.max(b) - a.min(b) + 1) as usize) | (1 << (rng.next() % 64))
                }
            };
            // Miri interprets every step: every ninth run length there.
            for k in (1..=64).step_by(if cfg!(miri) { 9 } else { 1 }) {
                assert_eq!(find_run(mask, k), naive(mask, k), "{mask:#x} {k}");
            }
        }
    }
}
