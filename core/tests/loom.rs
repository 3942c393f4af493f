//! Loom models of the core's cross-thread protocols.
//!
//! Each model drives the real `Allocator` and `LocalHeap` through their
//! public API; under `--cfg hakmem_loom` every atomic, lock and `Guarded` cell
//! inside the core is loom's instrumented twin (see `core/src/sync.rs`), so
//! loom explores the interleavings of the real code and reports any two
//! accesses to a cell that no happens-before edge orders.
//!
//! Run (see `core/loom.sh` for one model at a time, with more preemptions):
//!
//! ```text
//! RUSTFLAGS="--cfg hakmem_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p hakmem-core --release --features test-util --test loom
//! ```
//!
//! Blocks are plain memory, which loom cannot see; the models therefore keep,
//! per block address, a loom cell that every holder of the block writes while
//! it holds it (the [`Shadow`]). Loom then checks that the writes of one
//! holder happen-before those of the next: that a block freed on one thread
//! and reused on another was handed over with the right orderings. The shadow
//! also records who holds each block, so handing out a live block (a double
//! allocation) fails at once, and each model ends by checking that every page
//! went back: nothing lost, nothing leaked.
//!
//! The `loom-bug-*` features of `hakmem-core` inject one deliberate bug each
//! (only under `--cfg hakmem_loom`); `docs/VERIFICATION.md` lists which model
//! catches which.
#![cfg(hakmem_loom)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use core::alloc::Layout;

use hakmem_core::testing::{TestSource, TinyGeo};
use hakmem_core::{Allocator, Config, Geo, Geometry, LocalHeap};
use loom::thread;

// ----------------------------------------------------------------------
// Harness
// ----------------------------------------------------------------------

/// Run `f` under loom. `LOOM_MAX_PREEMPTIONS` (default 2 here, so that a
/// plain `cargo test` terminates quickly) and the other `LOOM_*` variables
/// apply; `HAKMEM_LOOM_EXHAUSTIVE=1` lifts the preemption bound, so loom
/// explores every interleaving of the model.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("HAKMEM_LOOM_EXHAUSTIVE").is_some_and(|v| v == "1") {
        b.preemption_bound = None;
    } else if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.max_branches = 100_000;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let start = Instant::now();
    b.check(move || {
        r.fetch_add(1, Relaxed);
        f()
    });
    eprintln!(
        "loom model {name}: {} executions in {:.1?} (preemption bound {:?})",
        runs.load(Relaxed),
        start.elapsed(),
        b.preemption_bound
    );
}

/// A loom cell standing for the contents of one block.
struct Contents(loom::cell::UnsafeCell<u64>);
// SAFETY: loom checks every access to the cell; sharing it is the point.
unsafe impl Sync for Contents {}
// SAFETY: as above.
unsafe impl Send for Contents {}
impl Contents {
    /// A write by the block's holder: loom fails the model unless every
    /// earlier access happens-before it.
    fn write(&self, who: u64) {
        // SAFETY: loom panics on any access not ordered before this one.
        self.0.with_mut(|v| unsafe { *v = who });
    }
}

struct Slot {
    /// Handed out and not yet given back to the allocator.
    live: bool,
    /// Times the allocator handed this address out.
    handouts: usize,
    contents: Arc<Contents>,
}

/// What the model knows about each block, outside loom's view: a std mutex
/// (never held across a loom operation, so it adds no happens-before edge
/// and never blocks a loom thread) over a map keyed by address.
#[derive(Default)]
struct Shadow {
    slots: Mutex<HashMap<usize, Slot>>,
}

impl Shadow {
    /// Record that the allocator handed out `p` to `who`, and write its
    /// contents. Fails if `p` is still live (a double allocation).
    fn got(&self, p: *mut u8, who: u64) {
        assert!(!p.is_null(), "out of memory in a model");
        let contents = {
            let mut m = self.slots.lock().unwrap();
            let s = m.entry(p.addr()).or_insert_with(|| Slot {
                live: false,
                handouts: 0,
                contents: Arc::new(Contents(loom::cell::UnsafeCell::new(0))),
            });
            assert!(!s.live, "block {p:p} handed out while live");
            s.live = true;
            s.handouts += 1;
            s.contents.clone()
        };
        // Loom checks that the previous holder's write happens-before this one.
        contents.write(who);
    }

    /// Write `p`'s contents as its holder `who`, then record that it is about
    /// to be freed.
    fn put(&self, p: *mut u8, who: u64) {
        let contents = self.slots.lock().unwrap()[&p.addr()].contents.clone();
        contents.write(who);
        let mut m = self.slots.lock().unwrap();
        let s = m.get_mut(&p.addr()).unwrap();
        assert!(s.live, "block {p:p} freed twice");
        s.live = false;
    }

    /// Times `p` was handed out.
    fn handouts(&self, p: *mut u8) -> usize {
        self.slots.lock().unwrap().get(&p.addr()).map_or(0, |s| s.handouts)
    }
}

/// The allocator under test and the model's bookkeeping, shared by the
/// model's threads (through a std `Arc`, which adds no loom edge).
struct World<G: Geometry> {
    a: Allocator<TestSource, G>,
    shadow: Shadow,
}

/// Spans and segments go back as soon as they are empty, so "released" is
/// visible in the source's regions.
/// Free pages are purged as soon as they reach the pool (`purge_delay_ms:
/// 0`, with the source's page as small as a page of the geometry), so every
/// model also races purging (which zeroes memory) against the other threads.
const CONFIG: Config = Config { heap_page_cache: 0, segment_reserve: 0, purge_delay_ms: 0, ..Config::DEFAULT };

/// The source's page size: a `TinyGeo` page, so that purging a free page
/// really zeroes it.
const SOURCE_PAGE: usize = 256;

impl<G: Geometry> World<G> {
    fn new(config: Config) -> Arc<Self> {
        Arc::new(World { a: Allocator::new(TestSource::new(SOURCE_PAGE), config), shadow: Shadow::default() })
    }

    fn heap() -> Box<LocalHeap> {
        Box::new(LocalHeap::new())
    }

    /// Allocate `size` bytes for `who` through `heap`.
    fn alloc(&self, heap: &mut LocalHeap, size: usize, who: u64) -> *mut u8 {
        let p = self.a.alloc(heap, Layout::from_size_align(size, 8).unwrap());
        self.got(p, size, who)
    }

    /// Allocate `size` bytes for `who` through the allocator's shared heap.
    fn alloc_shared(&self, size: usize, who: u64) -> *mut u8 {
        let p = self.a.alloc_shared(Layout::from_size_align(size, 8).unwrap());
        self.got(p, size, who)
    }

    /// Record a block just handed out and tag its first and last words.
    fn got(&self, p: *mut u8, size: usize, who: u64) -> *mut u8 {
        self.check_live(p, size);
        self.shadow.got(p, who);
        // SAFETY: a live block of `size` bytes that `who` now holds.
        unsafe {
            p.cast::<u64>().write_unaligned(tag(p));
            p.add(size - 8).cast::<u64>().write_unaligned(tag(p));
        }
        p
    }

    /// Check a block's tags (nothing wrote into it while it was live: not the
    /// allocator, not a purge, not another holder) before its holder frees it.
    fn check_tags(&self, p: *mut u8, size: usize) {
        self.check_live(p, size);
        // SAFETY: a live block of `size` bytes that the caller holds.
        let (head, tail) =
            unsafe { (p.cast::<u64>().read_unaligned(), p.add(size - 8).cast::<u64>().read_unaligned()) };
        assert_eq!((head, tail), (tag(p), tag(p)), "live block {p:p} was overwritten");
    }

    /// Free `p` (held by `who`) through `heap`.
    fn free(&self, heap: &mut LocalHeap, p: *mut u8, size: usize, who: u64) {
        self.check_tags(p, size);
        self.shadow.put(p, who);
        // SAFETY: a live block of ours, given up here.
        unsafe { self.a.free(heap, p) }.unwrap();
    }

    /// Free `p` (held by `who`) from a thread without a heap.
    fn free_detached(&self, p: *mut u8, size: usize, who: u64) {
        self.check_tags(p, size);
        self.shadow.put(p, who);
        // SAFETY: as above.
        unsafe { self.a.free_detached(p) }.unwrap();
    }

    /// Allocate `size` bytes through `heap` until every block of `want` is
    /// among `held` again (at most `max` allocations), and check that each
    /// was handed out exactly twice: once before its free, once after.
    fn reclaim(&self, heap: &mut LocalHeap, held: &mut Vec<*mut u8>, size: usize, want: &[*mut u8], max: usize) {
        for _ in 0..max {
            if want.iter().all(|p| held.contains(p)) {
                break;
            }
            held.push(self.alloc(heap, size, A));
        }
        for &p in want {
            assert!(held.contains(&p), "remotely freed block {p:p} did not come back");
            assert_eq!(self.shadow.handouts(p), 2, "block {p:p} not reused exactly once");
        }
    }

    /// Free every block of `held` (of `size` bytes, held by `who`) through `heap`.
    fn free_all(&self, heap: &mut LocalHeap, held: Vec<*mut u8>, size: usize, who: u64) {
        for p in held {
            self.free(heap, p, size, who);
        }
    }

    /// A live block lies in memory the source still has.
    fn check_live(&self, p: *mut u8, size: usize) {
        assert!(!p.is_null(), "out of memory in a model");
        assert!(self.a.source().contains(p.addr(), size), "live block {p:p} is in released memory");
    }

    /// After every block is freed and every heap detached: `collect` returns
    /// every page and region to the source, except heap metadata.
    fn assert_all_returned(&self) {
        self.a.collect(None);
        let s = self.a.stats();
        assert_eq!(s.pages_in_use, 0, "pages still in use (a block was lost): {}", brief(&s));
        assert_eq!(s.abandoned_heaps, 0, "{}", brief(&s));
        assert_eq!(s.large_live + s.large_cached_bytes, 0, "{}", brief(&s));
        let regions = self.a.source().regions();
        assert_eq!(regions.len(), s.segments + s.meta_regions, "{} {regions:?}", brief(&s));
        // Only segments holding heap metadata may remain.
        assert!(s.segments <= usize::from(s.meta_pages != 0), "{}", brief(&s));
        assert!(self.shadow.slots.lock().unwrap().values().all(|s| !s.live));
    }
}

/// The pool, heap and Large figures of `s` (its per-class rows are noise here).
fn brief(s: &hakmem_core::Stats) -> String {
    format!(
        "segments {}, pages_in_use {}, meta_pages {}, meta_regions {}, heaps {}, abandoned {}, large live {} cached {} B",
        s.segments,
        s.pages_in_use,
        s.meta_pages,
        s.meta_regions,
        s.heaps,
        s.abandoned_heaps,
        s.large_live,
        s.large_cached_bytes
    )
}

/// What a holder writes into the first and last words of the block at `p`
/// (not a pattern the allocator's links or a purge could leave).
fn tag(p: *mut u8) -> u64 {
    (p.addr() as u64).rotate_left(23) ^ 0x5a5a_5a5a_0000_0001
}

/// A block pointer sent to another thread.
#[derive(Clone, Copy)]
struct Ptr(*mut u8);
// SAFETY: a block belongs to whoever holds its `Ptr`.
unsafe impl Send for Ptr {}
impl Ptr {
    fn get(self) -> *mut u8 {
        self.0
    }
}

// Holders, for the shadow cells.
const A: u64 = 1;
const B: u64 = 2;
const C: u64 = 3;

/// A Tiny class with three blocks per span on `TinyGeo` under loom (spans of
/// three 256 B pages), so spans fill and empty within a few operations.
const T3: usize = 256;

/// Under loom a descriptor is three times its plain size, so `TinyGeo`'s
/// header leaves room only for Tiny spans. The Mid model uses this geometry:
/// 16 KiB segments of 32 × 512 B pages, whose one Mid span (16 pages) holds
/// four blocks of [`M4`] and three of [`M3`].
enum MidGeo {}
impl Geometry for MidGeo {
    const SEGMENT_SHIFT: u32 = 14;
    const PAGE_SHIFT: u32 = 9;
}
/// Mid classes with four and three blocks per span on `MidGeo`.
const M4: usize = 2048;
const M3: usize = 2560;

#[test]
fn geometry() {
    use hakmem_core::class::{mid_class, tiny_class};
    // The models' block counts rely on these.
    type T = Geo<TinyGeo>;
    type M = Geo<MidGeo>;
    eprintln!("TinyGeo: header {} B, spans {:?}", T::HEADER_SIZE, T::SPAN);
    eprintln!("MidGeo: header {} B, spans {:?}", M::HEADER_SIZE, M::SPAN);
    assert_eq!(T::SPAN[tiny_class(T3)] as usize * T::PAGE_SIZE / T3, 3);
    assert_eq!(M::SPAN[mid_class(M4)] as usize * M::PAGE_SIZE / M4, 4);
    assert_eq!(M::SPAN[mid_class(M3)] as usize * M::PAGE_SIZE / M3, 3);
}

// ----------------------------------------------------------------------
// 1. Remote free
// ----------------------------------------------------------------------

/// **Remote free.** A allocates two blocks and hands them to B; B writes
/// each and frees it (a remote free: one CAS onto A's transfer list; the
/// second finds the list non-empty and raises no flag, so only the list's own
/// Release/Acquire orders its contents) while A keeps allocating (a slow path
/// drains remote frees) and collecting. Checks: each block is handed out
/// again exactly once, and never while live; B's writes happen-before A's
/// reuse (the shadow cells); nothing is lost (every page returns after A
/// detaches).
#[test]
fn remote_free() {
    model("remote_free", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let mut ha = World::<TinyGeo>::heap();
        let (p, q) = (w.alloc(&mut ha, T3, A), w.alloc(&mut ha, T3, A));
        let b = {
            let (w, p, q) = (w.clone(), Ptr(p), Ptr(q));
            thread::spawn(move || {
                w.free_detached(p.get(), T3, B);
                w.free_detached(q.get(), T3, B);
            })
        };
        // The span's last block, then a slow path that drains remote frees
        // (and may hand p and q out again at once), then a collect.
        let mut held: Vec<_> = (0..3).map(|_| w.alloc(&mut ha, T3, A)).collect();
        w.a.collect(Some(&mut ha));
        b.join().unwrap();
        w.reclaim(&mut ha, &mut held, T3, &[p, q], 6);
        w.free_all(&mut ha, held, T3, A);
        w.a.detach(&mut ha);
        w.assert_all_returned();
    });
}

/// **Remote frees both ways.** A and B each allocate two blocks with their
/// own heap and hand them to the other; each frees the other's blocks (remote
/// frees into the other's heap, which may have detached and been abandoned by
/// then; the second push finds the list non-empty, so only the list's own
/// Release/Acquire orders it) while allocating through its own slow path
/// (which drains its transfer list), then frees what it holds and detaches.
/// Checks: each block is reused only after the other thread's writes and
/// free, never while live; after both detach and a collect, every page is
/// back.
#[test]
fn remote_free_both_ways() {
    model("remote_free_both_ways", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let (mut ha, mut hb) = (World::<TinyGeo>::heap(), World::<TinyGeo>::heap());
        let pa = [w.alloc(&mut ha, T3, A), w.alloc(&mut ha, T3, A)].map(Ptr);
        let pb = [w.alloc(&mut hb, T3, B), w.alloc(&mut hb, T3, B)].map(Ptr);
        let side = move |w: &World<TinyGeo>, h: &mut LocalHeap, theirs: [Ptr; 2], who: u64| {
            for p in theirs {
                w.free(h, p.get(), T3, who);
            }
            let held: Vec<_> = (0..3).map(|_| w.alloc(h, T3, who)).collect();
            w.free_all(h, held, T3, who);
            w.a.detach(h);
        };
        let b = {
            let w = w.clone();
            thread::spawn(move || side(&w, &mut hb, pa, B))
        };
        side(&w, &mut ha, pb, A);
        b.join().unwrap();
        w.assert_all_returned();
    });
}

// ----------------------------------------------------------------------
// 2. Two remote freers racing onto one list
// ----------------------------------------------------------------------

/// **Two remote freers, one list.** A hands one block each to B and C, which
/// free them at the same time: their CASes race on A's transfer list for the
/// class, and on raising its flag, while A allocates and collects. Checks:
/// both blocks come back, each exactly once and after its freer's writes;
/// nothing is lost.
#[test]
fn two_remote_freers() {
    model("two_remote_freers", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let mut ha = World::<TinyGeo>::heap();
        let (p, q) = (w.alloc(&mut ha, T3, A), w.alloc(&mut ha, T3, A));
        let freer = |x: *mut u8, who: u64| {
            let (w, x) = (w.clone(), Ptr(x));
            thread::spawn(move || w.free_detached(x.get(), T3, who))
        };
        let (b, c) = (freer(p, B), freer(q, C));
        let mut held: Vec<_> = (0..3).map(|_| w.alloc(&mut ha, T3, A)).collect();
        w.a.collect(Some(&mut ha));
        b.join().unwrap();
        c.join().unwrap();
        w.reclaim(&mut ha, &mut held, T3, &[p, q], 6);
        w.free_all(&mut ha, held, T3, A);
        w.a.detach(&mut ha);
        w.assert_all_returned();
    });
}

// ----------------------------------------------------------------------
// 3. Mid transfer with a drain budget
// ----------------------------------------------------------------------

/// **Mid transfer, drained on a budget.** Two producers free Mid blocks of
/// two classes into the owner's transfer lists while the owner allocates
/// both classes with `drain_budget = 1` and no ring (every Mid allocation is
/// a slow path that returns at most one remote free): a list taken over
/// budget waits on the owner's pending list, and the flags of lists not
/// taken are raised again. Checks: every block freed by a producer reaches
/// the owner after the producer's writes, and none is lost (every page
/// returns once the owner detaches).
#[test]
fn mid_transfer_budget() {
    model("mid_transfer_budget", || {
        let config = Config { drain_budget: 1, mid_ring: 0, mid_lifo_max: 0, ..CONFIG };
        let w = World::<MidGeo>::new(config);
        let mut ho = World::<MidGeo>::heap();
        let (x1, x2, y) = (w.alloc(&mut ho, M4, A), w.alloc(&mut ho, M4, A), w.alloc(&mut ho, M3, A));
        let p1 = {
            let (w, x1, y) = (w.clone(), Ptr(x1), Ptr(y));
            thread::spawn(move || {
                w.free_detached(x1.get(), M4, B);
                w.free_detached(y.get(), M3, B);
            })
        };
        let p2 = {
            let (w, x2) = (w.clone(), Ptr(x2));
            thread::spawn(move || w.free_detached(x2.get(), M4, C))
        };
        let mut m4 = vec![w.alloc(&mut ho, M4, A)];
        let m3 = vec![w.alloc(&mut ho, M3, A)];
        m4.push(w.alloc(&mut ho, M4, A));
        p1.join().unwrap();
        p2.join().unwrap();
        w.free_all(&mut ho, m4, M4, A);
        w.free_all(&mut ho, m3, M3, A);
        w.a.detach(&mut ho);
        w.assert_all_returned();
    });
}

// ----------------------------------------------------------------------
// 4. TinyHeap delta and flush against the emptiness decision
// ----------------------------------------------------------------------

/// **TinyHeap delta/flush.** The owner hands out every block of a span (one
/// to R, who frees it remotely), frees and reallocates through its bin (the
/// delta: blocks in the bin count as in use by the span), allocates past the
/// span, frees, collects and detaches with one block still live, then frees
/// that one without a heap. R's free races with every one of the owner's
/// "is this span empty?" decisions (span retire, and with no span cache and
/// no segment reserve, the segment's release). Checks: the span's memory is
/// never released while a block in it is live (every live block is checked
/// against the source's regions before each use), and it is released once
/// all are free.
#[test]
fn tiny_heap_delta_flush() {
    model("tiny_heap_delta_flush", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let mut ho = World::<TinyGeo>::heap();
        let (a, b, c) = (w.alloc(&mut ho, T3, A), w.alloc(&mut ho, T3, A), w.alloc(&mut ho, T3, A));
        let r = {
            let (w, a) = (w.clone(), Ptr(a));
            thread::spawn(move || w.free_detached(a.get(), T3, B))
        };
        w.free(&mut ho, b, T3, A);
        let x = w.alloc(&mut ho, T3, A);
        let y = w.alloc(&mut ho, T3, A);
        w.free(&mut ho, x, T3, A);
        w.free(&mut ho, y, T3, A);
        w.a.collect(Some(&mut ho));
        w.a.detach(&mut ho);
        w.check_live(c, T3);
        w.free_detached(c, T3, A);
        r.join().unwrap();
        w.assert_all_returned();
        assert!(!w.a.source().contains(c.addr(), 1), "the span was not released once all its blocks were free");
    });
}

// ----------------------------------------------------------------------
// 5. Thread exit: abandon, free into, adopt or collect
// ----------------------------------------------------------------------

/// The thread-exit scenario: O allocates two blocks of a span, hands one to
/// F, frees the other and detaches (its heap is abandoned while F's block is
/// live) while F frees its block into the heap and T, a third thread, runs
/// `third`.
fn thread_exit(third: fn(&World<TinyGeo>)) {
    let w = World::<TinyGeo>::new(CONFIG);
    let mut ho = World::<TinyGeo>::heap();
    let (a, b) = (w.alloc(&mut ho, T3, A), w.alloc(&mut ho, T3, A));
    let f = {
        let (w, b) = (w.clone(), Ptr(b));
        thread::spawn(move || w.free_detached(b.get(), T3, B))
    };
    let t = {
        let w = w.clone();
        thread::spawn(move || third(&w))
    };
    w.free(&mut ho, a, T3, A);
    w.a.detach(&mut ho);
    f.join().unwrap();
    t.join().unwrap();
    w.assert_all_returned();
}

/// **Thread exit, adoption.** As [`thread_exit`]; T attaches a new local
/// heap (adopting O's heap if it is abandoned by then, else a fresh one),
/// allocates, frees and detaches. Checks: whoever holds O's heap (O while it
/// flushes, T after adopting it) has it alone (the heap's owner-only state
/// and its spans' descriptors are loom cells, ordered only by the heap
/// pool's lock); blocks freed by O or F are reused by T only after those
/// frees; nothing is lost.
#[test]
fn thread_exit_adopt() {
    model("thread_exit_adopt", || {
        thread_exit(|w| {
            let mut ht = World::<TinyGeo>::heap();
            let x = w.alloc(&mut ht, T3, C);
            w.free(&mut ht, x, T3, C);
            w.a.detach(&mut ht);
        })
    });
}

/// **Thread exit, collection.** As [`thread_exit`]; T calls `collect(None)`,
/// which takes an abandoned heap with remote frees flagged, drains it and
/// puts it back. Checks as for adoption: the collector holds the heap alone,
/// F's block returns to its span exactly once, and every page comes back.
#[test]
fn thread_exit_collect() {
    model("thread_exit_collect", || thread_exit(|w| w.a.collect(None)));
}

// ----------------------------------------------------------------------
// 6. The remote mask
// ----------------------------------------------------------------------

/// A Tiny class with eight blocks per one-page span on `TinyGeo`.
const T8: usize = 32;

/// **Remote mask.** B frees blocks of two classes into A's heap (two lists,
/// two flags in the mask) while A drains with `drain_budget = 1`: a drain
/// takes the mask, returns one block and must raise again the flags of the
/// lists it did not take; then A collects. Checks the mask's invariant
/// (a non-empty list has its flag set, except while its owner is between
/// the two swaps) through its consequence: no list is stranded, every block
/// comes back and every page returns.
#[test]
fn remote_mask() {
    model("remote_mask", || {
        let w = World::<TinyGeo>::new(Config { drain_budget: 1, ..CONFIG });
        let mut ha = World::<TinyGeo>::heap();
        let (p, s) = (w.alloc(&mut ha, T3, A), w.alloc(&mut ha, T8, A));
        let b = {
            let (w, p, s) = (w.clone(), Ptr(p), Ptr(s));
            thread::spawn(move || {
                w.free_detached(p.get(), T3, B);
                w.free_detached(s.get(), T8, B);
            })
        };
        // Two blocks left in the T3 bin, then a slow path (budget 1).
        let mut held: Vec<_> = (0..3).map(|_| w.alloc(&mut ha, T3, A)).collect();
        w.a.collect(Some(&mut ha));
        b.join().unwrap();
        w.reclaim(&mut ha, &mut held, T3, &[p], 6);
        w.free_all(&mut ha, held, T3, A);
        w.a.detach(&mut ha);
        w.assert_all_returned();
    });
}

// ----------------------------------------------------------------------
// 7. The Large cache (mutex-protected)
// ----------------------------------------------------------------------

/// **Large cache.** F frees a Large block (its region goes to the
/// mutex-protected Large cache) while T allocates a Large block of the same
/// size (taking that region from the cache if it is there by then, and
/// rewriting its header) and the main thread runs `collect(None)`, which
/// empties the cache and releases its regions. Checks: a region is never
/// released while its block is live, nor twice (the source would panic); the
/// header of a region that changes hands is only touched under the cache
/// lock's ordering (loom cells); F's writes happen-before T's reuse; every
/// region returns.
#[test]
fn large_cache() {
    const L: usize = 2000;
    model("large_cache", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let mut h = World::<TinyGeo>::heap();
        let p = w.alloc(&mut h, L, A);
        assert!(!h.is_attached(), "a Large allocation needs no heap");
        let f = {
            let (w, p) = (w.clone(), Ptr(p));
            thread::spawn(move || w.free_detached(p.get(), L, B))
        };
        let t = {
            let w = w.clone();
            thread::spawn(move || {
                let mut h = World::<TinyGeo>::heap();
                let x = w.alloc(&mut h, L, C);
                w.free_detached(x, L, C);
            })
        };
        w.a.collect(None);
        f.join().unwrap();
        t.join().unwrap();
        w.assert_all_returned();
    });
}

// ----------------------------------------------------------------------
// 8. The page pool (mutex-protected)
// ----------------------------------------------------------------------

/// **Page pool, one segment shared by three heaps.** The pool is a
/// mutex-protected list of segments with free-page masks, so what matters is
/// what crosses it: two heaps whose spans share a segment free their blocks
/// and detach at once, each giving its span back (the last one makes the
/// segment empty and, with no reserve, releases it), while a third heap
/// takes a span, possibly from the same segment. Checks: the segment header
/// (free mask, links) and the descriptors of a span that changes hands are
/// only touched under the pool lock's ordering (loom cells); a block is
/// never in released memory, and never zeroed by the purge of a free page
/// (its tags); every page returns.
#[test]
fn pool_shared_segment() {
    model("pool_shared_segment", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let (mut h1, mut h2) = (World::<TinyGeo>::heap(), World::<TinyGeo>::heap());
        let (p1, p2) = (w.alloc(&mut h1, T8, A), w.alloc(&mut h2, T8, A));
        let exit = |mut h: Box<LocalHeap>, p: *mut u8| {
            let (w, p) = (w.clone(), Ptr(p));
            thread::spawn(move || {
                w.free(&mut h, p.get(), T8, A);
                w.a.detach(&mut h);
            })
        };
        let (o1, o2) = (exit(h1, p1), exit(h2, p2));
        let o3 = {
            let w = w.clone();
            thread::spawn(move || {
                let mut h = World::<TinyGeo>::heap();
                let x = w.alloc(&mut h, T8, C);
                w.free(&mut h, x, T8, C);
                w.a.detach(&mut h);
            })
        };
        o1.join().unwrap();
        o2.join().unwrap();
        o3.join().unwrap();
        // The first span back found the segment still in use and was purged
        // (zeroed) at once, racing with the other heaps' live blocks.
        assert!(w.a.stats().bytes_purged > 0, "the model no longer races purging");
        w.assert_all_returned();
    });
}

// ----------------------------------------------------------------------
// 9. The shared heap (mutex-protected)
// ----------------------------------------------------------------------

/// **Shared heap.** Threads without a heap allocate through the allocator's
/// shared heap (a `LocalHeap` behind a lock). The main thread takes the whole
/// first span through it; B frees two of those blocks (remote frees into the
/// shared heap, the second onto a non-empty list) while C allocates two
/// blocks through the shared heap, whose slow path drains the remote frees
/// and may hand both straight back. Checks: the shared heap's owned state and
/// span descriptors are touched only under the lock's ordering (loom cells);
/// a block comes back only after B's writes and free, never while live, and
/// with its contents intact.
#[test]
fn shared_heap() {
    model("shared_heap", || {
        let w = World::<TinyGeo>::new(CONFIG);
        let held: Vec<_> = (0..3).map(|_| w.alloc_shared(T3, A)).collect();
        let b = {
            let (w, p, q) = (w.clone(), Ptr(held[0]), Ptr(held[1]));
            thread::spawn(move || {
                w.free_detached(p.get(), T3, B);
                w.free_detached(q.get(), T3, B);
            })
        };
        let c = {
            let w = w.clone();
            thread::spawn(move || {
                let (x, y) = (w.alloc_shared(T3, C), w.alloc_shared(T3, C));
                w.free_detached(x, T3, C);
                w.free_detached(y, T3, C);
            })
        };
        b.join().unwrap();
        c.join().unwrap();
        let y = w.alloc_shared(T3, A);
        w.free_detached(y, T3, A);
        w.free_detached(held[2], T3, A);
        // The shared heap stays attached (its bin may hold blocks), so only
        // the blocks themselves are checked here.
        assert!(w.shadow.slots.lock().unwrap().values().all(|s| !s.live));
    });
}
