//! The allocator: fast paths, slow paths, spans, remote frees, Large.
//!
//! # The free path
//!
//! A free starts from the pointer alone. Masking off the low bits gives the
//! segment; the page index gives the descriptor (one load for the owner, one
//! for `info`: class, kind, distance to the span head). Then:
//!
//! - **local** — the descriptor's owner is the caller's heap. A Tiny block of
//!   the bin's current page goes on the bin's free list; of another page, on
//!   the magazine if the class has one, else back to its page (owner-only
//!   fields, no atomics). A Mid block goes on the ring, else the LIFO, else a
//!   share of the LIFO is flushed back to its pages.
//! - **remote** — the owner is another heap (alive or abandoned): one CAS
//!   pushes the block on that heap's transfer list for the class, and the first
//!   push onto an empty list raises the class's bit in the heap's mask. The
//!   owner drains the lists on its allocation slow path, a budget at a time,
//!   putting each block back on its page.
//! - **Large** — no owner and kind Large: the region goes to the Large cache
//!   or back to the source.
//! - anything else (a free page, a header, not our segment) is a [`Fault`].
//!
//! # The allocation path
//!
//! The size rounded up to the alignment picks a class by table. A Tiny
//! allocation pops the bin's free list; a Mid one the ring, then the LIFO.
//! When that is empty the slow path processes remote frees, then refills:
//! the magazine, the current page's free list, fresh blocks carved from the
//! current page, the next partial span, a cached empty span, and finally a span
//! from the pool (which may reserve a new segment).

use core::alloc::Layout;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crate::block::{self, Block};
use crate::check;
use crate::class::{self, FIRST_MID, NUM_CLASSES, NUM_TINY, TINY_MAX};
use crate::config::{Config, ConfigError};
use crate::heap::{Heap, HeapOwned, LocalHeap};
use crate::pool::{HeapPool, LargeCache, LargeEntry, Pool};
use crate::segment::{
    Geo, Geometry, PageDesc, PageFlags, SegmentHeader, Server, info, info_class, info_head_off, info_kind, kind,
    seg_kind, site,
};
use crate::source::{PageSource, Purged};
use crate::stats::{Op, Stats};
use crate::sync::{AtomicU32, Guarded, Mutex, Ordering, const_unless_loom, loom_bug};

/// What was wrong with a pointer given to [`Allocator::free`] or
/// [`Allocator::realloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The pointer is not in memory this allocator manages.
    NotOurs,
    /// The pointer is in our memory but is not a block we handed out (a
    /// header, metadata, or not the start of a Large block).
    NotABlock,
    /// The pointer is in a page that is free: the block was freed already
    /// (or never allocated).
    DoubleFree,
}

/// A bad pointer detected by the allocator, with its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What is wrong.
    pub kind: FaultKind,
    /// The pointer's address.
    pub addr: usize,
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let what = match self.kind {
            FaultKind::NotOurs => "free of a pointer hakmem never returned",
            FaultKind::NotABlock => "free of a pointer that is not the start of a hakmem block",
            FaultKind::DoubleFree => "double free (the pointer's page is free)",
        };
        write!(f, "{what}: {:#x}", self.addr)
    }
}

impl Fault {
    fn at(kind: FaultKind, p: *mut u8) -> Fault {
        Fault { kind, addr: p.addr() }
    }
}

/// The allocator: a [`PageSource`], a [`Config`] and the shared state of
/// every heap, for one [`Geometry`].
///
/// Threads (or CPUs) bring their own [`LocalHeap`], held `&mut` for each call.
/// A program uses one `Allocator` (typically a `static`) per memory source.
pub struct Allocator<S: PageSource, G: Geometry = Server> {
    source: S,
    /// Written only by `set_config`, before any other use of the allocator.
    config: Guarded<Config>,
    pool: Mutex<Pool>,
    heaps: Mutex<HeapPool>,
    large: Mutex<LargeCache>,
    /// Non-zero while the Large cache may hold resident regions: pool events
    /// then look whether the cache has been idle long enough to purge.
    large_resident: AtomicU32,
    /// The heap of threads that have none of their own (a thread that is
    /// exiting, or an adapter's fallback when its per-CPU heap is busy).
    shared: Mutex<LocalHeap>,
    _geometry: PhantomData<fn() -> G>,
}

impl<S: PageSource, G: Geometry> Allocator<S, G> {
    const_unless_loom! {
        /// An allocator over `source`. Panics (at compile time, in a `static`)
        /// if `config` is out of range; [`Allocator::try_new`] returns the error.
        pub fn new(source: S, config: Config) -> Self {
            let config = match config.validate() {
                Ok(c) => c,
                Err(_) => panic!("invalid hakmem Config"),
            };
            Self::build(source, config)
        }
    }

    const_unless_loom! {
        fn build(source: S, config: Config) -> Self {
            let () = Geo::<G>::CHECK;
            Allocator {
                source,
                config: Guarded::new(config),
                pool: Mutex::new(Pool::new()),
                heaps: Mutex::new(HeapPool::new()),
                large: Mutex::new(LargeCache::new()),
                large_resident: AtomicU32::new(0),
                shared: Mutex::new(LocalHeap::new()),
                _geometry: PhantomData,
            }
        }
    }

    /// An allocator over `source`, or the configuration error.
    pub fn try_new(source: S, config: Config) -> Result<Self, ConfigError> {
        Ok(Self::build(source, config.validate()?))
    }

    /// The page source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.cfg()
    }

    #[inline(always)]
    fn cfg(&self) -> &Config {
        // SAFETY: `set_config` writes it only before any other use of the
        // allocator, so every reader sees a value no one is writing.
        unsafe { &*self.config.as_const_ptr() }
    }

    /// Replace the configuration (an adapter reading `HAKMEM_*` at start-up).
    ///
    /// # Safety
    /// No other call on this allocator has run or runs concurrently: the
    /// adapter calls this once, before the first allocation, and makes every
    /// other thread's first call wait for it (e.g. with a `Once`).
    pub unsafe fn set_config(&self, config: Config) -> Result<(), ConfigError> {
        let config = config.validate()?;
        // SAFETY: exclusive by the caller's promise.
        unsafe { self.config.set(config) };
        Ok(())
    }

    // ------------------------------------------------------------------
    // Fast paths
    // ------------------------------------------------------------------

    /// Allocate from `heap`'s bins, or return null if they cannot serve the
    /// request (then call [`alloc_slow`](Self::alloc_slow)).
    #[inline(always)]
    pub fn alloc_fast(&self, heap: &mut LocalHeap, layout: Layout) -> *mut u8 {
        let align = layout.align();
        let s = layout.pad_to_align().size();
        if s <= TINY_MAX && (Geo::<G>::PAGE_SIZE >= TINY_MAX || align <= Geo::<G>::PAGE_SIZE) {
            let c = class::tiny_class(s);
            // SAFETY: `tiny_class` returns at most NUM_TINY.
            let bin = unsafe { heap.tiny.get_unchecked_mut(c) };
            let b = bin.free;
            if !b.is_null() {
                // SAFETY: a bin holds free blocks of this allocator that only
                // this heap's holder touches.
                let n = unsafe { block::next(b) };
                // A link is followed only within its page; anything else
                // (the end of the list, too) gets the full check.
                if Self::tiny_link_far(b, n) {
                    return self.pop_tiny_checked(heap, c, b, n);
                }
                bin.free = n;
                // SAFETY: `b` is being handed out.
                unsafe { block::clear(b) };
                heap.tiny_tick = heap.tiny_tick.wrapping_sub(1);
                if heap.tiny_tick == 0 {
                    return Self::sample(heap, c, Op::FastAlloc, b.cast());
                }
                return b.cast();
            }
        } else if s <= Geo::<G>::MID_MAX && align <= Geo::<G>::PAGE_SIZE {
            let c = class::mid_class(s);
            // SAFETY: `mid_class` returns FIRST_MID .. NUM_CLASSES.
            let bin = unsafe { heap.mid.get_unchecked_mut(c - FIRST_MID) };
            let b = if bin.len != 0 {
                bin.len -= 1;
                // SAFETY: `len < cap ≤ RING_MAX`.
                unsafe { *bin.ring.get_unchecked(bin.len as usize) }
            } else {
                let b = bin.lifo;
                if b.is_null() {
                    return ptr::null_mut();
                }
                // SAFETY: as for the Tiny bin.
                let n = unsafe { block::next(b) };
                // SAFETY: only an attached heap has blocks in its bins.
                if !n.is_null() && !unsafe { Self::lifo_link_near(heap.id, c, b, n) } {
                    return self.pop_lifo_checked(heap, c, b, n);
                }
                bin.lifo = n;
                bin.lifo_len -= 1;
                b
            };
            // SAFETY: `b` is being handed out.
            unsafe { block::clear(b) };
            heap.mid_tick = heap.mid_tick.wrapping_sub(1);
            if heap.mid_tick == 0 {
                return Self::sample(heap, c, Op::FastAlloc, b.cast());
            }
            return b.cast();
        }
        ptr::null_mut()
    }

    /// Take a counter sample: one fast-path operation of class `c` stands for
    /// the `2^N` since the last sample. Returns `ret` (a tail call keeps the
    /// fast path free of saved registers).
    #[cold]
    #[inline(never)]
    fn sample(heap: &mut LocalHeap, c: usize, op: Op, ret: *mut u8) -> *mut u8 {
        if class::is_tiny(c) {
            heap.tiny_tick = heap.tiny_period;
        } else {
            heap.mid_tick = heap.mid_period;
        }
        // SAFETY: only an attached heap takes a fast path; heaps live forever.
        unsafe { (*heap.id).counters.add(c, op, 1) };
        ret
    }

    /// Allocate `layout` (a zero size is served as one byte). Returns null
    /// when memory is exhausted. Attaches `heap` if it is detached.
    #[inline(always)]
    pub fn alloc(&self, heap: &mut LocalHeap, layout: Layout) -> *mut u8 {
        let p = self.alloc_fast(heap, layout);
        if !p.is_null() {
            return p;
        }
        self.alloc_slow(heap, layout)
    }

    /// Free `ptr`.
    ///
    /// # Safety
    /// `ptr` was returned by this allocator and not freed since, and the
    /// caller does not use it afterwards. Pointers that break this are
    /// detected where it costs nearly nothing (not our memory, a free page, a
    /// header) and reported as a [`Fault`] with nothing changed; others are
    /// undefined behaviour.
    #[inline(always)]
    pub unsafe fn free(&self, heap: &mut LocalHeap, ptr: *mut u8) -> Result<(), Fault> {
        let mut r = Ok(());
        // SAFETY: forwarded from the caller.
        unsafe { self.free_or(heap, ptr, |f| r = Err(f)) };
        r
    }

    /// Free `ptr`, calling `on_fault` for a bad pointer (an adapter passes a
    /// function that reports and aborts). The fast paths return without a
    /// result to check, and every slow path is a tail call.
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline(always)]
    pub unsafe fn free_or<F: FnOnce(Fault)>(&self, heap: &mut LocalHeap, ptr: *mut u8, on_fault: F) {
        let seg = Geo::<G>::segment_of(ptr);
        if !self.source.owns(seg.addr()) {
            return self.free_unowned(ptr, on_fault);
        }
        // SAFETY: `ptr` is in a live segment of ours.
        if check::EXACT_FREE && unsafe { self.already_free(ptr) } {
            return on_fault(Fault::at(FaultKind::DoubleFree, ptr));
        }
        let d = Geo::<G>::desc_of(ptr);
        // SAFETY: `seg` is a live region of ours, so its descriptors are
        // readable. Relaxed: see `PageDesc::owner`.
        let (owner, inf) = unsafe { ((*d).owner.load(Ordering::Relaxed), (*d).info.load(Ordering::Relaxed)) };
        if owner != heap.id {
            // SAFETY: forwarded from the caller.
            return unsafe { self.free_remote(owner, inf, ptr, on_fault) };
        }
        let c = info_class(inf);
        let b = ptr.cast::<Block>();
        // Every class (a one-page span has distance 0): one subtraction
        // instead of a branch on the tier.
        let head = d.wrapping_sub(info_head_off(inf));
        // An interior pointer, or a block never carved: one multiply and
        // one comparison against the span's bump, on the same cache line.
        // SAFETY: `heap` holds the span's owner, so its fields are ours.
        if !unsafe { Self::on_block(head, c, ptr, (*head).bump.get()) } {
            return on_fault(Fault::at(FaultKind::NotABlock, ptr));
        }
        if class::is_tiny(c) {
            // SAFETY: `c ≤ NUM_TINY`.
            let bin = unsafe { heap.tiny.get_unchecked_mut(c) };
            if head == bin.page {
                // SAFETY: the caller gives the block up; it is ours to link.
                unsafe { block::set_next(b, bin.free) };
                bin.free = b;
            } else if bin.mag_len < bin.mag_cap {
                // SAFETY: as above.
                unsafe { block::set_next(b, bin.mag) };
                bin.mag = b;
                bin.mag_len += 1;
            } else {
                // SAFETY: the block is a live block of a span `heap` owns.
                return unsafe { self.free_local_slow(heap, d, inf, b) };
            }
            heap.tiny_tick = heap.tiny_tick.wrapping_sub(1);
            if heap.tiny_tick == 0 {
                Self::sample(heap, c, Op::FastFree, ptr);
            }
            return;
        }
        // SAFETY: an owned span's class is a valid class; above Tiny it is Mid.
        let bin = unsafe { heap.mid.get_unchecked_mut(c - FIRST_MID) };
        if bin.len < bin.cap {
            if check::EXACT_FREE {
                // Mark the block free, so a second free of it is caught.
                // SAFETY: the caller gives the block up.
                unsafe { block::set_next(b, ptr::null_mut()) };
            }
            // SAFETY: `len < cap ≤ RING_MAX`.
            unsafe { *bin.ring.get_unchecked_mut(bin.len as usize) = b };
            bin.len += 1;
        } else if bin.lifo_len < bin.lifo_cap {
            // SAFETY: as for Tiny.
            unsafe { block::set_next(b, bin.lifo) };
            bin.lifo = b;
            bin.lifo_len += 1;
        } else {
            // SAFETY: the block is a live block of a span `heap` owns.
            return unsafe { self.free_local_slow(heap, d, inf, b) };
        }
        heap.mid_tick = heap.mid_tick.wrapping_sub(1);
        if heap.mid_tick == 0 {
            Self::sample(heap, c, Op::FastFree, ptr);
        }
    }

    /// Free `ptr`, allocated with `layout`, calling `on_fault` for a bad
    /// pointer. Knowing the layout (Rust's `dealloc` does; C's `free` does
    /// not) gives the class without a descriptor: a block inside the current
    /// page of its class's bin is pushed back at once. The page is ours and of
    /// that class, so the test is sound even if `layout` is wrong; anything
    /// else takes [`free_or`](Self::free_or).
    ///
    /// # Safety
    /// As for [`free`](Self::free); `layout` is the one `ptr` was allocated with.
    #[inline(always)]
    pub unsafe fn free_sized_or<F: FnOnce(Fault)>(
        &self,
        heap: &mut LocalHeap,
        ptr: *mut u8,
        layout: Layout,
        on_fault: F,
    ) {
        let s = layout.pad_to_align().size();
        if s <= TINY_MAX {
            let c = class::tiny_class(s);
            // SAFETY: `tiny_class` returns at most NUM_TINY.
            let bin = unsafe { heap.tiny.get_unchecked_mut(c) };
            if ptr.addr().wrapping_sub(bin.page_base) < bin.page_len
                // Hardened and checking builds: on a block boundary, not
                // already free; anything else goes the long way and is reported.
                // SAFETY: the bin's page is owned by `heap`'s heap.
                && (!HARDENED_FREE || unsafe { Self::on_block(bin.page, c, ptr, (*bin.page).bump.get()) })
                // SAFETY: `ptr` is inside a page of ours.
                && !(check::EXACT_FREE && unsafe { self.already_free(ptr) })
            {
                let b = ptr.cast::<Block>();
                // SAFETY: `ptr` lies in the bin's current page, which this
                // heap owns; the caller gives the block up.
                unsafe { block::set_next(b, bin.free) };
                bin.free = b;
                heap.tiny_tick = heap.tiny_tick.wrapping_sub(1);
                if heap.tiny_tick == 0 {
                    Self::sample(heap, c, Op::FastFree, ptr);
                }
                return;
            }
        }
        // Out of line: the descriptor path needs registers the hot front
        // does not, and inlined it would make every free save them.
        // SAFETY: forwarded from the caller.
        unsafe { self.free_or_outlined(heap, ptr, on_fault) }
    }

    /// [`free_or`](Self::free_or), not inlined (the tail of `free_sized_or`).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    #[inline(never)]
    unsafe fn free_or_outlined<F: FnOnce(Fault)>(&self, heap: &mut LocalHeap, ptr: *mut u8, on_fault: F) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_or(heap, ptr, on_fault) }
    }

    /// Head descriptor of the span `d` belongs to.
    #[inline(always)]
    fn head(d: *mut PageDesc, inf: u32) -> *mut PageDesc {
        if Geo::<G>::TINY_SINGLE_PAGE && class::is_tiny(info_class(inf)) {
            d
        } else {
            d.wrapping_sub(info_head_off(inf))
        }
    }

    /// Free `ptr` from a thread without a heap of its own (every free is then
    /// remote or Large). Same contract as [`free`](Self::free).
    ///
    /// # Safety
    /// As for [`free`](Self::free).
    pub unsafe fn free_detached(&self, ptr: *mut u8) -> Result<(), Fault> {
        let mut r = Ok(());
        let seg = Geo::<G>::segment_of(ptr);
        if !self.source.owns(seg.addr()) {
            self.free_unowned(ptr, |f| r = Err(f));
            return r;
        }
        // SAFETY: `ptr` is in a live segment of ours.
        if check::EXACT_FREE && unsafe { self.already_free(ptr) } {
            return Err(Fault::at(FaultKind::DoubleFree, ptr));
        }
        let d = Geo::<G>::desc_of(ptr);
        // SAFETY: as in `free`.
        let (owner, inf) = unsafe { ((*d).owner.load(Ordering::Relaxed), (*d).info.load(Ordering::Relaxed)) };
        // SAFETY: forwarded from the caller.
        unsafe { self.free_remote(owner, inf, ptr, |f| r = Err(f)) };
        r
    }

    // ------------------------------------------------------------------
    // Free slow paths
    // ------------------------------------------------------------------

    /// A free whose page is not owned by the caller's heap.
    ///
    /// # Safety
    /// `owner`/`inf` were read from the descriptor of `ptr`, a pointer in one
    /// of our live segments, which the caller gives up.
    #[inline(never)]
    unsafe fn free_remote<F: FnOnce(Fault)>(&self, owner: *mut Heap, inf: u32, ptr: *mut u8, on_fault: F) {
        if !owner.is_null() {
            let head = Self::head(Geo::<G>::desc_of(ptr), inf);
            // SAFETY: the span has a live block (or the pointer is bad and
            // this is how we find out): its area and capacity were written
            // before any block of it was handed out and do not change while
            // one is live, so reading them from another thread is ordered by
            // the block's hand-off, as `owner` and `info` are.
            if !unsafe { Self::on_block(head, info_class(inf), ptr, (*head).capacity.get()) } {
                return on_fault(Fault::at(FaultKind::NotABlock, ptr));
            }
            // SAFETY: heaps are never freed; the block is live in a span of
            // `owner`'s, so the owner cannot change under us.
            unsafe { (*owner).push_remote(info_class(inf), ptr.cast()) };
            return;
        }
        let r = match info_kind(inf) {
            // SAFETY: forwarded.
            kind::LARGE => unsafe { self.free_large(ptr) },
            kind::FREE | kind::CACHED => Err(Fault::at(FaultKind::DoubleFree, ptr)),
            _ => Err(Fault::at(FaultKind::NotABlock, ptr)),
        };
        if let Err(f) = r {
            on_fault(f);
        }
    }

    /// A pointer whose segment base is not a region of ours: a Large block
    /// aligned to a segment or more, or a foreign pointer.
    #[cold]
    #[inline(never)]
    fn free_unowned<F: FnOnce(Fault)>(&self, ptr: *mut u8, on_fault: F) {
        match self.find_huge_aligned(ptr) {
            // SAFETY: `find_huge_aligned` checked that `seg` is a live Large
            // header whose block starts at `ptr`.
            Some(seg) => unsafe { self.release_large(seg) },
            None => on_fault(Fault::at(FaultKind::NotOurs, ptr)),
        }
    }

    /// The Large header of a block at `ptr` aligned to more than a segment.
    /// Such a region starts `align` bytes before its block, and `align` is a
    /// power of two no smaller than a segment, so a few probes find it.
    fn find_huge_aligned(&self, ptr: *mut u8) -> Option<*mut SegmentHeader> {
        if ptr.addr() & Geo::<G>::SEGMENT_MASK != 0 || ptr.is_null() {
            return None;
        }
        let mut back = Geo::<G>::SEGMENT_SIZE;
        while back != 0 && back <= ptr.addr() {
            let seg = ptr.wrapping_sub(back).cast::<SegmentHeader>();
            if self.source.owns(seg.addr()) {
                // SAFETY: a live region of ours starts at `seg`; every region
                // starts with a header.
                let hit = unsafe { Geo::<G>::is_live(seg, seg_kind::LARGE) && (*seg).block_offset.get() == back };
                if hit {
                    return Some(seg);
                }
            }
            back <<= 1;
        }
        None
    }

    /// A local free that the bins could not absorb.
    ///
    /// # Safety
    /// `b` is a live block of the span of `d`, owned by `heap`'s heap.
    #[inline(never)]
    unsafe fn free_local_slow(&self, heap: &mut LocalHeap, d: *mut PageDesc, inf: u32, b: *mut Block) {
        let c = info_class(inf);
        let h = heap.id;
        // SAFETY: `heap` holds `h`, so its owned state is ours.
        unsafe {
            (*h).counters.add(c, Op::SlowFree, 1);
            (*h).owned.with_mut(|o| {
                if class::is_tiny(c) {
                    let bin = &mut heap.tiny[c];
                    if bin.mag_cap != 0 {
                        (*h).counters.flush();
                        self.delta(o, Self::head(d, inf), site::THRESHOLD);
                        // Magazine full: return its older half to the pages.
                        let keep = bin.mag_cap / 2;
                        let mut cur = bin.mag;
                        for _ in 1..keep {
                            let n = block::next(cur);
                            self.check_link(h, c, cur, n);
                            cur = n;
                        }
                        let rest = block::next(cur);
                        block::set_next(cur, ptr::null_mut());
                        bin.mag_len = keep;
                        self.return_list(o, h, c, rest);
                        block::set_next(b, bin.mag);
                        bin.mag = b;
                        bin.mag_len += 1;
                        return;
                    }
                    self.return_block(o, Self::head(d, inf), b);
                } else {
                    let bin = &mut heap.mid[c - FIRST_MID];
                    if bin.lifo_cap == 0 {
                        self.return_block(o, Self::head(d, inf), b);
                        return;
                    }
                    // Ring and LIFO full: flush a share of the LIFO.
                    (*h).counters.flush();
                    self.delta(o, Self::head(d, inf), site::THRESHOLD);
                    let n = (bin.lifo_len / self.cfg().ring_return_div as u32).max(1);
                    for _ in 0..n {
                        let x = bin.lifo;
                        let next = block::next(x);
                        if !next.is_null() {
                            self.check_link(h, c, x, next);
                        }
                        bin.lifo = next;
                        bin.lifo_len -= 1;
                        self.return_block(o, Self::head_of(x), x);
                    }
                    block::set_next(b, bin.lifo);
                    bin.lifo = b;
                    bin.lifo_len += 1;
                }
            })
        }
    }

    /// Head descriptor of the span of block `b` (any class).
    ///
    /// # Safety
    /// `b` is a block in a live span.
    #[inline]
    unsafe fn head_of(b: *mut Block) -> *mut PageDesc {
        let d = Geo::<G>::desc_of(b);
        // SAFETY: the span is live, its descriptors readable.
        let inf = unsafe { (*d).info.load(Ordering::Relaxed) };
        Self::head(d, inf)
    }

    // ------------------------------------------------------------------
    // Checks of pointers and free-list links (docs/SAFETY.md)
    // ------------------------------------------------------------------

    /// Whether the link from Tiny block `b` to `n` needs the full check: it
    /// leaves `b`'s page (or ends the list). Within a page the blocks of a
    /// Tiny bin's list are all of the bin's class and owner, so a link that
    /// stays there can be followed without corrupting anything outside the
    /// page. In encoded builds a forged link decodes to a random address,
    /// which leaves the page but with a chance of 2^-48.
    #[inline(always)]
    fn tiny_link_far(b: *mut Block, n: *mut Block) -> bool {
        (b.addr() ^ n.addr()) >> G::PAGE_SHIFT != 0
    }

    /// The rest of a Tiny pop whose link needs the full check.
    #[cold]
    #[inline(never)]
    fn pop_tiny_checked(&self, heap: &mut LocalHeap, c: usize, b: *mut Block, n: *mut Block) -> *mut u8 {
        if !n.is_null() {
            // SAFETY: only an attached heap has blocks in its bins; `heap`
            // holds it.
            unsafe { self.check_link(heap.id, c, b, n) };
        }
        heap.tiny[c].free = n;
        // SAFETY: `b` is being handed out.
        unsafe { block::clear(b) };
        heap.tiny_tick = heap.tiny_tick.wrapping_sub(1);
        if heap.tiny_tick == 0 {
            return Self::sample(heap, c, Op::FastAlloc, b.cast());
        }
        b.cast()
    }

    /// Whether the link from Mid block `b` to `n` (non-null) may be followed
    /// without the full check: `n` is in `b`'s segment, in a page of class
    /// `c` owned by `h`.
    ///
    /// # Safety
    /// `b` is a block of a live segment of ours.
    #[inline(always)]
    unsafe fn lifo_link_near(h: *mut Heap, c: usize, b: *mut Block, n: *mut Block) -> bool {
        if (b.addr() ^ n.addr()) >> G::SEGMENT_SHIFT != 0 {
            return false;
        }
        let d = Geo::<G>::desc_of(n);
        // SAFETY: `n` is in `b`'s segment, which is live: its descriptors
        // are readable.
        unsafe {
            (*d).owner.load(Ordering::Relaxed) == h
                && (*d).info.load(Ordering::Relaxed) & 0xffff == info(c, kind::SMALL, 0)
        }
    }

    /// The rest of a Mid LIFO pop whose link needs the full check.
    #[cold]
    #[inline(never)]
    fn pop_lifo_checked(&self, heap: &mut LocalHeap, c: usize, b: *mut Block, n: *mut Block) -> *mut u8 {
        // SAFETY: `heap` holds its heap, whose bins these are.
        unsafe { self.check_link(heap.id, c, b, n) };
        let bin = &mut heap.mid[c - FIRST_MID];
        bin.lifo = n;
        bin.lifo_len -= 1;
        // SAFETY: `b` is being handed out.
        unsafe { block::clear(b) };
        heap.mid_tick = heap.mid_tick.wrapping_sub(1);
        if heap.mid_tick == 0 {
            return Self::sample(heap, c, Op::FastAlloc, b.cast());
        }
        b.cast()
    }

    /// Fail fast unless `n`, read from the link of `from` (or the first block
    /// of a list, with `from` null), is a block of class `c` that `h` owns.
    ///
    /// # Safety
    /// The caller holds `h`'s owned state; `from` is null or a checked block.
    #[inline]
    unsafe fn check_link(&self, h: *mut Heap, c: usize, from: *mut Block, n: *mut Block) {
        // SAFETY: forwarded.
        if !unsafe { self.link_ok(h, c, n) } {
            self.bad_link(from, n)
        }
    }

    /// Whether `n` is a carved block of class `c` in a span owned by `h`, on
    /// a block boundary: a link that may be followed.
    ///
    /// # Safety
    /// The caller holds `h`'s owned state.
    unsafe fn link_ok(&self, h: *mut Heap, c: usize, n: *mut Block) -> bool {
        if !self.source.owns(Geo::<G>::segment_of(n).addr()) {
            return false;
        }
        let d = Geo::<G>::desc_of(n);
        // SAFETY: a live segment of ours: its descriptors are readable; the
        // span's fields are `h`'s, which the caller holds.
        unsafe {
            let (owner, inf) = ((*d).owner.load(Ordering::Relaxed), (*d).info.load(Ordering::Relaxed));
            if owner != h || info_kind(inf) != kind::SMALL || info_class(inf) != c {
                return false;
            }
            let head = Self::head(d, inf);
            Self::on_block(head, c, n.cast(), (*head).bump.get())
        }
    }

    /// Stop: a free list is corrupt.
    #[cold]
    #[inline(never)]
    fn bad_link(&self, from: *mut Block, n: *mut Block) -> ! {
        if from.is_null() {
            self.source.fatal(format_args!(
                "corrupted free list (a write after free?): {n:p} is not a free block of the list's class and heap"
            ))
        }
        // SAFETY: `from` is a checked block of a span the caller owns.
        let head = unsafe { Self::head_of(from) };
        self.source.fatal(format_args!(
            "corrupted free list (a write after free?): free block {from:p} links to {n:p}, which is not a free block of its class and heap; {}",
            check::SpanState(head)
        ))
    }

    /// Whether `p` is the start of one of the first `count` blocks of the
    /// span whose head is `head`, of class `c`.
    ///
    /// # Safety
    /// `head` is the head descriptor of a span whose `area` is not being
    /// written (see the callers).
    #[inline(always)]
    unsafe fn on_block(head: *mut PageDesc, c: usize, p: *mut u8, count: u32) -> bool {
        // SAFETY: forwarded.
        let area = unsafe { (*head).area.get() };
        class::block_index(p.addr().wrapping_sub(area.addr()), c) < count as usize
    }

    /// Checking builds: whether the Small block at `ptr` is free already. A
    /// free block's link decodes to null or to a block of its class and
    /// owner; a live block's link word was cleared when it was handed out,
    /// and data the program wrote decodes to neither (but with a chance of
    /// about 2^-48).
    ///
    /// # Safety
    /// `ptr` is in a live segment of ours.
    #[cold]
    #[inline(never)]
    unsafe fn already_free(&self, ptr: *mut u8) -> bool {
        let d = Geo::<G>::desc_of(ptr);
        // SAFETY: a live segment's descriptors are readable; a Small page's
        // blocks are our memory.
        unsafe {
            let (owner, inf) = ((*d).owner.load(Ordering::Relaxed), (*d).info.load(Ordering::Relaxed));
            if info_kind(inf) != kind::SMALL || owner.is_null() || ptr.addr() & 7 != 0 {
                return false;
            }
            let n = block::next(ptr.cast());
            if n.is_null() {
                return true;
            }
            if n.addr() & 7 != 0 || !self.source.owns(Geo::<G>::segment_of(n).addr()) {
                return false;
            }
            let dn = Geo::<G>::desc_of(n);
            (*dn).owner.load(Ordering::Relaxed) == owner && (*dn).info.load(Ordering::Relaxed) & 0xffff == inf & 0xffff
        }
    }

    // ------------------------------------------------------------------
    // Span bookkeeping (owner only)
    // ------------------------------------------------------------------

    /// Record a change of span `d`'s counts at `site` (checking builds only:
    /// compiles to nothing otherwise).
    ///
    /// # Safety
    /// `d` is a span head owned by the heap whose owned state `o` is.
    #[inline(always)]
    unsafe fn delta(&self, o: &mut HeapOwned, d: *mut PageDesc, at: u8) {
        if check::DEBUG_SWITCHES {
            let c = self.cfg();
            if c.delta_trace {
                // SAFETY: owner-only field.
                unsafe { (*d).site.set(at) };
            }
            if c.delta_debug {
                o.deltas[at as usize] += 1;
            }
        }
    }

    /// Stop with a failed check's report.
    #[cold]
    #[inline(never)]
    fn failed(&self, r: check::Report) -> ! {
        self.source.fatal(format_args!("{r}"))
    }

    /// With `HAKMEM_TINY_C6_DEBUG_POP` in a checking build: validate span `d`
    /// before blocks are taken from it, and fail fast if it is corrupt.
    ///
    /// # Safety
    /// `d` is a span head owned by `h`, whose owned state the caller holds.
    #[inline(always)]
    unsafe fn check_pop(&self, h: *mut Heap, d: *mut PageDesc) {
        if check::DEBUG_SWITCHES && self.cfg().debug_pop {
            // SAFETY: forwarded.
            if let Err(r) = unsafe { check::span(d, h) } {
                self.failed(r);
            }
        }
    }

    /// Put block `b` back on its span `d` and settle the span's lists.
    ///
    /// # Safety
    /// `o` is the owned state of the heap that owns `d`, held by the caller,
    /// and `b` is a block of `d` that is in use.
    unsafe fn return_block(&self, o: &mut HeapOwned, d: *mut PageDesc, b: *mut Block) {
        // SAFETY: the owner's fields, and the caller's block.
        unsafe {
            self.delta(o, d, site::FREE);
            block::set_next(b, (*d).free.get());
            (*d).free.set(b);
            let fc = (*d).free_count.get() + 1;
            (*d).free_count.set(fc);
            let flags = (*d).flags.get();
            if flags.contains(PageFlags::CURRENT) {
                return;
            }
            if fc == (*d).bump.get() {
                if flags.contains(PageFlags::PARTIAL) {
                    Self::unlink_partial(o, d);
                }
                self.retire(o, d);
            } else if !flags.contains(PageFlags::PARTIAL) {
                Self::link_partial(o, d);
            }
        }
    }

    /// Return every block of the list starting at `b` (blocks of class `c`
    /// owned by `h`) to its span, checking each before following its link.
    ///
    /// # Safety
    /// As for `return_block`, for every block of the list; `o` is `h`'s.
    unsafe fn return_list(&self, o: &mut HeapOwned, h: *mut Heap, c: usize, mut b: *mut Block) {
        let mut from = ptr::null_mut();
        while !b.is_null() {
            // SAFETY: forwarded; the link is read before the block is reused.
            unsafe {
                self.check_link(h, c, from, b);
                from = b;
                let next = block::next(b);
                self.return_block(o, Self::head_of(b), b);
                b = next;
            }
        }
    }

    /// # Safety
    /// `d` is an owned span head not on a list; `o` its owner's state.
    unsafe fn link_partial(o: &mut HeapOwned, d: *mut PageDesc) {
        // SAFETY: owner-only fields.
        unsafe {
            let c = (*d).class();
            let head = o.partial[c];
            (*d).prev.set(ptr::null_mut());
            (*d).next.set(head);
            if !head.is_null() {
                (*head).prev.set(d);
            }
            o.partial[c] = d;
            (*d).flags.set((*d).flags.get() | PageFlags::PARTIAL);
        }
    }

    /// # Safety
    /// `d` is on `o`'s partial list.
    unsafe fn unlink_partial(o: &mut HeapOwned, d: *mut PageDesc) {
        // SAFETY: owner-only fields.
        unsafe {
            let (prev, next) = ((*d).prev.get(), (*d).next.get());
            if prev.is_null() {
                o.partial[(*d).class()] = next;
            } else {
                (*prev).next.set(next);
            }
            if !next.is_null() {
                (*next).prev.set(prev);
            }
            (*d).flags.set((*d).flags.get() - PageFlags::PARTIAL);
        }
    }

    /// A span that stopped being current: retire it if empty, list it if it
    /// has blocks to give, leave it off every list if full.
    ///
    /// # Safety
    /// `d` is an owned span head, not on a list; `o` its owner's state.
    unsafe fn settle(&self, o: &mut HeapOwned, d: *mut PageDesc) {
        // SAFETY: owner-only fields.
        unsafe {
            (*d).flags.set((*d).flags.get() - PageFlags::CURRENT);
            let (fc, bump) = ((*d).free_count.get(), (*d).bump.get());
            if fc == bump {
                self.retire(o, d);
            } else if fc > 0 || bump < (*d).capacity.get() {
                Self::link_partial(o, d);
            }
        }
    }

    /// An empty span leaves its heap: into the heap's cache, or to the pool.
    ///
    /// # Safety
    /// `d` is an empty owned span head on no list; `o` its owner's state.
    unsafe fn retire(&self, o: &mut HeapOwned, d: *mut PageDesc) {
        // SAFETY: forwarded.
        unsafe { self.delta(o, d, site::EMPTY) };
        o.spans -= 1;
        // SAFETY: the span is empty, so no block of it is live and no free
        // can read these descriptors concurrently; its fields are ours.
        unsafe {
            let pages = (*d).span.get() as usize;
            Self::mark_span(d, pages, ptr::null_mut(), info(0, kind::CACHED, 0));
            if (o.cache_len as usize) < self.cfg().heap_page_cache as usize {
                (*d).next.set(o.cache);
                o.cache = d;
                o.cache_len += 1;
            } else {
                self.give_to_pool(d);
            }
        }
    }

    /// Set owner and info of every descriptor of a span.
    ///
    /// # Safety
    /// The caller owns the span and no block of it is live.
    unsafe fn mark_span(d: *mut PageDesc, pages: usize, owner: *mut Heap, first_info: u32) {
        for i in 0..pages {
            let di = d.wrapping_add(i);
            let inf = if info_kind(first_info) == kind::SMALL { first_info + ((i as u32) << 16) } else { first_info };
            // SAFETY: descriptors of a live segment. Relaxed: no block of the
            // span is live, so no free reads these now; the next reader learns
            // of a block only through synchronisation that follows this store.
            unsafe {
                (*di).owner.store(owner, Ordering::Relaxed);
                (*di).info.store(inf, Ordering::Relaxed);
            }
        }
    }

    /// Give an empty span back to the pool.
    ///
    /// # Safety
    /// `d` is an empty span head taken from this pool, on no list, marked not owned.
    unsafe fn give_to_pool(&self, d: *mut PageDesc) {
        // SAFETY: the span is ours until the pool takes it back.
        unsafe {
            let pages = (*d).span.get() as usize;
            Self::mark_span(d, pages, ptr::null_mut(), info(0, kind::FREE, 0));
            let seg = Geo::<G>::segment_of(d);
            let idx = Geo::<G>::desc_index(d);
            let now = self.source.now_ms();
            let release = {
                // Injected bug `loom-bug-unlocked-pool`: the segment's free
                // mask is read before the pool lock is taken and written back
                // under it, losing an update made in between.
                let stale = if loom_bug!("loom-bug-unlocked-pool") { Some((*seg).free_mask.get()) } else { None };
                let mut pool = self.pool.lock();
                if let Some(m) = stale {
                    (*seg).free_mask.set(m);
                }
                let r = pool.give_span::<G>(seg, idx, pages, self.cfg().segment_reserve as usize, now);
                // Piggyback: purge what has been free long enough.
                self.purge_pool(&mut pool, now, false, Self::PURGE_BATCH);
                drop(pool);
                self.purge_large_if_idle(now);
                r
            };
            if let Some(seg) = release {
                self.release_segment(seg, Geo::<G>::SEGMENT_SIZE);
            }
        }
    }

    /// # Safety
    /// `seg` is a region of ours of `size` bytes that nothing references.
    unsafe fn release_segment(&self, seg: *mut SegmentHeader, size: usize) {
        // SAFETY: the region is ours; clearing the cookie makes a stale
        // pointer into it fail the liveness check on sources whose memory
        // stays mapped.
        unsafe {
            (*seg).cookie = 0;
            self.source.release(NonNull::new_unchecked(seg.cast()), size);
        }
    }

    /// A span for class `c`, owned by `h`: from the heap's cache or the pool.
    ///
    /// # Safety
    /// `o` is `h`'s owned state, held by the caller.
    unsafe fn acquire_span(&self, h: *mut Heap, o: &mut HeapOwned, c: usize) -> Option<*mut PageDesc> {
        let pages = Geo::<G>::SPAN[c] as usize;
        let first_ok = Geo::<G>::FIRST_PAGE_OK & (1 << c) != 0;
        // SAFETY: cached spans are the heap's; the pool hands out spans
        // nobody else references.
        unsafe {
            let d = match self.take_cached(o, pages, first_ok) {
                Some(d) => d,
                None => self.take_from_pool(pages, first_ok)?,
            };
            let seg = Geo::<G>::segment_of(d);
            let idx = Geo::<G>::desc_index(d);
            let (area, len) = Geo::<G>::span_area(seg, idx, pages);
            (*d).flags.set(PageFlags::empty());
            (*d).free.set(ptr::null_mut());
            (*d).free_count.set(0);
            (*d).bump.set(0);
            (*d).capacity.set((len / class::size_of_class(c)) as u32);
            (*d).span.set(pages as u32);
            (*d).area.set(area);
            (*d).next.set(ptr::null_mut());
            (*d).prev.set(ptr::null_mut());
            Self::mark_span(d, pages, h, info(c, kind::SMALL, 0));
            o.spans += 1;
            Some(d)
        }
    }

    /// # Safety
    /// `o` is held by the caller.
    unsafe fn take_cached(&self, o: &mut HeapOwned, pages: usize, first_ok: bool) -> Option<*mut PageDesc> {
        let mut prev: *mut PageDesc = ptr::null_mut();
        let mut d = o.cache;
        while !d.is_null() {
            // SAFETY: cached spans belong to the heap; their fields are ours.
            unsafe {
                let next = (*d).next.get();
                let on_first = Geo::<G>::PARTIAL_FIRST && Geo::<G>::desc_index(d) == Geo::<G>::FIRST_PAGE;
                if (*d).span.get() as usize == pages && (first_ok || !on_first) {
                    if prev.is_null() {
                        o.cache = next;
                    } else {
                        (*prev).next.set(next);
                    }
                    o.cache_len -= 1;
                    return Some(d);
                }
                prev = d;
                d = next;
            }
        }
        None
    }

    /// Return every cached span of `o` to the pool.
    ///
    /// # Safety
    /// `o` is held by the caller.
    unsafe fn flush_cache(&self, o: &mut HeapOwned) {
        while !o.cache.is_null() {
            let d = o.cache;
            // SAFETY: cached spans are the heap's, empty and off every list.
            unsafe {
                o.cache = (*d).next.get();
                self.give_to_pool(d);
            }
        }
        o.cache_len = 0;
    }

    /// A run of `pages` pages from the pool, reserving a segment if needed.
    fn take_from_pool(&self, pages: usize, first_ok: bool) -> Option<*mut PageDesc> {
        let mut collected = false;
        loop {
            {
                let mut pool = self.pool.lock();
                let taken = pool.take_span::<G>(pages, first_ok);
                self.purge_pool(&mut pool, self.source.now_ms(), false, Self::PURGE_BATCH);
                if let Some((seg, idx)) = taken {
                    return Some(Geo::<G>::desc_at(seg, idx));
                }
            }
            // Before growing, let one exited thread's heap with remote frees
            // give back what they emptied: spans left by exited threads come
            // back even if no thread is ever created or collects again.
            if !collected {
                collected = true;
                if self.collect_abandoned_one() {
                    continue;
                }
            }
            // Reserve outside the lock: a system call must not stall others.
            let seg = self.new_segment(seg_kind::SMALL, kind::FREE)?;
            // SAFETY: a fresh segment, now handed to the pool.
            unsafe { self.pool.lock().add_segment::<G>(seg) };
        }
    }

    /// Reserve and initialise a segment.
    fn new_segment(&self, seg_kind: u32, page_kind: u32) -> Option<*mut SegmentHeader> {
        let size = Geo::<G>::SEGMENT_SIZE;
        let r = self.source.reserve(size, size)?;
        let seg = r.base.as_ptr().cast::<SegmentHeader>();
        // The links of free blocks are encoded with a secret set before the
        // first block exists (encoded builds; nothing otherwise).
        block::seed(self.source.entropy() ^ seg.addr() as u64 ^ (&raw const r).addr() as u64);
        // SAFETY: the source just gave us this segment-aligned region.
        unsafe {
            Geo::<G>::init_header(seg, seg_kind, size, page_kind);
            self.guard(seg);
        }
        Some(seg)
    }

    /// Hardened builds: make the guard between a fresh header and its first
    /// blocks inaccessible, where the source can.
    ///
    /// # Safety
    /// `seg` is a fresh region of ours with a header of `HEADER_SIZE` bytes.
    unsafe fn guard(&self, seg: *mut SegmentHeader) {
        let len = Geo::<G>::GUARD_SIZE;
        let start = Geo::<G>::META_END;
        if len != 0 && start.is_multiple_of(self.source.page_size()) && len.is_multiple_of(self.source.page_size()) {
            // SAFETY: the guard lies inside the header, past every byte the
            // core uses, and is page aligned.
            unsafe { self.source.protect(NonNull::new_unchecked(seg.cast::<u8>().add(start)), len) };
        }
    }

    // ------------------------------------------------------------------
    // Allocation slow paths
    // ------------------------------------------------------------------

    /// The class serving `size` at `align` in this geometry, if any.
    #[inline]
    fn class_for(size: usize, align: usize) -> Option<usize> {
        let s = class::round_up(size, align)?;
        let c = if s <= TINY_MAX && (Geo::<G>::PAGE_SIZE >= TINY_MAX || align <= Geo::<G>::PAGE_SIZE) {
            class::tiny_class(s)
        } else if s <= Geo::<G>::MID_MAX && align <= Geo::<G>::PAGE_SIZE {
            class::mid_class(s)
        } else {
            return None;
        };
        (Geo::<G>::SPAN[c] != 0).then_some(c)
    }

    /// Everything [`alloc_fast`](Self::alloc_fast) leaves: refills, Large,
    /// zero sizes, and attaching a detached heap.
    #[cold]
    #[inline(never)]
    pub fn alloc_slow(&self, heap: &mut LocalHeap, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        match Self::class_for(size, layout.align()) {
            Some(c) => {
                if !heap.is_attached() && !self.attach(heap) {
                    return ptr::null_mut();
                }
                let h = heap.id;
                // SAFETY: `heap` holds `h`.
                unsafe { (*h).owned.with_mut(|o| self.alloc_small(heap, h, o, c)) }
            }
            None => self.alloc_large(size, layout.align(), false),
        }
    }

    /// # Safety
    /// `heap` is attached to `h`, and `o` is `h`'s owned state.
    unsafe fn alloc_small(&self, heap: &mut LocalHeap, h: *mut Heap, o: &mut HeapOwned, c: usize) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe {
            self.drain_remote(h, o, self.cfg().drain_budget as usize);
            let p = if class::is_tiny(c) { self.refill_tiny(heap, h, o, c) } else { self.refill_mid(heap, h, o, c) };
            if !p.is_null() {
                block::clear(p.cast());
                (*h).counters.add(c, Op::SlowAlloc, 1);
            }
            if check::ENABLED {
                let cur = if class::is_tiny(c) { heap.tiny[c].page } else { o.mid_current[c] };
                if let Err(r) = check::heap(h, o) {
                    self.failed(r);
                }
                if !cur.is_null()
                    && let Err(r) = check::span(cur, h)
                {
                    self.failed(r);
                }
            }
            p
        }
    }

    /// Process remote frees, at most `budget` blocks: first those left pending
    /// by an earlier drain, then the flagged transfer lists.
    ///
    /// # Safety
    /// `o` is `h`'s owned state, held by the caller.
    unsafe fn drain_remote(&self, h: *mut Heap, o: &mut HeapOwned, budget: usize) {
        let mut left = budget;
        // SAFETY: heaps are never freed; the lists' blocks are live blocks of
        // `h`'s spans given up by their freeing threads.
        unsafe {
            let mut pending = o.pending_mask;
            while pending != 0 {
                let c = pending.trailing_zeros() as usize;
                pending &= pending - 1;
                let list = o.pending[c];
                let before = left;
                o.pending[c] = self.return_some(o, h, c, list, &mut left);
                (*h).counters.add(c, Op::Remote, before - left);
                if o.pending[c].is_null() {
                    o.pending_mask &= !(1 << c);
                }
                if left == 0 {
                    return;
                }
            }
            let mut mask = (*h).take_remote_mask();
            while mask != 0 {
                if left == 0 {
                    // Out of budget: flag the lists not taken for next time
                    // (injected bug `loom-bug-skip-reflag`: don't).
                    if !loom_bug!("loom-bug-skip-reflag") {
                        (*h).reflag_remote(mask);
                    }
                    return;
                }
                let c = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let list = (*h).take_remote(c);
                let before = left;
                let rest = self.return_some(o, h, c, list, &mut left);
                (*h).counters.add(c, Op::Remote, before - left);
                // Injected bug `loom-bug-drop-pending`: the part of a list
                // over budget is dropped instead of kept pending.
                let rest = if loom_bug!("loom-bug-drop-pending") { ptr::null_mut() } else { rest };
                if !rest.is_null() {
                    o.pending[c] = rest;
                    o.pending_mask |= 1 << c;
                }
            }
        }
    }

    /// Return up to `*left` blocks of `list` to their spans; the rest of the list.
    ///
    /// # Safety
    /// As for `return_list`.
    unsafe fn return_some(
        &self,
        o: &mut HeapOwned,
        h: *mut Heap,
        c: usize,
        mut list: *mut Block,
        left: &mut usize,
    ) -> *mut Block {
        let mut from = ptr::null_mut();
        while !list.is_null() && *left > 0 {
            // SAFETY: forwarded.
            unsafe {
                self.check_link(h, c, from, list);
                from = list;
                let next = block::next(list);
                self.return_block(o, Self::head_of(list), list);
                list = next;
            }
            *left -= 1;
        }
        list
    }

    /// Refill a Tiny bin and pop one block, or null when out of memory.
    ///
    /// # Safety
    /// `heap` is attached to `h`; `o` is `h`'s owned state.
    unsafe fn refill_tiny(&self, heap: &mut LocalHeap, h: *mut Heap, o: &mut HeapOwned, c: usize) -> *mut u8 {
        let bin = &mut heap.tiny[c];
        // SAFETY: owner-only state of spans `h` owns.
        unsafe {
            if bin.free.is_null() && !bin.mag.is_null() {
                bin.free = bin.mag;
                bin.mag = ptr::null_mut();
                bin.mag_len = 0;
            }
            while bin.free.is_null() {
                let d = bin.page;
                if !d.is_null() {
                    self.check_pop(h, d);
                    bin.free = self.take_blocks(d);
                    if !bin.free.is_null() {
                        self.delta(o, d, site::ALLOC);
                        break;
                    }
                    // Full: the page stops being current and leaves every list.
                    self.settle(o, d);
                    bin.page = ptr::null_mut();
                    bin.page_len = 0;
                }
                let Some(d) = self.next_span(h, o, c) else {
                    return ptr::null_mut();
                };
                (*d).flags.set((*d).flags.get() | PageFlags::CURRENT);
                self.delta(o, d, site::ATTACH);
                bin.page = d;
                // The hot front recognises the page's blocks by their address;
                // a class without it keeps an empty range.
                bin.page_base = (*d).area.get().addr();
                bin.page_len =
                    if self.cfg().is_hot_class(c) { (*d).capacity.get() as usize * class::size_of_class(c) } else { 0 };
            }
            let b = bin.free;
            let n = block::next(b);
            if !n.is_null() {
                self.check_link(h, c, b, n);
            }
            bin.free = n;
            b.cast()
        }
    }

    /// All of span `d`'s free list, or else a batch of fresh blocks; null if
    /// the span has nothing left.
    ///
    /// # Safety
    /// `d` is an owned span head; its fields are the caller's.
    unsafe fn take_blocks(&self, d: *mut PageDesc) -> *mut Block {
        // SAFETY: owner-only fields of a live span.
        unsafe {
            let f = (*d).free.get();
            if !f.is_null() {
                (*d).free.set(ptr::null_mut());
                // Injected bug `loom-bug-drop-delta`: the blocks now in the
                // bin still count as free in the span (the delta is lost).
                if !loom_bug!("loom-bug-drop-delta") {
                    (*d).free_count.set(0);
                }
                return f;
            }
            let bs = class::size_of_class((*d).class());
            self.carve(d, (4096 / bs).max(8))
        }
    }

    /// Carve up to `n` never-used blocks from `d`'s area, linked in order.
    ///
    /// # Safety
    /// As for `take_blocks`.
    unsafe fn carve(&self, d: *mut PageDesc, n: usize) -> *mut Block {
        // SAFETY: owner-only fields; the blocks lie inside the span's area.
        unsafe {
            let (bump, cap) = ((*d).bump.get() as usize, (*d).capacity.get() as usize);
            let k = n.min(cap - bump);
            if k == 0 {
                return ptr::null_mut();
            }
            let bs = class::size_of_class((*d).class());
            let first = (*d).area.get().add(bump * bs);
            if cfg!(feature = "secure") && k > 2 {
                // Hardened: the batch in a random order (an affine
                // permutation `i -> start + i * stride mod k`), so the
                // addresses of consecutive allocations are not predictable.
                let r = block::random(first.addr());
                let start = (r as usize) % k;
                let mut stride = 1 + ((r >> 32) as usize) % (k - 1);
                while gcd(stride, k) != 1 {
                    stride = if stride + 1 < k { stride + 1 } else { 1 };
                }
                let at = |i: usize| first.add((start + i * stride) % k * bs).cast::<Block>();
                for i in 0..k - 1 {
                    block::set_next(at(i), at(i + 1));
                }
                block::set_next(at(k - 1), ptr::null_mut());
                (*d).bump.set((bump + k) as u32);
                return at(0);
            }
            for i in 0..k - 1 {
                let b = first.add(i * bs).cast::<Block>();
                block::set_next(b, first.add((i + 1) * bs).cast());
            }
            block::set_next(first.add((k - 1) * bs).cast(), ptr::null_mut());
            (*d).bump.set((bump + k) as u32);
            first.cast()
        }
    }

    /// The next span for class `c`: a partial one, else a new one.
    ///
    /// # Safety
    /// `o` is `h`'s owned state.
    unsafe fn next_span(&self, h: *mut Heap, o: &mut HeapOwned, c: usize) -> Option<*mut PageDesc> {
        let d = o.partial[c];
        if !d.is_null() {
            // SAFETY: on our partial list.
            unsafe { Self::unlink_partial(o, d) };
            return Some(d);
        }
        // SAFETY: forwarded.
        unsafe { self.acquire_span(h, o, c) }
    }

    /// Refill a Mid bin's ring from its current span and pop one block.
    ///
    /// # Safety
    /// As for `refill_tiny`.
    unsafe fn refill_mid(&self, heap: &mut LocalHeap, h: *mut Heap, o: &mut HeapOwned, c: usize) -> *mut u8 {
        let bin = &mut heap.mid[c - FIRST_MID];
        let want = (bin.cap as usize).div_ceil(2) + 1;
        let mut got: *mut Block = ptr::null_mut();
        let mut n = 0;
        // SAFETY: owner-only state of spans `h` owns.
        unsafe {
            while n < want {
                let mut d = o.mid_current[c];
                if d.is_null() {
                    if n > 0 {
                        break;
                    }
                    let Some(nd) = self.next_span(h, o, c) else {
                        return ptr::null_mut();
                    };
                    (*nd).flags.set((*nd).flags.get() | PageFlags::CURRENT);
                    self.delta(o, nd, site::ATTACH);
                    o.mid_current[c] = nd;
                    d = nd;
                }
                self.check_pop(h, d);
                self.delta(o, d, site::ALLOC);
                while n < want {
                    let mut b = (*d).free.get();
                    if !b.is_null() {
                        let n = block::next(b);
                        if !n.is_null() {
                            self.check_link(h, c, b, n);
                        }
                        (*d).free.set(n);
                        (*d).free_count.set((*d).free_count.get() - 1);
                    } else {
                        b = self.carve(d, 1);
                        if b.is_null() {
                            break;
                        }
                    }
                    if got.is_null() {
                        got = b;
                    } else {
                        *bin.ring.get_unchecked_mut(bin.len as usize) = b;
                        bin.len += 1;
                    }
                    n += 1;
                    if bin.len == bin.cap && !got.is_null() {
                        break;
                    }
                }
                if (*d).free.get().is_null() && (*d).bump.get() == (*d).capacity.get() {
                    self.settle(o, d);
                    o.mid_current[c] = ptr::null_mut();
                }
                if bin.len == bin.cap {
                    break;
                }
            }
        }
        got.cast()
    }

    // ------------------------------------------------------------------
    // Heaps: attach, detach, adopt, collect
    // ------------------------------------------------------------------

    /// Attach `heap` to a heap: an abandoned one (adopting its spans) or a
    /// clean one, else a new one. Returns false if metadata memory is
    /// exhausted. Attaching an attached heap does nothing.
    pub fn attach(&self, heap: &mut LocalHeap) -> bool {
        if heap.is_attached() {
            return true;
        }
        let h = self.acquire_heap();
        if h.is_null() {
            return false;
        }
        heap.id = h;
        heap.configure(self.cfg());
        true
    }

    /// Pages of metadata span that heaps are carved from: room for a few heaps.
    const META_PAGES: usize = {
        let heap = core::mem::size_of::<Heap>().next_multiple_of(64);
        let pages = (4 * heap).div_ceil(Geo::<G>::PAGE_SIZE);
        if pages > Geo::<G>::MAX_SPAN { Geo::<G>::MAX_SPAN } else { pages }
    };

    /// Whether a metadata span holds at least one heap; if not (tiny
    /// geometries), heaps come from regions of their own.
    const META_IN_SPAN: bool =
        Self::META_PAGES * Geo::<G>::PAGE_SIZE >= core::mem::size_of::<Heap>().next_multiple_of(64);

    fn acquire_heap(&self) -> *mut Heap {
        let size = core::mem::size_of::<Heap>().next_multiple_of(64);
        loop {
            {
                let mut hp = self.heaps.lock();
                let h = hp.take(false);
                if !h.is_null() {
                    return h;
                }
                if !hp.arena.is_null() && hp.arena.addr() + size <= hp.arena_end.addr() {
                    let h = hp.arena.cast::<Heap>();
                    hp.arena = hp.arena.wrapping_add(size);
                    hp.carved += 1;
                    // SAFETY: fresh, aligned metadata memory of ours; the
                    // heap pool lock we hold guards `all_next`.
                    unsafe {
                        h.write(Heap::new());
                        (*h).all_next.set(hp.all);
                    }
                    hp.all = h;
                    return h;
                }
            }
            let (area, len) = if Self::META_IN_SPAN {
                // A span of pages from the pool, kept for metadata for good.
                let Some(d) = self.take_from_pool(Self::META_PAGES, false) else {
                    return ptr::null_mut();
                };
                let seg = Geo::<G>::segment_of(d);
                // SAFETY: the pool gave us the span; nothing else references it.
                unsafe { Self::mark_span(d, Self::META_PAGES, ptr::null_mut(), info(0, kind::META, 0)) };
                self.heaps.lock().meta_pages += Self::META_PAGES;
                Geo::<G>::span_area(seg, Geo::<G>::desc_index(d), Self::META_PAGES)
            } else {
                // A region of its own, with a header so that a stray pointer
                // into it is recognised as metadata.
                let ps = self.source.page_size();
                let Some(bytes) = (Geo::<G>::HEADER_SIZE + 4 * size).checked_next_multiple_of(ps) else {
                    return ptr::null_mut();
                };
                let Some(r) = self.source.reserve(bytes, Geo::<G>::SEGMENT_SIZE) else {
                    return ptr::null_mut();
                };
                let seg = r.base.as_ptr().cast::<SegmentHeader>();
                // SAFETY: a fresh region, aligned to a segment.
                unsafe { Geo::<G>::init_header(seg, seg_kind::META, bytes, kind::META) };
                self.heaps.lock().meta_regions += 1;
                let start = seg.cast::<u8>().wrapping_add(Geo::<G>::HEADER_SIZE);
                (start, bytes - Geo::<G>::HEADER_SIZE)
            };
            let start = area.map_addr(|a| a.next_multiple_of(64));
            let mut hp = self.heaps.lock();
            hp.arena = start;
            hp.arena_end = area.wrapping_add(len);
        }
    }

    /// Detach `heap`: flush its bins back to their spans, process remote
    /// frees, return empty spans, and leave the heap clean or abandoned for
    /// another thread to adopt. Call it when a thread exits.
    pub fn detach(&self, heap: &mut LocalHeap) {
        if !heap.is_attached() {
            return;
        }
        let h = heap.id;
        if loom_bug!("loom-bug-early-abandon") {
            // Injected bug: the heap is published for adoption before its
            // holder has flushed it.
            // SAFETY: none; this is the bug the thread-exit models must catch.
            unsafe { self.heaps.lock().put(h, true) };
        }
        // SAFETY: `heap` holds `h`.
        let abandoned = unsafe { (*h).owned.with_mut(|o| self.flush_heap(heap, h, o)) };
        if !loom_bug!("loom-bug-early-abandon") {
            // SAFETY: we give `h` up.
            unsafe { self.heaps.lock().put(h, abandoned) };
        }
        *heap = LocalHeap::new();
        // Thread exit is a purge opportunity too, and a sign that the Large
        // blocks this thread cycled may not come back: cached regions go
        // once they have waited the delay, whatever others do meanwhile
        // (`by_age`: a superset of what `purge(false)` would take).
        let now = self.source.now_ms();
        self.purge_pool(&mut self.pool.lock(), now, false, usize::MAX);
        self.purge_large(&mut self.large.lock(), now, false, true);
    }

    /// Empty every bin of `heap` into its spans; returns whether `h` still
    /// owns spans.
    ///
    /// # Safety
    /// `heap` is attached to `h`; `o` is its owned state.
    unsafe fn flush_heap(&self, heap: &mut LocalHeap, h: *mut Heap, o: &mut HeapOwned) -> bool {
        // SAFETY: the bins hold in-use blocks of `h`'s spans.
        unsafe {
            for c in 1..=NUM_TINY {
                let bin = &mut heap.tiny[c];
                let (free, mag, page) = (bin.free, bin.mag, bin.page);
                bin.free = ptr::null_mut();
                bin.mag = ptr::null_mut();
                bin.mag_len = 0;
                bin.page = ptr::null_mut();
                bin.page_len = 0;
                self.return_list(o, h, c, free);
                self.return_list(o, h, c, mag);
                if !page.is_null() {
                    self.settle(o, page);
                }
            }
            for (i, bin) in heap.mid.iter_mut().enumerate() {
                for k in 0..bin.len as usize {
                    let b = bin.ring[k];
                    self.return_block(o, Self::head_of(b), b);
                }
                bin.len = 0;
                let lifo = bin.lifo;
                bin.lifo = ptr::null_mut();
                bin.lifo_len = 0;
                let c = FIRST_MID + i;
                self.return_list(o, h, c, lifo);
                let d = o.mid_current[c];
                if !d.is_null() {
                    o.mid_current[c] = ptr::null_mut();
                    self.settle(o, d);
                }
            }
            self.drain_remote(h, o, usize::MAX);
            self.flush_cache(o);
            if check::ENABLED
                && let Err(r) = check::heap(h, o)
            {
                self.failed(r);
            }
            o.spans != 0
        }
    }

    /// Process the remote frees of one abandoned heap that has some, so that
    /// blocks freed into exited threads' spans return to the pool.
    fn collect_abandoned_one(&self) -> bool {
        let h = self.heaps.lock().take(true);
        if h.is_null() {
            return false;
        }
        // SAFETY: popping it from the abandoned list made us its holder; an
        // abandoned heap's bins were flushed, so none of its spans is current.
        let abandoned = unsafe {
            (*h).owned.with_mut(|o| {
                self.drain_remote(h, o, usize::MAX);
                self.flush_cache(o);
                o.spans != 0
            })
        };
        // SAFETY: we give `h` back.
        unsafe { self.heaps.lock().put(h, abandoned) };
        true
    }

    /// Return what can be returned: process `heap`'s remote frees and empty
    /// its span cache (if given), collect every abandoned heap with remote
    /// frees, release empty segments and the Large cache to the source.
    pub fn collect(&self, heap: Option<&mut LocalHeap>) {
        if let Some(heap) = heap.filter(|h| h.is_attached()) {
            let h = heap.id;
            // SAFETY: `heap` holds `h`.
            unsafe {
                (*h).owned.with_mut(|o| {
                    self.drain_remote(h, o, usize::MAX);
                    self.flush_cache(o);
                })
            };
        }
        let mut rounds = self.heaps.lock().abandoned_count;
        while rounds > 0 && self.collect_abandoned_one() {
            rounds -= 1;
        }
        let mut empty: [*mut SegmentHeader; 8] = [ptr::null_mut(); 8];
        loop {
            let mut n = 0;
            self.pool.lock().drain_empty::<G>(|seg| {
                if n < empty.len() {
                    empty[n] = seg;
                    n += 1;
                }
            });
            for &seg in &empty[..n] {
                // SAFETY: the pool gave the empty segment up.
                unsafe { self.release_segment(seg, Geo::<G>::SEGMENT_SIZE) };
            }
            if n < empty.len() {
                break;
            }
        }
        let mut cache = self.large.lock();
        let mut drained = [LargeEntry::EMPTY; crate::pool::LARGE_CACHE_SLOTS];
        let mut n = 0;
        cache.drain(|e| {
            drained[n] = e;
            n += 1;
        });
        drop(cache);
        for e in &drained[..n] {
            // SAFETY: the cache gave the region up.
            unsafe { self.release_segment(e.seg, e.size) };
        }
        self.purge(true);
    }

    /// The count changes per site that `heap`'s heap recorded (checking
    /// builds with `HAKMEM_TINY_C6_DELTA_DEBUG`; zeros otherwise), with the
    /// site names: the seed's delta summary, for an adapter to print when a
    /// thread exits.
    pub fn delta_summary(&self, heap: &LocalHeap) -> [(&'static str, u64); site::COUNT] {
        let mut out = [("", 0); site::COUNT];
        for (i, o) in out.iter_mut().enumerate() {
            o.0 = site::NAMES[i];
        }
        if heap.is_attached() {
            // SAFETY: `heap` holds its heap, so reading its owned state is ours.
            let d = unsafe { (*heap.id).owned.with_mut(|o| o.deltas) };
            for (o, n) in out.iter_mut().zip(d) {
                o.1 = n;
            }
        }
        out
    }

    /// Allocate through the shared heap (for a thread without a heap).
    pub fn alloc_shared(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.shared.lock();
        self.alloc(&mut heap, layout)
    }

    // ------------------------------------------------------------------
    // Large
    // ------------------------------------------------------------------

    /// Offset of the block in a Large region whose alignment the header
    /// already satisfies; only such regions are cached.
    const LARGE_PLAIN_OFFSET: usize = Geo::<G>::HEADER_SIZE;

    /// Allocate a Large block of `size` bytes at `align`.
    #[inline(never)]
    fn alloc_large(&self, size: usize, align: usize, zero: bool) -> *mut u8 {
        let ps = self.source.page_size();
        let seg_size = Geo::<G>::SEGMENT_SIZE;
        // The block follows the header, aligned; its header must be the one
        // `ptr & !SEGMENT_MASK` finds. When the aligned offset would leave the
        // first segment, the block goes exactly `offset` past a region aligned
        // to `offset`, and a free finds the header by probing (see
        // `find_huge_aligned`).
        let Some(mut offset) = class::round_up(Geo::<G>::HEADER_SIZE, align) else {
            return ptr::null_mut();
        };
        let region_align = if offset < seg_size {
            seg_size
        } else {
            offset = align.max(seg_size);
            offset
        };
        let Some(region) = offset.checked_add(size).and_then(|n| class::round_up(n, ps)) else {
            return ptr::null_mut();
        };
        if region > isize::MAX as usize {
            return ptr::null_mut();
        }
        let cacheable = offset == Self::LARGE_PLAIN_OFFSET;
        let cached = if cacheable { self.large.lock().take(region, self.source.now_ms()) } else { None };
        // SAFETY: a region taken from the cache is ours and unused.
        let cached = cached.and_then(|e| unsafe { self.fit_cached(e, region, region_align) });
        let (seg, zeroed, region) = match cached {
            Some(e) => {
                let seg = e.seg;
                let purged_zero = e.purged == Purged::Zeroed;
                let head = Geo::<G>::HEADER_SIZE;
                if purged_zero && !head.is_multiple_of(ps) {
                    // The purge covered whole OS pages only: clear the bytes
                    // between the block start and the first purged page.
                    let n = head.next_multiple_of(ps) - head;
                    // SAFETY: inside the cached region, past its header.
                    unsafe { seg.cast::<u8>().add(head).write_bytes(0, n.min(e.size - head)) };
                }
                (seg, purged_zero, e.size)
            }
            None => {
                let Some(r) = self.source.reserve(region, region_align) else {
                    return ptr::null_mut();
                };
                let seg = r.base.as_ptr().cast::<SegmentHeader>();
                // SAFETY: fresh region, aligned to a segment at least.
                // (No guard here: a protected page would split the region's
                // mapping, and a resize, which moves whole mappings, would fail.)
                unsafe { Geo::<G>::init_header(seg, seg_kind::LARGE, region, kind::LARGE) };
                (seg, r.zeroed, region)
            }
        };
        // SAFETY: the header is ours until the block is freed.
        unsafe {
            (*seg).region_size.set(region);
            (*seg).block_offset.set(offset);
            (*seg).usable.set(region - offset);
            (*seg).zeroed.set(zeroed);
            if offset < seg_size {
                (*Geo::<G>::desc_of(seg.cast::<u8>().add(offset)))
                    .info
                    .store(info(0, kind::LARGE, 0), Ordering::Relaxed);
            }
        }
        {
            let mut lc = self.large.lock();
            lc.live += 1;
            lc.live_bytes += region;
            lc.allocs += 1;
        }
        // SAFETY: `offset < region`.
        let p = unsafe { seg.cast::<u8>().add(offset) };
        if zero && !zeroed {
            // SAFETY: the block has at least `size` bytes.
            unsafe { p.write_bytes(0, size) };
        }
        p
    }

    /// Make the cached region `e` fit a request for a `region`-byte region:
    /// as it is when it is at most twice the size (no system call, and the
    /// next larger request still fits), shrunk in place when larger, grown
    /// (pages moved, not faulted in again) when smaller. A region that cannot
    /// grow is released and `None` returned.
    ///
    /// # Safety
    /// `e` came out of the Large cache: a live region of ours nothing uses.
    unsafe fn fit_cached(&self, mut e: LargeEntry, region: usize, align: usize) -> Option<LargeEntry> {
        if e.size >= region && e.size / 2 <= region {
            return Some(e);
        }
        let base = NonNull::new(e.seg.cast::<u8>()).expect("cached region");
        let grow = e.size < region;
        // SAFETY: the region is ours and idle; `region` is a multiple of the
        // page size; the header moves with the pages if the region moves.
        match unsafe { self.source.resize(base, e.size, region, align, grow) } {
            Some(b) => {
                e.seg = b.as_ptr().cast();
                // SAFETY: the (possibly moved) header is ours; its cookie
                // names its address.
                unsafe { (*e.seg).cookie = e.seg.addr() ^ crate::segment::COOKIE_KEY };
                if grow {
                    // The source says nothing of the bytes past the old end.
                    e.purged = Purged::No;
                }
                e.size = region;
                Some(e)
            }
            None if grow => {
                // SAFETY: nothing references the region.
                unsafe { self.release_segment(e.seg, e.size) };
                None
            }
            None => Some(e),
        }
    }

    /// Free a Large block found through a descriptor of kind Large.
    ///
    /// # Safety
    /// `ptr` lies in a live Large region of ours whose first segment holds it.
    unsafe fn free_large(&self, ptr: *mut u8) -> Result<(), Fault> {
        let seg = Geo::<G>::segment_of(ptr);
        // SAFETY: the region is live, its header readable.
        unsafe {
            if !Geo::<G>::is_live(seg, seg_kind::LARGE) || seg.cast::<u8>().add((*seg).block_offset.get()) != ptr {
                return Err(Fault::at(FaultKind::NotABlock, ptr));
            }
            self.release_large(seg);
        }
        Ok(())
    }

    /// # Safety
    /// `seg` is a live Large header whose block is being freed.
    unsafe fn release_large(&self, seg: *mut SegmentHeader) {
        // SAFETY: the header is ours.
        let (size, offset) = unsafe { ((*seg).region_size.get(), (*seg).block_offset.get()) };
        let mut evicted = [LargeEntry::EMPTY; crate::pool::LARGE_CACHE_SLOTS + 1];
        let mut n = 0;
        {
            let mut lc = self.large.lock();
            lc.live -= 1;
            lc.live_bytes -= size;
            lc.frees += 1;
            let e = LargeEntry { seg, size, since: self.source.now_ms(), purged: Purged::No };
            if offset == Self::LARGE_PLAIN_OFFSET {
                // Mark the block's descriptor so a second free of it is caught.
                // SAFETY: the region is ours; the descriptor is in its header.
                unsafe {
                    (*Geo::<G>::desc_of(seg.cast::<u8>().add(offset)))
                        .info
                        .store(info(0, kind::CACHED, 0), Ordering::Relaxed)
                };
                lc.put(e, self.cfg().large_cache_bytes, |x| {
                    evicted[n] = x;
                    n += 1;
                });
                self.purge_large(&mut lc, e.since, false, false);
            } else {
                evicted[0] = e;
                n = 1;
            }
        }
        if loom_bug!("loom-bug-late-large-read") {
            // Injected bug: the header is read after the region went back to
            // the cache, where another thread may already have taken it.
            // SAFETY: none; this is the bug the Large cache model must catch.
            core::hint::black_box(unsafe { (*seg).usable.get() });
        }
        for e in &evicted[..n] {
            // SAFETY: nothing references an evicted region.
            unsafe { self.release_segment(e.seg, e.size) };
        }
    }

    // ------------------------------------------------------------------
    // Realloc, zeroed, usable size
    // ------------------------------------------------------------------

    /// Allocate `layout` zeroed, skipping the clearing for memory known to be
    /// fresh from the source.
    pub fn alloc_zeroed(&self, heap: &mut LocalHeap, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        if Self::class_for(size, layout.align()).is_none() {
            return self.alloc_large(size, layout.align(), true);
        }
        let p = self.alloc(heap, layout);
        if !p.is_null() {
            // SAFETY: a fresh block of at least `layout.size()` bytes.
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    /// Bytes usable at `ptr` (at least what was asked for).
    ///
    /// # Safety
    /// `ptr` is a live block of this allocator.
    pub unsafe fn usable_size(&self, ptr: *mut u8) -> Result<usize, Fault> {
        let seg = Geo::<G>::segment_of(ptr);
        if !self.source.owns(seg.addr()) {
            return match self.find_huge_aligned(ptr) {
                // SAFETY: a live Large header, found by the probe.
                Some(seg) => Ok(unsafe { (*seg).usable.get() }),
                None => Err(Fault::at(FaultKind::NotOurs, ptr)),
            };
        }
        // SAFETY: a live segment of ours.
        if check::EXACT_FREE && unsafe { self.already_free(ptr) } {
            return Err(Fault::at(FaultKind::DoubleFree, ptr));
        }
        // SAFETY: a live segment of ours.
        let inf = unsafe { (*Geo::<G>::desc_of(ptr)).info.load(Ordering::Relaxed) };
        match info_kind(inf) {
            kind::SMALL => {
                let head = Self::head(Geo::<G>::desc_of(ptr), inf);
                // SAFETY: as in `free_remote`: area and capacity are stable
                // while any block of the span is live.
                if unsafe { Self::on_block(head, info_class(inf), ptr, (*head).capacity.get()) } {
                    Ok(class::size_of_class(info_class(inf)))
                } else {
                    Err(Fault::at(FaultKind::NotABlock, ptr))
                }
            }
            // SAFETY: a live Large header.
            kind::LARGE => unsafe {
                if Geo::<G>::is_live(seg, seg_kind::LARGE) && seg.cast::<u8>().add((*seg).block_offset.get()) == ptr {
                    Ok((*seg).usable.get())
                } else {
                    Err(Fault::at(FaultKind::NotABlock, ptr))
                }
            },
            kind::FREE | kind::CACHED => Err(Fault::at(FaultKind::DoubleFree, ptr)),
            _ => Err(Fault::at(FaultKind::NotABlock, ptr)),
        }
    }

    /// Resize the block at `ptr` to `new_size` bytes at `align` (the
    /// alignment it was allocated with), keeping the first
    /// `min(old_size, new_size)` bytes. In place when the class does not
    /// change, or for a Large block when the source can resize its region.
    /// `Ok(null)` means out of memory, with the old block untouched.
    ///
    /// # Safety
    /// As for [`free`](Self::free); `old_size` is at most the block's usable size.
    pub unsafe fn realloc(
        &self,
        heap: &mut LocalHeap,
        ptr: *mut u8,
        old_size: usize,
        align: usize,
        new_size: usize,
    ) -> Result<*mut u8, Fault> {
        let new_size = new_size.max(1);
        // SAFETY: forwarded from the caller.
        let usable = unsafe { self.usable_size(ptr)? };
        let new_class = Self::class_for(new_size, align);
        let seg = Geo::<G>::segment_of(ptr);
        // SAFETY: `usable_size` vouched for the block.
        let is_large = !self.source.owns(seg.addr())
            || unsafe { info_kind((*Geo::<G>::desc_of(ptr)).info.load(Ordering::Relaxed)) } == kind::LARGE;
        if !is_large {
            // SAFETY: a live small block.
            let c = unsafe { (*Geo::<G>::desc_of(ptr)).class() };
            if new_class == Some(c) {
                return Ok(ptr);
            }
        } else if new_class.is_none() {
            // SAFETY: a live Large block of ours.
            if let Some(p) = unsafe { self.realloc_large_in_place(ptr, usable, new_size) } {
                return Ok(p);
            }
        }
        let layout = match Layout::from_size_align(new_size, align) {
            Ok(l) => l,
            Err(_) => return Ok(ptr::null_mut()),
        };
        let q = self.alloc(heap, layout);
        if q.is_null() {
            return Ok(q);
        }
        // SAFETY: both blocks are live and distinct; `old_size ≤ usable`.
        unsafe {
            ptr::copy_nonoverlapping(ptr, q, old_size.min(usable).min(new_size));
            self.free(heap, ptr)?;
        }
        Ok(q)
    }

    /// Resize a Large block without copying, if it fits or the source can
    /// grow or move its region. Returns the (possibly moved) block.
    ///
    /// # Safety
    /// `ptr` is a live Large block with `usable` bytes.
    unsafe fn realloc_large_in_place(&self, ptr: *mut u8, usable: usize, new_size: usize) -> Option<*mut u8> {
        let seg = Geo::<G>::segment_of(ptr);
        if seg.cast::<u8>() == ptr {
            // Aligned to a segment or more: only a fitting size stays.
            return (new_size <= usable).then_some(ptr);
        }
        if new_size <= usable && new_size >= usable / 2 {
            return Some(ptr);
        }
        let ps = self.source.page_size();
        // SAFETY: the header is ours while the block is live.
        unsafe {
            let offset = (*seg).block_offset.get();
            let old_region = (*seg).region_size.get();
            let new_region = class::round_up(offset.checked_add(new_size)?, ps)?;
            if new_region > isize::MAX as usize {
                return None;
            }
            let base = NonNull::new_unchecked(seg.cast::<u8>());
            // Moving keeps the block's offset from a segment-aligned base, so
            // its alignment survives.
            let nb = self.source.resize(base, old_region, new_region, Geo::<G>::SEGMENT_SIZE, true)?;
            let nseg = nb.as_ptr().cast::<SegmentHeader>();
            (*nseg).cookie = nseg.addr() ^ crate::segment::COOKIE_KEY;
            (*nseg).region_size.set(new_region);
            (*nseg).usable.set(new_region - offset);
            let mut lc = self.large.lock();
            lc.live_bytes = lc.live_bytes - old_region + new_region;
            Some(nb.as_ptr().add(offset))
        }
    }

    // ------------------------------------------------------------------
    // Statistics, purging, fork
    // ------------------------------------------------------------------

    /// Segments a pool event purges at most (a batch: a few system calls).
    const PURGE_BATCH: usize = 4;

    /// Purge, under the pool lock, the dirty free pages that have been free
    /// for the configured delay (all of them with `force`).
    fn purge_pool(&self, pool: &mut Pool, now: u64, force: bool, batch: usize) {
        let delay = self.cfg().purge_delay_ms as u64;
        let live = pool.pages_in_use * Geo::<G>::PAGE_SIZE;
        let limit = self.cfg().purge_dirty_min.max(live / 4) / Geo::<G>::PAGE_SIZE;
        pool.purge_expired::<G>(now, delay, force, limit, batch, |seg, first, pages| {
            let (area, len) = Geo::<G>::span_area(seg, first, pages);
            // SAFETY: free pages of a live segment of ours, which the pool
            // lock we hold keeps free while they are purged.
            unsafe { self.purge_range(area, len) != Purged::No }
        });
    }

    /// Purge the OS pages wholly inside `[area, area + len)`.
    ///
    /// # Safety
    /// The range is inside a live region of ours and its contents are not needed.
    unsafe fn purge_range(&self, area: *mut u8, len: usize) -> Purged {
        let ps = self.source.page_size();
        let start = area.map_addr(|a| a.next_multiple_of(ps));
        let end = (area.addr() + len) & !(ps - 1);
        if end <= start.addr() {
            return Purged::No;
        }
        // SAFETY: forwarded: the range is inside a live region and unused.
        unsafe { self.source.purge(NonNull::new_unchecked(start), end - start.addr()) }
    }

    /// Purge free memory that has waited the configured delay (everything,
    /// with `force`): dirty free pages in the pool and the bodies of cached
    /// Large regions. Pool events and thread exit call this on their own;
    /// an adapter may call it from a timer.
    pub fn purge(&self, force: bool) {
        let now = self.source.now_ms();
        {
            let mut pool = self.pool.lock();
            self.purge_pool(&mut pool, now, force, usize::MAX);
        }
        self.purge_large(&mut self.large.lock(), now, force, false);
    }

    /// Purge, under the Large cache lock, the bodies of regions cached for
    /// the configured delay (all with `force`). Headers stay resident.
    fn purge_large(&self, lc: &mut LargeCache, now: u64, force: bool, by_age: bool) {
        let delay = self.cfg().purge_delay_ms as u64;
        // Cached Large regions wait out the delay whatever their size (they
        // are bounded by `large_cache_bytes`): a big region reused within the
        // delay must not fault its pages in again.
        let mut purged = 0u64;
        lc.purge_expired(now, delay, force, by_age, usize::MAX, |e| {
            let body = Geo::<G>::HEADER_SIZE;
            // SAFETY: a cached region is ours and unused; its header stays.
            let r = unsafe { self.purge_range(e.seg.cast::<u8>().wrapping_add(body), e.size - body) };
            if r != Purged::No {
                purged += (e.size - body) as u64;
            }
            r
        });
        lc.purged_bytes += purged;
        // Relaxed: a hint for pool events; the lock orders the cache itself.
        self.large_resident.store(u32::from(lc.resident_bytes() != 0), Ordering::Relaxed);
    }

    /// A pool event's look at the Large cache: purge it if it has been idle
    /// for the delay (the program may never free a Large block again).
    fn purge_large_if_idle(&self, now: u64) {
        if self.large_resident.load(Ordering::Relaxed) != 0 {
            self.purge_large(&mut self.large.lock(), now, false, false);
        }
    }

    /// The allocator's own accounting, read under its locks, with every
    /// heap's counters merged in.
    pub fn stats(&self) -> Stats {
        let mut s = Stats {
            tiny_sample_shift: self.cfg().tiny_sample_shift as u32,
            mid_sample_shift: self.cfg().mid_sample_shift as u32,
            ..Stats::default()
        };
        {
            let p = self.pool.lock();
            (s.segments, s.empty_segments, s.pages_in_use) = (p.segments, p.empty_segments, p.pages_in_use);
            s.bytes_purged = p.purged_bytes;
            s.bytes_decommitted = p.clean_pages * Geo::<G>::PAGE_SIZE;
            s.bytes_dirty = p.dirty_pages * Geo::<G>::PAGE_SIZE;
        }
        {
            let h = self.heaps.lock();
            (s.heaps, s.abandoned_heaps, s.meta_pages, s.meta_regions) =
                (h.carved, h.abandoned_count, h.meta_pages, h.meta_regions);
            s.pages_in_use -= s.meta_pages;
            let mut heap = h.all;
            while !heap.is_null() {
                // SAFETY: heaps live forever; `all_next` is guarded by the
                // heap pool lock we hold; counters are atomics.
                unsafe {
                    (*heap).counters.merge_into(&mut s);
                    heap = (*heap).all_next.get();
                }
            }
        }
        {
            let l = self.large.lock();
            (s.large_live, s.large_live_bytes, s.large_cached_bytes) = (l.live, l.live_bytes, l.bytes);
            (s.large_allocs, s.large_frees) = (l.allocs, l.frees);
            s.bytes_purged += l.purged_bytes;
            s.bytes_decommitted += l.bytes - l.resident_bytes();
        }
        s.bytes_reserved = s.segments * Geo::<G>::SEGMENT_SIZE + s.large_live_bytes + s.large_cached_bytes;
        s
    }

    /// Take every lock of the cold side, so a `fork` sees consistent state.
    /// Pair with [`postfork`](Self::postfork) in both processes.
    #[cfg(not(hakmem_loom))]
    pub fn prefork(&self) {
        core::mem::forget(self.shared.lock());
        core::mem::forget(self.heaps.lock());
        core::mem::forget(self.pool.lock());
        core::mem::forget(self.large.lock());
    }

    /// Release the locks [`prefork`](Self::prefork) took.
    ///
    /// # Safety
    /// Called once after each `prefork`, in the parent or the child.
    #[cfg(not(hakmem_loom))]
    pub unsafe fn postfork(&self) {
        // SAFETY: `prefork` leaked a guard of each.
        unsafe {
            self.large.force_unlock();
            self.pool.force_unlock();
            self.heaps.force_unlock();
            self.shared.force_unlock();
        }
    }
}

// Compile-time facts the fast paths rely on.
impl<G: Geometry> Geo<G> {
    /// Whether every Tiny class is served by one-page spans (then a Tiny
    /// descriptor is its own span head).
    pub const TINY_SINGLE_PAGE: bool = {
        let mut c = 1;
        let mut ok = true;
        while c <= NUM_TINY {
            ok &= Self::SPAN[c] <= 1;
            c += 1;
        }
        ok
    };
}

const _: () = assert!(NUM_CLASSES <= 64);

const fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Whether a free through the hot front checks the block boundary (and so
/// every free does): hardened and checking builds.
const HARDENED_FREE: bool = cfg!(any(feature = "secure", feature = "check-invariants"));

/// Head descriptor of the span holding block `p` (tests).
#[cfg(test)]
pub(crate) fn head_desc<G: Geometry>(p: *mut u8) -> *mut PageDesc {
    let d = Geo::<G>::desc_of(p);
    // SAFETY: the caller passes a live block, so its descriptor is readable.
    let inf = unsafe { (*d).info.load(Ordering::Relaxed) };
    d.wrapping_sub(info_head_off(inf))
}
