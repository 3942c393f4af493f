//! The harness's own global allocator.
//!
//! The benchmark program needs memory for its bookkeeping (slot arrays,
//! thread handles, results, JSON). If that went to one of the allocators under
//! test, that allocator's state (its caches, arenas, fragmentation, resident
//! memory) would carry traffic the other allocators never see. So the
//! program's `#[global_allocator]` is this one: none of the allocators under
//! test, deliberately simple, and the same for every allocator measured.
//!
//! Power-of-two size classes from 16 B to 256 KiB with one free list each,
//! carved from 1 MiB `mmap` chunks and never returned; larger requests map and
//! unmap their own region (page-aligned at most). One spin lock guards everything: the harness
//! allocates rarely (never inside a workload's inner loop, which the tests
//! check through [`thread_calls`]).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, UnsafeCell};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};

const MIN_SHIFT: u32 = 4;
const MAX_SHIFT: u32 = 18;
const NCLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
const CHUNK: usize = 1 << 20;
const PAGE: usize = 4096;

/// The harness's global allocator (see the module docs).
pub struct HarnessAlloc;

struct State {
    free: [*mut u8; NCLASSES],
    bump: usize,
    end: usize,
}

struct Locked {
    busy: AtomicBool,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only reached while `busy` is held (see `with_state`).
unsafe impl Sync for Locked {}

static LOCKED: Locked = Locked {
    busy: AtomicBool::new(false),
    state: UnsafeCell::new(State { free: [null_mut(); NCLASSES], bump: 0, end: 0 }),
};

static TOTAL_CALLS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Calls into this allocator made by the current thread.
    static THREAD_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Calls (alloc, dealloc, realloc) the current thread has made into the
/// harness allocator so far.
pub fn thread_calls() -> u64 {
    THREAD_CALLS.with(|c| c.get())
}

/// Calls all threads have made into the harness allocator so far.
pub fn total_calls() -> u64 {
    TOTAL_CALLS.load(Ordering::Relaxed)
}

fn count() {
    TOTAL_CALLS.fetch_add(1, Ordering::Relaxed);
    let _ = THREAD_CALLS.try_with(|c| c.set(c.get() + 1));
}

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut spins = 0u32;
    while LOCKED.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        spins += 1;
        if spins < 64 {
            core::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // SAFETY: we hold `busy`, so no other reference to the state exists.
    let r = f(unsafe { &mut *LOCKED.state.get() });
    LOCKED.busy.store(false, Ordering::Release);
    r
}

fn map(len: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous private mapping aliases nothing.
    match unsafe { mmap_anonymous(null_mut(), len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE) } {
        Ok(p) => p.cast(),
        Err(_) => null_mut(),
    }
}

/// Class index of a request, or `None` when it gets a mapping of its own.
fn class_of(layout: Layout) -> Option<usize> {
    let need = layout.size().max(layout.align()).max(1 << MIN_SHIFT);
    let shift = usize::BITS - (need - 1).leading_zeros();
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

fn big_len(layout: Layout) -> usize {
    layout.size().div_ceil(PAGE) * PAGE
}

// SAFETY: small blocks are distinct power-of-two slices of mapped chunks,
// carved at a multiple of their size (so aligned to their size, which is at
// least the requested alignment) and handed out once until freed; big blocks
// are whole page-aligned mappings (larger alignments are refused). All state is under the lock.
unsafe impl GlobalAlloc for HarnessAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        let Some(c) = class_of(layout) else {
            // Mappings are page aligned; the harness never asks for more.
            if layout.align() > PAGE {
                return null_mut();
            }
            return map(big_len(layout));
        };
        let size = 1usize << (c as u32 + MIN_SHIFT);
        with_state(|s| {
            let head = s.free[c];
            if !head.is_null() {
                // SAFETY: a free block holds the next link in its first word.
                s.free[c] = unsafe { head.cast::<*mut u8>().read() };
                return head;
            }
            let mut start = s.bump.next_multiple_of(size);
            if s.end == 0 || start + size > s.end {
                let p = map(CHUNK);
                if p.is_null() {
                    return p;
                }
                s.end = p as usize + CHUNK;
                start = (p as usize).next_multiple_of(size);
            }
            s.bump = start + size;
            start as *mut u8
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count();
        let Some(c) = class_of(layout) else {
            // SAFETY: `alloc` made this whole mapping for this block.
            let _ = unsafe { munmap(ptr.cast(), big_len(layout)) };
            return;
        };
        with_state(|s| {
            // SAFETY: the block is ours and free now; its first word holds the link.
            unsafe { ptr.cast::<*mut u8>().write(s.free[c]) };
            s.free[c] = ptr;
        });
    }
}

/// Map `size` bytes (a power of two, at least a page) aligned to `size`, for
/// the speed-of-light floor's chunks. Null on failure. Never unmapped.
pub fn map_aligned(size: usize) -> *mut u8 {
    let p = map(2 * size);
    if p.is_null() {
        return p;
    }
    let start = (p as usize).next_multiple_of(size);
    let head = start - p as usize;
    let tail = size - head;
    // SAFETY: both ranges lie in the mapping just made and outside the
    // aligned `size` bytes kept.
    unsafe {
        if head > 0 {
            let _ = munmap(p.cast(), head);
        }
        if tail > 0 {
            let _ = munmap((start + size) as *mut _, tail);
        }
    }
    start as *mut u8
}
