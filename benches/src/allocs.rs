//! The allocators under test, how a name picks one, a counting wrapper, and
//! the speed-of-light floor.
//!
//! Every allocator is called through its `GlobalAlloc` implementation
//! directly; none of them is the program's global allocator (that is
//! [`HarnessAlloc`](crate::harness::HarnessAlloc)).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicU64, Ordering};
use std::alloc::System;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// An allocator under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocKind {
    /// `hakmem::HakMem`.
    Hakmem,
    /// `std::alloc::System`: glibc's malloc.
    System,
    /// `mimalloc::MiMalloc` (the crate's bundled mimalloc).
    Mimalloc,
    /// `tikv_jemallocator::Jemalloc` (prefixed jemalloc, default configuration).
    Jemalloc,
    /// [`SpeedOfLight`]: per-thread free lists of fixed-size blocks.
    Sol,
    /// hakmem with purging off (`HAKMEM_PURGE_DELAY_MS` and
    /// `HAKMEM_PURGE_DIRTY_MIN` at their maximum): runs only in a child
    /// process started with that environment (see [`AllocKind::env`]).
    #[serde(rename = "hakmem-nopurge")]
    HakmemNoPurge,
    /// hakmem with its background purge thread (`HAKMEM_PURGE_THREAD=1`):
    /// child processes only, like [`AllocKind::HakmemNoPurge`].
    #[serde(rename = "hakmem-pt")]
    HakmemPurgeThread,
}

impl AllocKind {
    /// Every allocator, hakmem first.
    pub const ALL: [AllocKind; 5] =
        [AllocKind::Hakmem, AllocKind::System, AllocKind::Mimalloc, AllocKind::Jemalloc, AllocKind::Sol];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            AllocKind::Hakmem => "hakmem",
            AllocKind::System => "system",
            AllocKind::Mimalloc => "mimalloc",
            AllocKind::Jemalloc => "jemalloc",
            AllocKind::Sol => "sol",
            AllocKind::HakmemNoPurge => "hakmem-nopurge",
            AllocKind::HakmemPurgeThread => "hakmem-pt",
        }
    }

    /// Parse a name (`glibc` is accepted for `system`).
    pub fn parse(s: &str) -> Option<AllocKind> {
        match s {
            "glibc" => Some(AllocKind::System),
            "hakmem-nopurge" => Some(AllocKind::HakmemNoPurge),
            "hakmem-pt" => Some(AllocKind::HakmemPurgeThread),
            _ => AllocKind::ALL.into_iter().find(|k| k.name() == s),
        }
    }

    /// Whether this is hakmem (in any configuration).
    pub fn is_hakmem(self) -> bool {
        matches!(self, AllocKind::Hakmem | AllocKind::HakmemNoPurge | AllocKind::HakmemPurgeThread)
    }

    /// The environment a child process running this allocator needs. hakmem
    /// reads its configuration once per process, so a configuration variant
    /// can only run in a process of its own started with these variables.
    pub fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            AllocKind::HakmemNoPurge => {
                &[("HAKMEM_PURGE_DELAY_MS", "4294967295"), ("HAKMEM_PURGE_DIRTY_MIN", "9223372036854775807")]
            }
            AllocKind::HakmemPurgeThread => &[("HAKMEM_PURGE_THREAD", "1")],
            _ => &[],
        }
    }

    /// In a process about to run this allocator: whether hakmem's
    /// configuration is the one this name stands for (a variant run without
    /// its environment would measure plain hakmem under another name).
    pub fn check_config(self) -> Result<(), String> {
        if !self.is_hakmem() {
            return Ok(());
        }
        // hakmem reads its environment on first use: make sure it has.
        let _ = hakmem::stats();
        let cfg = hakmem::allocator().config();
        let no_purge = cfg.purge_delay_ms == u32::MAX && cfg.purge_dirty_min >= isize::MAX as usize;
        let pt = std::env::var("HAKMEM_PURGE_THREAD").is_ok_and(|v| v.trim() == "1");
        let ok = match self {
            AllocKind::HakmemNoPurge => no_purge,
            AllocKind::HakmemPurgeThread => pt && !no_purge,
            _ => !no_purge && !pt,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} needs a process of its own with {:?} (purge delay here {} ms, dirty min {} B, purge thread {pt}); \
                 it runs in child processes only (--isolate, `memory`, `purge-cost`)",
                self.name(),
                self.env(),
                cfg.purge_delay_ms,
                cfg.purge_dirty_min
            ))
        }
    }
}

/// Something to run with an allocator chosen at run time: the bridge from a
/// name to a statically dispatched, monomorphised call.
pub trait WithAlloc {
    /// The result.
    type Out;
    /// Run with `a`.
    fn call<A: GlobalAlloc + Sync>(self, a: &A) -> Self::Out;
}

/// The `mimalloc` handle under test.
pub static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// The `jemalloc` handle under test.
pub static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
/// The `hakmem` handle under test.
pub static HAKMEM: hakmem::HakMem = hakmem::HakMem::new();
/// The speed-of-light floor.
pub static SOL: SpeedOfLight = SpeedOfLight;

/// Run `w` with the allocator `k` names.
pub fn dispatch<W: WithAlloc>(k: AllocKind, w: W) -> W::Out {
    match k {
        AllocKind::Hakmem | AllocKind::HakmemNoPurge | AllocKind::HakmemPurgeThread => w.call(&HAKMEM),
        AllocKind::System => w.call(&System),
        AllocKind::Mimalloc => w.call(&MIMALLOC),
        AllocKind::Jemalloc => w.call(&JEMALLOC),
        AllocKind::Sol => w.call(&SOL),
    }
}

/// Versions of the peers linked in, for the record.
pub fn versions() -> Vec<(String, String)> {
    let mut v = Vec::new();
    // SAFETY: `mi_version` has no preconditions.
    let mi = unsafe { libmimalloc_sys::mi_version() };
    v.push(("mimalloc".into(), format!("{}.{}.{}", mi / 10000, mi / 100 % 100, mi % 100)));
    v.push(("jemalloc".into(), jemalloc_version()));
    v.push(("glibc".into(), glibc_version()));
    v
}

fn jemalloc_version() -> String {
    let mut p: *const core::ffi::c_char = core::ptr::null();
    let mut len = size_of::<*const core::ffi::c_char>();
    // SAFETY: "version" reads a `const char *`; `p` and `len` describe room for one.
    let rc = unsafe { tikv_jemalloc_sys::mallctl(c"version".as_ptr(), (&raw mut p).cast(), &mut len, null_mut(), 0) };
    if rc != 0 || p.is_null() {
        return "unknown".into();
    }
    // SAFETY: jemalloc's version is a static NUL-terminated string.
    unsafe { core::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

unsafe extern "C" {
    fn gnu_get_libc_version() -> *const core::ffi::c_char;
}

fn glibc_version() -> String {
    // SAFETY: glibc returns a static NUL-terminated string.
    unsafe { core::ffi::CStr::from_ptr(gnu_get_libc_version()) }.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// Ownership witnesses: each allocator's own accounting, asked whether it saw
// a block. The tests use them to prove a name reaches the allocator it names.

/// glibc's `mallinfo2` (glibc ≥ 2.33).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct MallInfo2 {
    /// Non-mmapped space allocated (bytes).
    pub arena: usize,
    /// Number of free chunks.
    pub ordblks: usize,
    /// Number of free fastbin blocks.
    pub smblks: usize,
    /// Number of mmapped regions.
    pub hblks: usize,
    /// Space allocated in mmapped regions (bytes).
    pub hblkhd: usize,
    /// Unused.
    pub usmblks: usize,
    /// Space in freed fastbin blocks (bytes).
    pub fsmblks: usize,
    /// Total allocated space (bytes).
    pub uordblks: usize,
    /// Total free space (bytes).
    pub fordblks: usize,
    /// Top-most, releasable space (bytes).
    pub keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// glibc's accounting now.
pub fn glibc_mallinfo() -> MallInfo2 {
    // SAFETY: `mallinfo2` has no preconditions.
    unsafe { mallinfo2() }
}

/// Whether mimalloc's own region map holds `p`.
pub fn mimalloc_owns(p: *const u8) -> bool {
    // SAFETY: `mi_is_in_heap_region` accepts any pointer.
    unsafe { libmimalloc_sys::mi_is_in_heap_region(p.cast()) }
}

/// The jemalloc arena index of `p`, asked of jemalloc's own extent map
/// (`arenas.lookup`). Only for pointers that may be jemalloc's: jemalloc may
/// fault on an address it has never mapped.
pub fn jemalloc_arena_of(p: *const u8) -> Option<u32> {
    let mut arena: u32 = u32::MAX;
    let mut len = size_of::<u32>();
    let mut ptr = p;
    // SAFETY: "arenas.lookup" writes a `void *` and reads an `unsigned`;
    // the buffers given match.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arenas.lookup".as_ptr(),
            (&raw mut arena).cast(),
            &mut len,
            (&raw mut ptr).cast(),
            size_of::<*const u8>(),
        )
    };
    (rc == 0).then_some(arena)
}

// ---------------------------------------------------------------------------

/// A wrapper that counts every call reaching the allocator it wraps.
pub struct Counting<'a, A> {
    inner: &'a A,
    allocs: AtomicU64,
    deallocs: AtomicU64,
    reallocs: AtomicU64,
}

impl<'a, A> Counting<'a, A> {
    /// Wrap `inner` with zeroed counters.
    pub fn new(inner: &'a A) -> Self {
        Counting { inner, allocs: AtomicU64::new(0), deallocs: AtomicU64::new(0), reallocs: AtomicU64::new(0) }
    }
    /// `alloc` and `alloc_zeroed` calls.
    pub fn allocs(&self) -> u64 {
        self.allocs.load(Ordering::Relaxed)
    }
    /// `dealloc` calls.
    pub fn deallocs(&self) -> u64 {
        self.deallocs.load(Ordering::Relaxed)
    }
    /// `realloc` calls.
    pub fn reallocs(&self) -> u64 {
        self.reallocs.load(Ordering::Relaxed)
    }
    /// Every call.
    pub fn calls(&self) -> u64 {
        self.allocs() + self.deallocs() + self.reallocs()
    }
}

// SAFETY: every call is forwarded unchanged to `inner`, which upholds the
// contract; the counters have no effect on the blocks.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<'_, A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { self.inner.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { self.inner.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.deallocs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { self.inner.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.reallocs.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}

// ---------------------------------------------------------------------------
// The speed-of-light floor.

/// Largest block the floor serves.
pub const SOL_MAX: usize = 64 * 1024;
/// Largest alignment the floor serves.
pub const SOL_MAX_ALIGN: usize = 16;
const SOL_MIN_SHIFT: u32 = 3;
const SOL_CLASSES: usize = 14; // 8 B ..= 64 KiB
const SOL_CHUNK_SHIFT: u32 = 22;
const SOL_CHUNK: usize = 1 << SOL_CHUNK_SHIFT; // 4 MiB

/// The "speed of light": the least work any allocator can do for a block.
///
/// Each thread has one LIFO free list per power-of-two size (8 B … 64 KiB)
/// and a bump pointer into 4 MiB chunks that are never returned. `alloc` pops
/// (or bumps), `dealloc` pushes onto the list of `layout.size()`'s class: no
/// headers, no ownership lookup, no atomics, no support for a block freed by a
/// thread other than the one that allocated it. A thread's lists and chunk go
/// to a pool when it exits and the next new thread takes them over, so threads
/// spawned each round do not grow memory without bound.
///
/// It serves only workloads whose every free is made by the allocating thread,
/// with sizes up to [`SOL_MAX`] and alignment up to [`SOL_MAX_ALIGN`] (larger
/// requests get null). Debug builds check each free's owner and abort on a
/// cross-thread free, so a workload wrongly declared local fails its tests.
pub struct SpeedOfLight;

struct SolHeap {
    free: [*mut u8; SOL_CLASSES],
    bump: usize,
    end: usize,
    /// Identity stamped into this heap's chunks (debug ownership check).
    id: usize,
}

// SAFETY: a heap moves between threads only whole, through the pool, after
// its thread has exited; its blocks are plain memory.
unsafe impl Send for SolHeap {}

impl SolHeap {
    const fn new() -> SolHeap {
        SolHeap { free: [null_mut(); SOL_CLASSES], bump: 0, end: 0, id: 0 }
    }
}

thread_local! {
    static SOL_HEAP: UnsafeCell<SolHeap> = const { UnsafeCell::new(SolHeap::new()) };
    static SOL_EXIT: SolExit = const { SolExit };
}

static SOL_POOL: Mutex<Vec<SolHeap>> = Mutex::new(Vec::new());
static SOL_IDS: AtomicU64 = AtomicU64::new(1);

struct SolExit;

impl Drop for SolExit {
    fn drop(&mut self) {
        let _ = SOL_HEAP.try_with(|h| {
            // SAFETY: the thread is exiting; nothing else uses its heap now.
            let heap = core::mem::replace(unsafe { &mut *h.get() }, SolHeap::new());
            if let Ok(mut pool) = SOL_POOL.lock() {
                pool.push(heap);
            }
        });
    }
}

#[inline(always)]
fn sol_class(size: usize) -> usize {
    let shift = usize::BITS - (size.max(1 << SOL_MIN_SHIFT) - 1).leading_zeros();
    (shift - SOL_MIN_SHIFT) as usize
}

#[cold]
#[inline(never)]
fn sol_refill(h: &mut SolHeap, c: usize) -> *mut u8 {
    let size = 1usize << (c as u32 + SOL_MIN_SHIFT);
    let align = size.min(SOL_MAX_ALIGN);
    loop {
        let start = h.bump.next_multiple_of(align);
        if h.end != 0 && start + size <= h.end {
            h.bump = start + size;
            return start as *mut u8;
        }
        if h.id == 0 {
            // A new thread: take over an exited thread's heap, or start one.
            if let Some(old) = SOL_POOL.lock().ok().and_then(|mut p| p.pop()) {
                *h = old;
            } else {
                h.id = SOL_IDS.fetch_add(1, Ordering::Relaxed) as usize;
            }
            // Register the exit hook (it may allocate through the harness).
            let _ = SOL_EXIT.try_with(|_| ());
            let p = h.free[c];
            if !p.is_null() {
                // SAFETY: a free block holds the next link in its first word.
                h.free[c] = unsafe { p.cast::<*mut u8>().read() };
                return p;
            }
            continue;
        }
        // A fresh chunk, aligned to its size so a block's chunk header is
        // found by masking (the debug ownership check).
        let p = crate::harness::map_aligned(SOL_CHUNK);
        if p.is_null() {
            return p;
        }
        // SAFETY: the first word of a fresh chunk is ours to write.
        unsafe { p.cast::<usize>().write(h.id) };
        h.bump = p as usize + 64;
        h.end = p as usize + SOL_CHUNK;
    }
}

#[inline(always)]
fn sol_check_owner(h: &SolHeap, ptr: *mut u8) {
    if cfg!(debug_assertions) {
        let chunk = (ptr as usize) & !(SOL_CHUNK - 1);
        // SAFETY: every floor block lies in a chunk whose first word is the
        // owning heap's id.
        let owner = unsafe { (chunk as *const usize).read() };
        if owner != h.id {
            eprintln!(
                "sol: block {ptr:p} freed by a thread that does not own it: the speed-of-light \
                 floor cannot run a workload with cross-thread frees"
            );
            std::process::abort();
        }
    }
}

// SAFETY: each block is a distinct slice of a chunk, handed out once until
// freed; classes are powers of two and blocks are carved at a multiple of
// `min(size, 16)` from a 16-aligned start, which covers any alignment up to
// 16 (larger alignments get null). Each thread's lists are its own.
unsafe impl GlobalAlloc for SpeedOfLight {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > SOL_MAX || layout.align() > SOL_MAX_ALIGN {
            return null_mut();
        }
        let c = sol_class(layout.size());
        SOL_HEAP.with(|h| {
            // SAFETY: this thread's heap, used by nothing re-entrant.
            let h = unsafe { &mut *h.get() };
            let p = h.free[c];
            if !p.is_null() {
                // SAFETY: a free block holds the next link in its first word.
                h.free[c] = unsafe { p.cast::<*mut u8>().read() };
                return p;
            }
            sol_refill(h, c)
        })
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let c = sol_class(layout.size());
        SOL_HEAP.with(|h| {
            // SAFETY: this thread's heap, used by nothing re-entrant.
            let h = unsafe { &mut *h.get() };
            sol_check_owner(h, ptr);
            // SAFETY: the caller frees a block of ours, now unused.
            unsafe { ptr.cast::<*mut u8>().write(h.free[c]) };
            h.free[c] = ptr;
        })
    }
}
