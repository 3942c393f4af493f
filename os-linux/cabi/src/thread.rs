//! Process and thread life cycle: first-call initialisation, each thread's
//! heap, its release at thread exit, and `fork`.
//!
//! # The slot
//!
//! Each thread's TLS slot (`tls.rs`) holds either a pointer to its
//! [`LocalHeap`] or one of three small states:
//!
//! - [`FRESH`] — the thread has not allocated yet (TLS starts zeroed).
//! - [`BUSY`] — the thread is setting its heap up. Anything it allocates
//!   meanwhile (a C library call that allocates, on a path we do not control)
//!   goes through the allocator's shared heap, so setting up never recurses.
//! - [`DEAD`] — the thread's heap was given back at thread exit. Later
//!   allocations by this thread (other thread-exit destructors run after
//!   ours) go through the shared heap, and its frees are remote frees.
//!
//! The fast paths test `slot > LAST_STATE` once and use the pointer.
//!
//! # The heap's storage and its release
//!
//! A `LocalHeap` (5 KiB of bins) is a block of the allocator itself, taken
//! from the shared heap. The first allocation of a thread creates it and
//! stores it in a `pthread` key whose destructor, at thread exit, detaches it
//! (its cached blocks go back to their spans; the core heap is kept for the
//! next thread) and frees the block. Nothing of a thread is left behind.

use core::alloc::Layout;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use hakmem_core::LocalHeap;

use crate::{alloc, fault, tls};

/// The thread has not allocated yet.
pub(crate) const FRESH: usize = 0;
/// The thread is setting up its heap; it uses the shared heap meanwhile.
pub(crate) const BUSY: usize = 1;
/// The thread has given its heap back (thread exit, or no `pthread` key).
pub(crate) const DEAD: usize = 2;
/// Slot values up to this are states, not heaps.
pub(crate) const LAST_STATE: usize = DEAD;

/// The process-wide setup: 0 not started, 1 running, 2 done.
static INIT: AtomicU8 = AtomicU8::new(0);
/// The `pthread` key whose destructor releases a thread's heap, or `NO_KEY`.
static KEY: AtomicUsize = AtomicUsize::new(NO_KEY);
const NO_KEY: usize = usize::MAX;

/// This thread's heap, if it has (or can now get) one. `None`: use the shared
/// heap (the thread is setting up, exiting, or could not get a heap).
#[inline]
pub(crate) fn heap() -> Option<&'static mut LocalHeap> {
    let s = tls::get();
    if s > LAST_STATE {
        // SAFETY: a slot above the states holds this thread's heap, which
        // only this thread uses; callers hold the `&mut` for one allocator
        // call, which never re-enters this library.
        return Some(unsafe { &mut *(s as *mut LocalHeap) });
    }
    if s == FRESH { setup() } else { None }
}

/// Give this thread a heap (its first allocation).
#[cold]
#[inline(never)]
fn setup() -> Option<&'static mut LocalHeap> {
    tls::set(BUSY);
    init_process();
    let key = KEY.load(Ordering::Acquire);
    if key == NO_KEY {
        // Without a key nothing would release the heap at thread exit: this
        // thread lives on the shared heap.
        tls::set(DEAD);
        return None;
    }
    let p = alloc().alloc_shared(heap_layout()).cast::<LocalHeap>();
    if p.is_null() {
        // Out of memory: try again on the next allocation.
        tls::set(FRESH);
        return None;
    }
    // SAFETY: a fresh block of the right size and alignment.
    unsafe { p.write(LocalHeap::new()) };
    // From here this thread allocates through its heap, so a `calloc` inside
    // `pthread_setspecific` (keys above 31) is an ordinary allocation.
    tls::set(p as usize);
    // SAFETY: `key` was created by `pthread_key_create`.
    if unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, p.cast()) } != 0 {
        // SAFETY: `p` is this thread's heap, which we give up.
        unsafe { release(p) };
        return None;
    }
    // SAFETY: as in `heap`.
    Some(unsafe { &mut *p })
}

fn heap_layout() -> Layout {
    // A cache line of its own, so no other thread's data shares the bins'.
    match Layout::new::<LocalHeap>().align_to(64) {
        Ok(l) => l,
        Err(_) => unreachable!("64 is a power of two"),
    }
}

/// Set up what the process needs once: the thread-exit key, the `fork`
/// handlers, the environment. Allocates nothing: a recursive allocation from
/// this thread sees `BUSY` in its slot and takes the shared heap, so it never
/// reaches here; other threads wait the few microseconds this takes.
fn init_process() {
    if INIT.load(Ordering::Acquire) == 2 {
        return;
    }
    if INIT.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire).is_err() {
        while INIT.load(Ordering::Acquire) != 2 {
            core::hint::spin_loop();
        }
        return;
    }
    // Fill rustix's cache of the auxiliary vector now, outside every lock of
    // the allocator (the core asks for the page size under its Large lock).
    // On Linux ≥ 6.4 this reads it into a stack buffer; on older kernels,
    // rustix may allocate, which lands on the shared heap (slot is BUSY).
    let _ = rustix::param::page_size();
    let _ = crate::env::settings();
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `thread_exit` has the destructor signature; glibc keeps keys
    // in a static table (no allocation).
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        KEY.store(key as usize, Ordering::Release);
    }
    INIT.store(2, Ordering::Release);
    // Registered after `INIT` is done, so that an allocation inside
    // `pthread_atfork` (glibc's handler list is a growable array) is an
    // ordinary one.
    // SAFETY: three handlers with the required signature.
    unsafe { libc::pthread_atfork(Some(prefork), Some(postfork), Some(postfork)) };
}

/// The key destructor: give the exiting thread's heap back.
unsafe extern "C" fn thread_exit(arg: *mut c_void) {
    // SAFETY: the key holds only heaps stored by `setup`, and glibc calls
    // this once, on the heap's own thread, after which the key is null.
    unsafe { release(arg.cast()) }
}

/// Detach this thread's heap `p` and free its storage; the thread uses the
/// shared heap from now on.
///
/// # Safety
/// `p` is this thread's heap, created by `setup`, not used after this.
unsafe fn release(p: *mut LocalHeap) {
    tls::set(DEAD);
    // SAFETY: the heap is this thread's and no allocator call of this thread
    // is running (we are in one of ours, which holds no `&mut` to it).
    // `detach` allocates nothing.
    alloc().detach(unsafe { &mut *p });
    // SAFETY: `p` is a live block of ours, no longer referenced.
    if let Err(f) = unsafe { alloc().free_detached(p.cast()) } {
        fault::fatal(f)
    }
}

/// `pthread_atfork` prepare: hold every lock of the allocator's cold side so
/// the child starts from consistent state.
extern "C" fn prefork() {
    alloc().prefork();
}

/// `pthread_atfork` parent and child: release what `prefork` took. In the
/// child, the heaps of the parent's other threads stay attached to threads
/// that do not exist there; their memory is lost to the child (never
/// corrupted), and the child's own thread keeps its heap.
extern "C" fn postfork() {
    // SAFETY: glibc calls this once after each `prefork`, in each process.
    unsafe { alloc().postfork() };
}

#[cfg(test)]
pub(crate) fn key_for_tests() -> Option<usize> {
    let k = KEY.load(Ordering::Acquire);
    (k != NO_KEY).then_some(k)
}
