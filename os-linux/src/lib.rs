//! hakmem for Linux: a `#[global_allocator]` with thread-local caches over
//! `mmap`.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: hakmem::HakMem = hakmem::HakMem::new();
//! ```
//!
//! Every [`HakMem`] value is a handle to the one process-wide allocator, so
//! its methods can also be called directly from a program whose global
//! allocator is another one (the benchmarks do this).
//!
//! Each thread's [`LocalHeap`] lives in a `const`-initialised thread-local
//! without a destructor, so reaching it costs one thread-pointer-relative
//! access and setting it up allocates nothing. A separate thread-local guard,
//! registered when the heap is first attached, detaches it at thread exit;
//! allocations made after that (by later thread-local destructors) go through
//! the allocator's shared heap, and frees from such a thread are remote frees.

#![warn(missing_docs)]

mod env;
mod mmap;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

use hakmem_core::{Allocator, Config, Fault, LocalHeap, Server};
pub use hakmem_core::{Stats, class};
pub use mmap::{MmapSource, PurgeMode};

/// The process-wide allocator.
static ALLOC: Allocator<MmapSource, Server> = Allocator::new(MmapSource::new(), Config::DEFAULT);

thread_local! {
    /// This thread's bins. No destructor, so access needs no state check.
    static HEAP: UnsafeCell<LocalHeap> = const { UnsafeCell::new(LocalHeap::new()) };
    /// Detaches `HEAP` when the thread exits.
    static EXIT: ExitGuard = const { ExitGuard };
}

struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = HEAP.try_with(|h| {
            // SAFETY: thread-exit runs no allocator call of this thread
            // concurrently, and nothing here allocates.
            let h = unsafe { &mut *h.get() };
            if ALLOC.config().delta_debug {
                let mut e = env::Stderr::new();
                let _ = write!(e, "hakmem: delta summary at thread exit:");
                for (site, n) in ALLOC.delta_summary(h) {
                    let _ = write!(e, " {site}={n}");
                }
                let _ = writeln!(e);
            }
            ALLOC.detach(h);
        });
    }
}

/// Start-up, once per process, before the allocator's first use: read the
/// `HAKMEM_*` environment into the configuration. Other threads' first
/// calls wait here, so the configuration is set before anyone reads it.
static INIT: Once = Once::new();
/// `HAKMEM_STATS=1`: print the statistics at exit.
static STATS_AT_EXIT: AtomicBool = AtomicBool::new(false);
/// `HAKMEM_LOG_INTERVAL_MS`.
static LOG_INTERVAL_MS: AtomicU64 = AtomicU64::new(1000);
/// `HAKMEM_PURGE_THREAD=1`: 1 wanted, 2 started.
static PURGE_THREAD: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

#[cold]
fn init() {
    INIT.call_once(|| {
        let st = env::read();
        // SAFETY: inside the `Once`, before any other use of the allocator:
        // every path that could read the configuration comes through here.
        if let Err(e) = unsafe { ALLOC.set_config(st.config) } {
            let mut w = env::Stderr::new();
            let _ = writeln!(w, "hakmem: warning: configuration refused ({e}); using the defaults");
        }
        if let Some(mode) = st.purge {
            ALLOC.source().set_purge_mode(mode);
        }
        if let Some(min) = st.huge_min {
            ALLOC.source().set_huge_min(min);
        }
        STATS_AT_EXIT.store(st.stats_at_exit, Ordering::Relaxed);
        PURGE_THREAD.store(st.purge_thread as u8, Ordering::Relaxed);
        LOG_INTERVAL_MS.store(st.log_interval_ms, Ordering::Relaxed);
        env::register_exit();
    });
}

/// The hakmem allocator. See the crate docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct HakMem;

impl HakMem {
    /// A handle to the process-wide allocator.
    pub const fn new() -> HakMem {
        HakMem
    }
}

/// Run `f` on this thread's heap. The `&mut` must not live across a call
/// that may re-enter the allocator (the core never does).
#[inline(always)]
fn with_heap<R>(f: impl FnOnce(&mut LocalHeap) -> R) -> R {
    // Only the address comes out of the thread-local access, so the access
    // stays a single thread-pointer-relative instruction however large `f`
    // is. The heap has no destructor: its storage lives as long as the thread.
    let h = HEAP.with(|h| h.get());
    // SAFETY: the heap is this thread's alone, and `f` never re-enters the
    // allocator (the core allocates nothing), so this `&mut` is unique.
    f(unsafe { &mut *h })
}

/// Attach this thread's heap if it is detached, and register the thread-exit
/// guard. Returns false when the thread cannot have a heap (it is exiting, or
/// metadata memory is exhausted); callers then use the shared heap.
#[cold]
#[inline(never)]
fn ensure_attached() -> bool {
    init();
    let attached = with_heap(|h| h.is_attached() || ALLOC.attach(h));
    if !attached {
        return false;
    }
    // Registering the guard may allocate on some platforms; the heap is
    // attached by now, so such an allocation takes the ordinary path.
    if EXIT.try_with(|_| ()).is_err() {
        // The thread is past its thread-local destructors: nothing would
        // detach the heap, so give it back at once.
        with_heap(|h| ALLOC.detach(h));
        return false;
    }
    true
}

/// Start the background purge thread if it was asked for. Not from `init`:
/// spawning a thread allocates, which must not happen inside the `Once`.
#[cold]
fn start_purge_thread() {
    if PURGE_THREAD.compare_exchange(1, 2, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    let period = std::time::Duration::from_millis((ALLOC.config().purge_delay_ms as u64 / 2).max(1));
    let spawned = std::thread::Builder::new().name("hakmem-purge".into()).spawn(move || {
        loop {
            std::thread::sleep(period);
            ALLOC.purge(false);
        }
    });
    if spawned.is_err() {
        let mut e = env::Stderr::new();
        let _ = writeln!(e, "hakmem: warning: HAKMEM_PURGE_THREAD=1: cannot start the thread; purging on events only");
    }
}

#[cold]
#[inline(never)]
fn alloc_cold(layout: Layout) -> *mut u8 {
    init();
    env::maybe_log(LOG_INTERVAL_MS.load(Ordering::Relaxed));
    if PURGE_THREAD.load(Ordering::Relaxed) == 1 {
        start_purge_thread();
    }
    if !with_heap(|h| h.is_attached()) && !ensure_attached() {
        return ALLOC.alloc_shared(layout);
    }
    with_heap(|h| ALLOC.alloc_slow(h, layout))
}

/// Report a bad pointer and abort: a program that frees what it does not own
/// has corrupted its own state, and continuing would spread the damage.
#[cold]
#[inline(never)]
fn fault(f: Fault) -> ! {
    fatal(format_args!("{f}"))
}

/// Print `hakmem: fatal: …` to standard error without allocating, and abort.
#[cold]
pub(crate) fn fatal(msg: core::fmt::Arguments<'_>) -> ! {
    let mut e = env::Stderr::new();
    let _ = writeln!(e, "hakmem: fatal: {msg}");
    e.flush();
    std::process::abort();
}

// SAFETY: `alloc` returns blocks of at least `layout.size()` bytes aligned to
// `layout.align()` that no other live allocation overlaps, or null; `dealloc`
// and `realloc` accept exactly what `alloc` returned. The core upholds the
// block guarantees; this adapter only routes to the calling thread's heap.
unsafe impl GlobalAlloc for HakMem {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = with_heap(|h| ALLOC.alloc_fast(h, layout));
        if !p.is_null() {
            return p;
        }
        alloc_cold(layout)
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block of ours, allocated with `layout`.
        with_heap(|h| unsafe { ALLOC.free_sized_or(h, ptr, layout, |f| fault(f)) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !with_heap(|h| h.is_attached()) && !ensure_attached() {
            let p = ALLOC.alloc_shared(layout);
            if !p.is_null() {
                // SAFETY: a fresh block of `layout.size()` bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            return p;
        }
        with_heap(|h| ALLOC.alloc_zeroed(h, layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !with_heap(|h| h.is_attached()) && !ensure_attached() {
            // No heap of our own: allocate through the shared heap and copy.
            let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            let q = ALLOC.alloc_shared(new);
            if !q.is_null() {
                // SAFETY: both blocks are live; the old one holds `layout.size()` bytes.
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                    if let Err(f) = ALLOC.free_detached(ptr) {
                        fault(f)
                    }
                }
            }
            return q;
        }
        // SAFETY: the caller passes a live block of `layout`.
        match with_heap(|h| unsafe { ALLOC.realloc(h, ptr, layout.size(), layout.align(), new_size) }) {
            Ok(p) => p,
            Err(f) => fault(f),
        }
    }
}

/// The allocator's accounting (segments, pages, Large bytes, heaps) and the
/// per-class operation counters of every heap. Its `Display` is the printer
/// that `HAKMEM_STATS=1` uses at exit.
pub fn stats() -> Stats {
    init();
    ALLOC.stats()
}

/// Return what can be returned now: this thread's pending remote frees and
/// cached spans, abandoned heaps' remote frees, empty segments and cached
/// Large regions.
pub fn collect() {
    init();
    with_heap(|h| ALLOC.collect(Some(h)));
}

/// Give this thread's cached blocks back to their pages and detach its heap,
/// as thread exit does (the next allocation attaches it again). With
/// [`collect`] afterwards, [`stats`] shows exactly the memory in use.
pub fn flush_thread() {
    with_heap(|h| ALLOC.detach(h));
}

/// Bytes usable in the block at `ptr` (at least what was asked for).
///
/// # Safety
/// `ptr` is a live block of this allocator.
pub unsafe fn usable_size(ptr: *mut u8) -> usize {
    // SAFETY: forwarded.
    match unsafe { ALLOC.usable_size(ptr) } {
        Ok(n) => n,
        Err(f) => fault(f),
    }
}

/// The underlying core allocator (for adapters built on this crate).
pub fn allocator() -> &'static Allocator<MmapSource, Server> {
    &ALLOC
}
