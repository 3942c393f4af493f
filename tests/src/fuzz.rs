//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` (nightly,
//! libFuzzer) and by `tests/tests/fuzz_corpus.rs` (stable `cargo test`, over
//! the committed corpus and a seeded generator).
//!
//! Each body turns the input into a sequence of [`Action`]s with
//! `arbitrary` and runs it against a fresh allocator and a shadow model of
//! the live blocks: every block must be non-null (unless the source is
//! exhausted), aligned, inside the source's regions, disjoint from every
//! other live block, at least as usable as asked, and keep its contents until
//! it is freed; every free must succeed; at the end every page comes back.
//! The fuzz targets build the core with `check-invariants`, so the invariant
//! checkers and the exact double-free check run at every operation.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::collections::BTreeMap;
use std::sync::mpsc;

use arbitrary::{Arbitrary, Unstructured};
use hakmem_core::testing::{TestGeo, TestSource};
use hakmem_core::{Allocator, Config, Geo, Geometry, LocalHeap, PageSource, Purged, Reservation, Small};

/// One step of a fuzz input.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Action {
    /// Allocate: `tier` picks Tiny / Mid / Large / zero, `size` the size in
    /// it, `align` the log2 of the alignment (mostly small).
    Alloc {
        /// Tier selector.
        tier: u8,
        /// Size within the tier.
        size: u32,
        /// Alignment selector.
        align: u8,
        /// Zeroed allocation.
        zeroed: bool,
    },
    /// Reallocate the live block picked by `idx` to a size picked like Alloc's.
    Realloc {
        /// Which live block.
        idx: u16,
        /// Tier selector.
        tier: u8,
        /// Size within the tier.
        size: u32,
    },
    /// Free the live block picked by `idx`.
    Free {
        /// Which live block.
        idx: u16,
    },
    /// Hand the block to the second thread, which checks and frees it (a
    /// remote free).
    HandOff {
        /// Which live block.
        idx: u16,
    },
    /// Check the contents of a live block.
    Check {
        /// Which live block.
        idx: u16,
    },
    /// The thread leaves (its heap is detached) and comes back.
    Detach,
    /// Return what can be returned.
    Collect,
}

/// A block in the model.
struct Live {
    ptr: *mut u8,
    len: usize,
    align: usize,
    seed: u8,
}

// SAFETY: a `Live` is the only handle to its block; whoever holds it owns it.
unsafe impl Send for Live {}

fn fill(p: *mut u8, len: usize, seed: u8) {
    // Whole small blocks; the head and tail of big ones (keeps inputs fast).
    for i in (0..len.min(4096)).chain(len.saturating_sub(4096).max(4096)..len) {
        // SAFETY: `i < len`, the block's size.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn verify(p: *mut u8, len: usize, seed: u8) {
    verify_kept(p, len, len, seed)
}

/// Check the bytes `fill(p, len, seed)` wrote that lie below `keep`.
fn verify_kept(p: *mut u8, len: usize, keep: usize, seed: u8) {
    for i in (0..len.min(4096)).chain(len.saturating_sub(4096).max(4096)..len).filter(|&i| i < keep) {
        // SAFETY: `i < len`, the block's size.
        let v = unsafe { p.add(i).read() };
        assert_eq!(v, seed.wrapping_add(i as u8), "byte {i} of {p:p} ({len} bytes) changed");
    }
}

fn size_of<G: Geometry>(tier: u8, size: u32) -> usize {
    let size = size as usize;
    match tier % 8 {
        0..=3 => 1 + size % 1024,
        4 | 5 => 1025 + size % (Geo::<G>::MID_MAX - 1024),
        6 => Geo::<G>::MID_MAX + size % (4 * Geo::<G>::SEGMENT_SIZE),
        _ => 0,
    }
}

fn align_of<G: Geometry>(a: u8) -> usize {
    match a % 16 {
        0..=9 => 8,
        10 | 11 => 16,
        12 | 13 => 1 << (a as usize / 16 % 13),
        14 => Geo::<G>::PAGE_SIZE,
        _ => Geo::<G>::SEGMENT_SIZE << (a as usize / 16 % 2),
    }
}

/// A source with a byte capacity: a tiny region that runs out, and gets
/// its bytes back when the allocator releases them.
pub struct CapSource {
    inner: TestSource,
    cap: usize,
    used: AtomicUsize,
}

impl CapSource {
    /// A source of at most `cap` bytes of regions at a time.
    pub fn new(page: usize, cap: usize) -> CapSource {
        CapSource { inner: TestSource::new(page), cap, used: AtomicUsize::new(0) }
    }
    fn contains(&self, addr: usize, len: usize) -> bool {
        self.inner.contains(addr, len)
    }
}

// SAFETY: every method forwards to `TestSource`, which keeps the contract;
// `reserve` only refuses more often.
unsafe impl PageSource for CapSource {
    fn reserve(&self, size: usize, align: usize) -> Option<Reservation> {
        let used = self.used.fetch_add(size, Ordering::Relaxed);
        if used + size > self.cap {
            self.used.fetch_sub(size, Ordering::Relaxed);
            return None;
        }
        let r = self.inner.reserve(size, align);
        if r.is_none() {
            self.used.fetch_sub(size, Ordering::Relaxed);
        }
        r
    }
    unsafe fn release(&self, base: NonNull<u8>, size: usize) {
        self.used.fetch_sub(size, Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { self.inner.release(base, size) }
    }
    unsafe fn purge(&self, ptr: NonNull<u8>, len: usize) -> Purged {
        // SAFETY: forwarded.
        unsafe { self.inner.purge(ptr, len) }
    }
    fn owns(&self, addr: usize) -> bool {
        self.inner.owns(addr)
    }
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
}

/// What the model needs of a source.
trait Regions: PageSource + Sync {
    fn holds(&self, addr: usize, len: usize) -> bool;
    /// Whether a null from the allocator is allowed (the source may run dry).
    fn may_fail(&self) -> bool;
}
impl Regions for TestSource {
    fn holds(&self, addr: usize, len: usize) -> bool {
        self.contains(addr, len)
    }
    fn may_fail(&self) -> bool {
        false
    }
}
impl Regions for CapSource {
    fn holds(&self, addr: usize, len: usize) -> bool {
        self.contains(addr, len)
    }
    fn may_fail(&self) -> bool {
        true
    }
}

struct Model<'a, S: Regions, G: Geometry> {
    a: &'a Allocator<S, G>,
    heap: Box<LocalHeap>,
    live: Vec<Live>,
    by_addr: BTreeMap<usize, usize>,
    seed: u8,
}

impl<S: Regions, G: Geometry> Model<'_, S, G> {
    fn admit(&self, p: *mut u8, len: usize, align: usize) {
        assert_eq!(p.addr() % align, 0, "{p:p} not aligned to {align}");
        let n = len.max(1);
        assert!(self.a.source().holds(p.addr(), n), "{p:p}+{n} outside every region");
        // SAFETY: a live block of ours.
        let usable = unsafe { self.a.usable_size(p) }.expect("usable_size of a live block");
        assert!(usable >= len, "usable {usable} < {len}");
        if let Some((&q, &i)) = self.by_addr.range(..p.addr() + n).next_back() {
            let l = &self.live[i];
            assert!(q + l.len.max(1) <= p.addr(), "{p:p}+{n} overlaps {q:#x}+{}", l.len);
        }
    }

    fn insert(&mut self, l: Live) {
        self.by_addr.insert(l.ptr.addr(), self.live.len());
        self.live.push(l);
    }

    fn take(&mut self, idx: u16) -> Option<Live> {
        if self.live.is_empty() {
            return None;
        }
        let i = idx as usize % self.live.len();
        let l = self.live.swap_remove(i);
        self.by_addr.remove(&l.ptr.addr());
        if i < self.live.len() {
            self.by_addr.insert(self.live[i].ptr.addr(), i);
        }
        Some(l)
    }

    fn step(&mut self, act: Action, to_b: &mpsc::Sender<Live>) {
        match act {
            Action::Alloc { tier, size, align, zeroed } => {
                let (len, align) = (size_of::<G>(tier, size), align_of::<G>(align));
                let Ok(l) = Layout::from_size_align(len, align) else { return };
                let p = if zeroed { self.a.alloc_zeroed(&mut self.heap, l) } else { self.a.alloc(&mut self.heap, l) };
                if p.is_null() {
                    assert!(self.a.source().may_fail(), "null for ({len}, {align})");
                    return;
                }
                self.admit(p, len, align);
                if zeroed {
                    verify_zero(p, len);
                }
                self.seed = self.seed.wrapping_add(1);
                fill(p, len, self.seed);
                self.insert(Live { ptr: p, len, align, seed: self.seed });
            }
            Action::Realloc { idx, tier, size } => {
                let Some(l) = self.take(idx) else { return };
                let n = size_of::<G>(tier, size);
                // SAFETY: a live block of ours, of `l.len` bytes.
                let q = unsafe { self.a.realloc(&mut self.heap, l.ptr, l.len, l.align, n) }.expect("realloc");
                if q.is_null() {
                    assert!(self.a.source().may_fail(), "realloc to {n} null");
                    verify(l.ptr, l.len, l.seed);
                    self.insert(l);
                    return;
                }
                verify_kept(q, l.len, n, l.seed);
                self.admit(q, n, l.align);
                fill(q, n, l.seed);
                self.insert(Live { ptr: q, len: n, align: l.align, seed: l.seed });
            }
            Action::Free { idx } => {
                let Some(l) = self.take(idx) else { return };
                verify(l.ptr, l.len, l.seed);
                // SAFETY: a live block of ours, freed once.
                unsafe { self.a.free(&mut self.heap, l.ptr) }.expect("free of a live block");
            }
            Action::HandOff { idx } => {
                if let Some(l) = self.take(idx) {
                    to_b.send(l).unwrap();
                }
            }
            Action::Check { idx } => {
                if !self.live.is_empty() {
                    let l = &self.live[idx as usize % self.live.len()];
                    verify(l.ptr, l.len, l.seed);
                }
            }
            Action::Detach => self.a.detach(&mut self.heap),
            Action::Collect => self.a.collect(Some(&mut self.heap)),
        }
    }
}

fn verify_zero(p: *mut u8, len: usize) {
    for i in (0..len.min(4096)).chain(len.saturating_sub(4096).max(4096)..len) {
        // SAFETY: `i < len`.
        assert_eq!(unsafe { p.add(i).read() }, 0, "byte {i} of a zeroed block of {len}");
    }
}

/// Run `actions` on `a`, with a second thread freeing what is handed to it.
fn run<S: Regions, G: Geometry>(a: &Allocator<S, G>, actions: &[Action]) {
    let (tx, rx) = mpsc::channel::<Live>();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The second thread has no heap of its own: every free is remote.
            let mut heap = Box::new(LocalHeap::new());
            for l in rx {
                verify(l.ptr, l.len, l.seed);
                // SAFETY: handed to us; a live block of `a`, freed once.
                unsafe { a.free(&mut heap, l.ptr) }.expect("remote free of a live block");
            }
        });
        let mut m = Model { a, heap: Box::new(LocalHeap::new()), live: Vec::new(), by_addr: BTreeMap::new(), seed: 0 };
        for &act in actions {
            m.step(act, &tx);
        }
        drop(tx);
        for l in std::mem::take(&mut m.live) {
            verify(l.ptr, l.len, l.seed);
            // SAFETY: live, freed once.
            unsafe { a.free(&mut m.heap, l.ptr) }.expect("free at the end");
        }
        a.detach(&mut m.heap);
    });
    a.collect(None);
    let st = a.stats();
    assert_eq!(st.pages_in_use, 0, "{st:?}");
    assert_eq!(st.large_live, 0, "{st:?}");
    assert_eq!(st.abandoned_heaps, 0, "{st:?}");
}

fn actions(data: &[u8]) -> Vec<Action> {
    let mut u = Unstructured::new(data);
    let mut v = Vec::new();
    while v.len() < 2000 {
        match Action::arbitrary(&mut u) {
            Ok(a) => v.push(a),
            Err(_) => break,
        }
        if u.is_empty() {
            break;
        }
    }
    v
}

/// Target `core`: the core over the test geometry (64 KiB segments), with
/// an unlimited source.
pub fn core_actions(data: &[u8]) {
    let a = Allocator::<TestSource, TestGeo>::new(TestSource::new(4096), Config::DEFAULT);
    run(&a, &actions(data));
}

/// Target `region`: the microcontroller geometry (32 KiB segments, 1 KiB
/// pages) over a region of 64 KiB to 512 KiB that runs out: allocations may
/// be null, nothing live is disturbed, and once everything is freed the
/// memory serves again.
pub fn region(data: &[u8]) {
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    let cap = (2 + *first as usize % 15) * Geo::<Small>::SEGMENT_SIZE;
    let a = Allocator::<CapSource, Small>::new(CapSource::new(1024, cap), Config::DEFAULT);
    run(&a, &actions(rest));
    // Later success: with every block freed and collected, the region
    // serves a Tiny and a Mid block again.
    let mut heap = Box::new(LocalHeap::new());
    for size in [64usize, 2000] {
        let p = a.alloc(&mut heap, Layout::from_size_align(size, 8).unwrap());
        assert!(!p.is_null(), "no recovery for {size} in a {cap}-byte region");
        // SAFETY: live, freed once.
        unsafe { a.free(&mut heap, p) }.unwrap();
    }
    a.detach(&mut heap);
}

/// Run `body` over every input of the committed corpus
/// `fuzz/corpus/<target>/` (which keeps the input of every finding), then
/// over `seeds` inputs from [`random_input`]: how stable `cargo test` runs a
/// fuzz target's body (here, and in `hakmem-cabi` for its `cabi` target).
pub fn replay(target: &str, body: impl Fn(&[u8]), seeds: u64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for path in files {
        eprintln!("{target}: {}", path.display());
        body(&std::fs::read(&path).unwrap());
    }
    for seed in 0..seeds {
        let len = 64 + (seed as usize * 97) % 4000;
        body(&random_input(seed, len));
    }
}

/// A deterministic input of `len` bytes for `seed` (xorshift64*).
pub fn random_input(seed: u64, len: usize) -> Vec<u8> {
    let mut r = crate::Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| r.next_u64() as u8).collect()
}
