//! hakmem for bare metal: a `#[global_allocator]` for kernels and firmware
//! with no operating system — memory from static regions, a local heap per
//! CPU, nothing from `std` or libc.
//!
//! ```ignore
//! use hakmem_baremetal::BareMetal;
//!
//! #[global_allocator]
//! static ALLOC: BareMetal = BareMetal::new(hakmem_baremetal::cpu0);
//!
//! #[repr(align(8192))] // a segment of the default geometry: see "Waste" below
//! struct Heap([u8; 64 * 1024]);
//! static mut HEAP: Heap = Heap([0; 64 * 1024]);
//!
//! fn main() {
//!     // Before this, every allocation returns null.
//!     ALLOC.init(unsafe { &mut (*core::ptr::addr_of_mut!(HEAP)).0 }).unwrap();
//! }
//! ```
//!
//! # Parts
//!
//! - [`StaticRegion`] — the [`PageSource`](hakmem_core::PageSource): memory
//!   handed over once (a `&'static mut [u8]`, or a start and length from
//!   linker symbols, [`BareMetal::init_raw`]), more areas at any time.
//! - [`BareMetal<CPUS, G>`](BareMetal) — the `GlobalAlloc`: a core
//!   [`Allocator`] over a `StaticRegion`, and `CPUS` local heaps, one per slot,
//!   chosen by a CPU-id function you provide.
//! - [`Tiny`] — the default geometry (segment and page sizes), for heaps of
//!   tens to hundreds of KiB; [`Compact`] for a MiB and more, [`Wide`] for
//!   16 MiB and more. The core's
//!   `Small` and `Server` presets, or a `Geometry` of your own, also work.
//!
//! # Per-CPU heaps and their protection
//!
//! Each slot holds a [`LocalHeap`] and a flag taken with one atomic swap
//! (a try-lock). A call picks slot `cpu_id()` (slot 0 without calling it when
//! `CPUS == 1`) and, if the flag was free, works on that heap: the
//! allocation fast path is a pop from the heap's bins with no other atomic
//! operation. If the flag is taken — an interrupt handler that interrupted an
//! allocator call on the same CPU, or a thread that read its CPU id and then
//! migrated — the call tries the next slots, up to `Config::trylock_probes`
//! slots in all (`HAKMEM_TRYLOCK_PROBES`; 1, the default, tries its own
//! only; 0 sends every call to the fallback path), and if none is free it
//! does not touch any heap: allocations go through a
//! fallback heap shared by all such calls (behind a lock, like the core's
//! shared heap, but owned by the adapter so that it can be flushed when memory
//! runs out), and frees through [`Allocator::free_detached`] (a lock-free push
//! onto the owning heap's remote-free list, which the owner drains later). A
//! `cpu_id()` at or above `CPUS` has no slot of its own: it tries
//! `trylock_probes - 1` others, then the fallback path. Frees of blocks
//! another CPU allocated go through the core's remote-free path.
//! [`BareMetal::fallback_calls`] counts the calls that took the fallback path.
//!
//! # Configuration
//!
//! The adapter takes the core's [`Config`] — the same type the Linux adapter
//! fills from `HAKMEM_*` variables — as a constant: `BareMetal::new` uses
//! [`CONFIG`], and `static A: BareMetal = BareMetal::with_config(cpu0,
//! MY_CONFIG);` any other, validated at compile time (an out-of-range value
//! fails the build). The probe count is read once, into the allocator, so the
//! default adds nothing to the fast path: a taken own slot returns at once,
//! and only a busy one reaches the probing loop.
//!
//! When memory runs out, the allocating call flushes the bins of its own heap
//! and of every heap it can take without waiting, releases what became empty,
//! and tries once more before returning null — if a block was freed or a bin
//! refilled since the last such reclaim (otherwise it cannot help, and the
//! call fails at once). Frees are counted per slot by a plain store, off any
//! shared line; refills by an atomic add on the slow path.
//!
//! # Interrupt safety
//!
//! The core's cold side (page pool, heap pool, Large blocks), the fallback
//! heap and the region's carving use spin locks. An interrupt handler that
//! spins on a lock held by the code it interrupted, on the same CPU, never
//! returns. So:
//!
//! - **With an [`InterruptGuard`]** ([`BareMetal::with_interrupt_guard`]: two
//!   functions that mask interrupts on the current CPU and restore them), every
//!   allocator entry point — `alloc`, `alloc_zeroed`, `dealloc`, `realloc`,
//!   [`collect`](BareMetal::collect), [`flush_cpu`](BareMetal::flush_cpu) — may
//!   be called from interrupt handlers. Every core call that can take a lock
//!   (the allocation slow path, every free, realloc, the fallback path, collect)
//!   runs with interrupts masked; only the allocation fast path (a pop from
//!   the slot's bins, under the slot flag) runs unmasked. An interrupt can
//!   therefore only interrupt allocator code that holds no lock; if it holds
//!   the slot flag, the handler takes the fallback path, whose locks are free
//!   on this CPU. Interrupts stay masked for one slow path at a time:
//!   refilling a bin, carving a segment header, a Large allocation, or — the
//!   longest — a reclaim when memory runs out, which flushes every idle heap.
//! - **Without a guard** (the default), no allocator call may be made from an
//!   interrupt handler (or an NMI, or a fault handler) — not even a free,
//!   whose slow path can take the pool lock. Programs that allocate only from
//!   thread mode, or that run the whole program with interrupts that never
//!   allocate, need no guard.
//! - NMI and HardFault handlers cannot be masked; they must never allocate.
//! - The same holds for a preemptive scheduler: a task preempted while it
//!   holds one of those spin locks stalls every task that then needs it (for
//!   good, if the spinning task has the higher priority on the same CPU). A
//!   guard that masks the scheduler's interrupt prevents that.
//!
//! # Targets
//!
//! The core's remote frees and the slot flags need atomic swap and
//! compare-and-swap. Targets without them (ARMv6-M such as Cortex-M0/M0+,
//! RISC-V without the A extension) are out of scope: Rust offers no such
//! operations there, so the crate does not build for them. 64-bit atomics are
//! not needed (Cortex-M3/M4/M7/M33 are fine).
//!
//! # Waste
//!
//! A region is used in whole segments aligned to the segment size: bytes
//! before the first aligned segment and after the last whole one stay unused
//! (up to one segment each), so align the heap to the segment size. Inside,
//! each segment spends its first bytes on a header (a 64-byte descriptor per
//! page plus the segment header), the first allocation carves a metadata span
//! for heap identities, and each size class in use holds at least one span.
//! See `docs/PORTING.md` for the figures on a 64 KiB and a 1 MiB region.

#![no_std]
#![warn(missing_docs)]

mod region;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

pub use hakmem_core::{Allocator, Config, Fault, FaultKind, Geo, Geometry, LocalHeap, Small, Stats};
pub use region::{AddError, DEFAULT_MAP_WORDS, MAX_AREAS, StaticRegion};

/// The default geometry, for heaps of tens to hundreds of KiB: 8 KiB
/// segments of 8 pages of 1 KiB. Small segments keep every span small (at
/// most 4 KiB), so a 64 KiB heap does not run out of contiguous pages after a
/// few size classes; the price is a header of one page per segment (12.5%)
/// and Large blocks (above 4 KiB) rounded up to whole 8 KiB segments.
pub enum Tiny {}
impl Geometry for Tiny {
    const SEGMENT_SHIFT: u32 = 13;
    const PAGE_SHIFT: u32 = 10;
}

/// A geometry for heaps of a MiB or more: 64 KiB segments of 16 pages of
/// 4 KiB. The header takes half a page (3%), blocks up to 32 KiB are served
/// from spans, and it is the fastest and leanest of the presets measured on
/// 1 MiB and 16 MiB regions (see `docs/BENCHMARKS.md`); on a 64 KiB heap it
/// leaves room for only a few size classes.
pub enum Compact {}
impl Geometry for Compact {
    const SEGMENT_SHIFT: u32 = 16;
    const PAGE_SHIFT: u32 = 12;
}

/// A geometry for heaps of 16 MiB and more: 256 KiB segments of 64 pages of
/// 4 KiB. Four times fewer segments than [`Compact`] for the pool to search,
/// spans of up to 128 KiB (blocks up to 128 KiB are served from spans rather
/// than as whole-segment Large blocks), and a header of two pages (3%). On a
/// 16 MiB region it keeps 83-86% of the region live up to 10 000-byte blocks
/// where `Compact` falls to 49% (`docs/BENCHMARKS.md`); on a 1 MiB region its
/// few segments fill up with spans, so `Compact` is better there.
pub enum Wide {}
impl Geometry for Wide {
    const SEGMENT_SHIFT: u32 = 18;
    const PAGE_SHIFT: u32 = 12;
}

/// The configuration [`BareMetal::new`] uses: the core's defaults with the
/// caches sized for a heap of kilobytes rather than gigabytes. A fixed region
/// has no memory to spare for caches: freed Large regions go straight back to
/// the region, empty segments too, and each bin keeps at most a few KiB.
pub const CONFIG: Config = Config {
    tiny_mag_cap: 32,
    mid_ring: 4,
    mid_lifo_max: 8,
    mid_bin_bytes: 8 * 1024,
    heap_page_cache: 1,
    segment_reserve: 0,
    large_cache_bytes: 0,
    purge_delay_ms: 0,
    ..Config::DEFAULT
};

/// Two functions that mask interrupts on the current CPU and restore the
/// previous state. On Cortex-M: read PRIMASK and `cpsid i`, then restore
/// PRIMASK (`cortex_m::register::primask` and `cortex_m::interrupt`).
#[derive(Clone, Copy, Debug)]
pub struct InterruptGuard {
    /// Mask interrupts; returns a token for `restore` (the previous state).
    pub disable: fn() -> usize,
    /// Restore the state `disable` returned.
    pub restore: fn(usize),
}

/// The CPU-id function of a single-CPU system: always 0.
pub fn cpu0() -> usize {
    0
}

/// The default fault handler: panic with the fault's description. On a
/// target built with `panic = "abort"` that aborts; elsewhere, unwinding out
/// of a global allocator aborts the process.
pub fn panic_on_fault(f: Fault) -> ! {
    panic!("hakmem: {f}")
}

/// One CPU's local heap and its try-lock.
#[repr(align(64))]
struct Slot {
    busy: AtomicBool,
    /// Frees made through this slot (wrapping); written only by the holder.
    frees: AtomicU32,
    heap: UnsafeCell<LocalHeap>,
}

impl Slot {
    const fn new() -> Slot {
        Slot { busy: AtomicBool::new(false), frees: AtomicU32::new(0), heap: UnsafeCell::new(LocalHeap::new()) }
    }

    /// Take the slot if it is free.
    #[inline(always)]
    fn try_lock(&self) -> bool {
        // Acquire: pairs with `unlock`, so this holder sees every write the
        // previous holder (maybe another CPU) made to the heap.
        !self.busy.load(Ordering::Relaxed) && !self.busy.swap(true, Ordering::Acquire)
    }

    /// Take the slot, waiting for its holder (another CPU, or with interrupts
    /// masked on this one) to let it go.
    fn lock(&self) {
        while !self.try_lock() {
            core::hint::spin_loop();
        }
    }

    /// Count a free (holder only: a plain load and store, no read-modify-write).
    #[inline(always)]
    fn count_free(&self) {
        let n = self.frees.load(Ordering::Relaxed);
        self.frees.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    #[inline(always)]
    fn unlock(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// The bare-metal global allocator: a core [`Allocator`] over a
/// [`StaticRegion`] with `CPUS` per-CPU local heaps, for geometry `G`, over
/// at most `32 × MAP_WORDS` segments of memory. See the crate docs for the CPU
/// slots and interrupt safety.
pub struct BareMetal<const CPUS: usize = 1, G: Geometry = Tiny, const MAP_WORDS: usize = DEFAULT_MAP_WORDS> {
    core: Allocator<StaticRegion<G, MAP_WORDS>, G>,
    cpu_id: fn() -> usize,
    guard: Option<InterruptGuard>,
    on_fault: fn(Fault) -> !,
    slots: [Slot; CPUS],
    /// `config.trylock_probes`, at most `CPUS`: slots a call tries, its own
    /// first, before it takes the fallback path. Read once, at construction.
    probes: usize,
    /// `CPUS` if `probes > 0`, else 0: the fast path's bound on its own slot
    /// index, so that `probes == 0` sends every call to the fallback path
    /// without a test of its own.
    own_limit: usize,
    /// Calls that took the fallback path (wrapping; counted on that cold path).
    fallbacks: AtomicU32,
    /// The heap of calls whose CPU slot is busy or out of range. Unlike the
    /// core's shared heap, the adapter can flush it when memory runs out.
    fallback: Slot,
    /// Slow-path allocations that succeeded (wrapping): each may have moved
    /// free blocks into a heap's bins, where a reclaim could find them.
    refills: AtomicU32,
    /// The total of the slots' `frees` and `refills` at the last reclaim: a
    /// reclaim can only help if a block was freed or a bin refilled since.
    reclaim_mark: AtomicU32,
}

// SAFETY: every slot's heap is reached only by the holder of its flag (an
// Acquire/Release try-lock), and the core allocator and the region are built
// for use from several CPUs at once.
unsafe impl<const CPUS: usize, G: Geometry, const MAP_WORDS: usize> Sync for BareMetal<CPUS, G, MAP_WORDS> {}

impl<const CPUS: usize, G: Geometry, const MAP_WORDS: usize> BareMetal<CPUS, G, MAP_WORDS> {
    /// An allocator with no memory yet (every allocation returns null until
    /// [`init`](Self::init)), [`CONFIG`], no interrupt guard, and `cpu_id`
    /// choosing the slot of each call (not called when `CPUS == 1`).
    pub const fn new(cpu_id: fn() -> usize) -> Self {
        Self::with_config(cpu_id, CONFIG)
    }

    /// As [`new`](Self::new), with a configuration of your own. Panics (at
    /// compile time in a `static`) if `config` is out of range.
    pub const fn with_config(cpu_id: fn() -> usize, config: Config) -> Self {
        BareMetal {
            core: Allocator::new(StaticRegion::new(), config),
            cpu_id,
            guard: None,
            on_fault: panic_on_fault,
            slots: [const { Slot::new() }; CPUS],
            probes: if (config.trylock_probes as usize) < CPUS { config.trylock_probes as usize } else { CPUS },
            own_limit: if config.trylock_probes == 0 { 0 } else { CPUS },
            fallbacks: AtomicU32::new(0),
            fallback: Slot::new(),
            refills: AtomicU32::new(0),
            reclaim_mark: AtomicU32::new(u32::MAX),
        }
    }

    /// Mask interrupts around every allocator call that may take a lock, which
    /// makes the allocator usable from interrupt handlers (crate docs).
    pub const fn with_interrupt_guard(mut self, guard: InterruptGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Call `f` on a bad pointer (a free of memory the allocator never
    /// returned, a double free it can see) instead of [`panic_on_fault`].
    pub const fn with_fault_handler(mut self, f: fn(Fault) -> !) -> Self {
        self.on_fault = f;
        self
    }

    /// Give the allocator its memory. Returns the bytes it can use (the whole
    /// segments inside `region`). Calling it again adds another region, which
    /// need not be contiguous with the others.
    pub fn init(&self, region: &'static mut [u8]) -> Result<usize, AddError> {
        self.core.source().add(region)
    }

    /// [`init`](Self::init) for memory named by address, e.g. from linker
    /// symbols (`_sheap`, `_eheap`).
    ///
    /// # Safety
    /// `[start, start + len)` is readable and writable memory that nothing
    /// else uses, now or ever after.
    pub unsafe fn init_raw(&self, start: *mut u8, len: usize) -> Result<usize, AddError> {
        // SAFETY: forwarded.
        unsafe { self.core.source().add_raw(start, len) }
    }

    /// The core allocator (statistics, direct use with a `LocalHeap` of
    /// your own).
    pub fn allocator(&self) -> &Allocator<StaticRegion<G, MAP_WORDS>, G> {
        &self.core
    }

    /// The allocator's accounting.
    pub fn stats(&self) -> Stats {
        self.masked(|| self.core.stats())
    }

    /// Return what can be returned to the region: this CPU's pending remote
    /// frees and cached spans, other heaps' remote frees, empty segments.
    pub fn collect(&self) {
        match self.slot() {
            Some(s) => {
                // SAFETY: we hold the slot.
                self.masked(|| self.core.collect(Some(unsafe { &mut *s.heap.get() })));
                s.unlock();
            }
            None => self.masked(|| self.core.collect(None)),
        }
    }

    /// Give this CPU's cached blocks back to their spans and detach its heap
    /// (its spans stay valid; the next allocation attaches a heap again). Use
    /// it before taking a CPU offline. Returns false if the slot was busy.
    pub fn flush_cpu(&self) -> bool {
        let i = if CPUS == 1 { 0 } else { (self.cpu_id)() };
        let Some(s) = self.slots.get(i).filter(|s| s.try_lock()) else { return false };
        // SAFETY: we hold the slot.
        self.masked(|| self.core.detach(unsafe { &mut *s.heap.get() }));
        s.unlock();
        true
    }

    /// Run `f` with interrupts masked, if a guard is set.
    #[inline(always)]
    fn masked<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.guard {
            Some(g) => {
                let t = (g.disable)();
                let r = f();
                (g.restore)(t);
                r
            }
            None => f(),
        }
    }

    /// Calls that found every slot they tried busy (or their CPU id out of
    /// range) and took the fallback path, since `new` (wrapping at 2^32).
    pub fn fallback_calls(&self) -> u32 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// This CPU's slot, taken, or `None` if it is busy or out of range and no
    /// other slot among the `trylock_probes` tried was free.
    #[inline(always)]
    fn slot(&self) -> Option<&Slot> {
        let i = if CPUS == 1 { 0 } else { (self.cpu_id)() };
        if i < self.own_limit {
            // SAFETY: `own_limit ≤ CPUS`.
            let s = unsafe { self.slots.get_unchecked(i) };
            if s.try_lock() {
                return Some(s);
            }
        }
        self.probe(i)
    }

    /// The own slot was busy (or out of range, or `trylock_probes` is 0): try
    /// the next `probes - 1` slots once each, then give up (the caller takes
    /// the fallback path, which this counts).
    #[cold]
    #[inline(never)]
    fn probe(&self, own: usize) -> Option<&Slot> {
        let others = self.probes.saturating_sub(1);
        if others > 0 {
            // `probes ≤ CPUS`, so CPUS ≥ 2 here; an id out of range (even
            // usize::MAX) starts at its residue, without overflow.
            let start = if own < CPUS { own + 1 } else { own % CPUS };
            for k in 0..others {
                let s = &self.slots[(start + k) % CPUS];
                if s.try_lock() {
                    return Some(s);
                }
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The allocation slow path on a held heap, retrying once after giving
    /// back what the heaps and the pool hold when memory runs out. Runs masked.
    fn alloc_slow_masked(&self, heap: &mut LocalHeap, layout: Layout) -> *mut u8 {
        let p = self.core.alloc_slow(heap, layout);
        if !p.is_null() {
            self.refills.fetch_add(1, Ordering::Relaxed);
            return p;
        }
        if !self.should_reclaim() {
            return p;
        }
        self.reclaim(heap);
        self.core.alloc_slow(heap, layout)
    }

    /// Whether a reclaim could help: a block was freed, or a bin refilled,
    /// since the last one. Records the count, so the caller then reclaims.
    fn should_reclaim(&self) -> bool {
        let total = self
            .slots
            .iter()
            .chain(core::iter::once(&self.fallback))
            .fold(self.refills.load(Ordering::Relaxed), |t, s| t.wrapping_add(s.frees.load(Ordering::Relaxed)));
        // Relaxed: a heuristic; a stale count costs one reclaim more or less.
        self.reclaim_mark.swap(total, Ordering::Relaxed) != total
    }

    #[cold]
    #[inline(never)]
    fn alloc_cold(&self, heap: &mut LocalHeap, layout: Layout) -> *mut u8 {
        self.masked(|| self.alloc_slow_masked(heap, layout))
    }

    /// Out of memory: flush the bins of the caller's heap and of every other
    /// heap that is not in use (detaching them; the next allocation attaches
    /// again), then release whatever became empty, so that blocks cached for
    /// one size class become pages for another.
    #[cold]
    fn reclaim(&self, held: &mut LocalHeap) {
        self.core.detach(held);
        for s in self.slots.iter().chain(core::iter::once(&self.fallback)) {
            if s.try_lock() {
                // SAFETY: we just took the slot.
                self.core.detach(unsafe { &mut *s.heap.get() });
                s.unlock();
            }
        }
        self.core.collect(None);
    }

    /// Run `f` on the fallback heap, masked.
    #[cold]
    #[inline(never)]
    fn with_fallback<R>(&self, f: impl FnOnce(&mut LocalHeap) -> R) -> R {
        self.masked(|| {
            self.fallback.lock();
            // SAFETY: we hold the fallback slot.
            let r = f(unsafe { &mut *self.fallback.heap.get() });
            self.fallback.unlock();
            r
        })
    }

    #[cold]
    #[inline(never)]
    fn alloc_fallback(&self, layout: Layout) -> *mut u8 {
        self.with_fallback(|h| {
            let p = self.core.alloc_fast(h, layout);
            if p.is_null() { self.alloc_slow_masked(h, layout) } else { p }
        })
    }

    #[cold]
    #[inline(never)]
    fn fault(&self, f: Fault) -> ! {
        (self.on_fault)(f)
    }
}

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes
// aligned to `layout.align()` that overlaps no other live block (the core's
// guarantee); `dealloc` and `realloc` hand the core exactly what it returned.
// This adapter only routes each call to a heap that one caller holds at a time.
unsafe impl<const CPUS: usize, G: Geometry, const MAP_WORDS: usize> GlobalAlloc for BareMetal<CPUS, G, MAP_WORDS> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(s) = self.slot() else {
            return self.alloc_fallback(layout);
        };
        // SAFETY: we hold the slot, so its heap is ours until `unlock`.
        let heap = unsafe { &mut *s.heap.get() };
        let mut p = self.core.alloc_fast(heap, layout);
        if p.is_null() {
            p = self.alloc_cold(heap, layout);
        }
        s.unlock();
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        let r = match self.slot() {
            Some(s) => {
                // SAFETY: we hold the slot; the caller passes a live block.
                let r = self.masked(|| unsafe { self.core.free(&mut *s.heap.get(), ptr) });
                s.count_free();
                s.unlock();
                r
            }
            None => self.masked(|| {
                // SAFETY: the caller passes a live block.
                let r = unsafe { self.core.free_detached(ptr) };
                // The fallback slot's count is only ever added to, atomically.
                self.fallback.frees.fetch_add(1, Ordering::Relaxed);
                r
            }),
        };
        if let Err(f) = r {
            self.fault(f)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Region memory is never known to be zero, so clear it always.
        // SAFETY: forwarded.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: a fresh block of at least `layout.size()` bytes.
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, align) = (layout.size(), layout.align());
        let r = match self.slot() {
            Some(s) => {
                let r = self.masked(|| {
                    // SAFETY: we hold the slot; the caller passes a live block
                    // of `layout`.
                    let heap = unsafe { &mut *s.heap.get() };
                    // SAFETY: as above.
                    match unsafe { self.core.realloc(heap, ptr, old, align, new_size) } {
                        Ok(p) if p.is_null() && self.should_reclaim() => {
                            self.reclaim(heap);
                            // SAFETY: as above; the block is untouched.
                            unsafe { self.core.realloc(heap, ptr, old, align, new_size) }
                        }
                        r => r,
                    }
                });
                // A realloc that moved the block freed one (and may have
                // refilled a bin): that is what a later reclaim looks for.
                s.count_free();
                s.unlock();
                r
            }
            None => self.with_fallback(|heap| {
                self.fallback.frees.fetch_add(1, Ordering::Relaxed);
                // SAFETY: we hold the fallback heap; the caller passes a live
                // block of `layout`.
                match unsafe { self.core.realloc(heap, ptr, old, align, new_size) } {
                    Ok(p) if p.is_null() && self.should_reclaim() => {
                        self.reclaim(heap);
                        // SAFETY: as above; the block is untouched.
                        unsafe { self.core.realloc(heap, ptr, old, align, new_size) }
                    }
                    r => r,
                }
            }),
        };
        match r {
            Ok(p) => p,
            Err(f) => self.fault(f),
        }
    }
}
