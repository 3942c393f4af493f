//! The C ABI fuzz target's body: `fuzz/fuzz_targets/cabi.rs` runs it under
//! libFuzzer (nightly), and this crate's tests run it over the committed
//! corpus (`fuzz/corpus/cabi/`) and seeded random inputs on stable.
//!
//! The input is read as a sequence of calls to the prefixed C and C++
//! functions with hostile arguments: sizes of 0, of every tier, beyond any
//! address space, near `SIZE_MAX` and `PTRDIFF_MAX`; `calloc` and
//! `reallocarray` products that overflow; alignments of 0, of every power of
//! two up to 2^63, and arbitrary non-powers of two; frees of pointers from
//! another allocator and of the stack (ignored, as `fault.rs` says); blocks
//! handed to another thread to be checked and freed; blocks outliving the
//! thread that allocated them. Each answer is checked against what C, POSIX,
//! glibc's documented choices and `abi.rs` promise:
//!
//! - a request that fits (sizes and alignments up to [`POSSIBLE`]) succeeds,
//!   aligned, disjoint from every live block, with at least the bytes asked
//!   for (`malloc_usable_size`, every usable byte writable), zeroed for
//!   `calloc`, keeping its contents until freed and across `realloc`;
//! - a request that cannot fit (from [`IMPOSSIBLE`] up, or an overflowing
//!   product) fails with `ENOMEM` (or returns it), leaving a `realloc`ed block
//!   intact; a bad alignment fails with `EINVAL` where the function says so;
//! - requests in between may go either way, but a success is checked as above;
//! - nothing panics or aborts, and every Large block is given back at the end
//!   of the input (when the caller asks for that check).

use core::ffi::c_void;
use core::ptr;
use std::collections::BTreeMap;
use std::sync::mpsc;

use crate::abi::*;
use crate::cxx::*;

/// Sizes and alignments up to this must be served.
pub const POSSIBLE: usize = 4 << 20;
/// Sizes and alignments from this up can never be served: beyond the largest
/// user address space of x86-64 and AArch64 (57 bits with five-level paging),
/// and above `PTRDIFF_MAX` from 2^63.
pub const IMPOSSIBLE: usize = 1 << 57;
/// Blocks longer than this have only their first and last `EDGE` bytes
/// filled and checked.
const WHOLE: usize = 64 << 10;
const EDGE: usize = 4 << 10;
/// At most this many live blocks in the model.
const MAX_LIVE: usize = 64;
/// At most this many short-lived allocating threads per input.
const MAX_THREADS: usize = 4;

/// How a block must be given back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `malloc` family: any `free`.
    C,
    /// `operator new`: `operator delete`.
    New,
    /// `operator new[]`: `operator delete[]`.
    NewArray,
    /// Aligned `operator new`.
    NewAligned(usize),
    /// Aligned `operator new[]`.
    NewArrayAligned(usize),
}

/// A block in the model.
#[derive(Clone, Copy, Debug)]
struct Block {
    ptr: *mut c_void,
    len: usize,
    seed: u8,
    kind: Kind,
}

// SAFETY: a `Block` is the only handle to its block; whoever holds it owns it.
unsafe impl Send for Block {}

/// What a request must do.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Succeed,
    Fail,
    Either,
}

fn expect(size: usize, align: usize) -> Expect {
    let big = size.max(align);
    if big <= POSSIBLE {
        Expect::Succeed
    } else if big >= IMPOSSIBLE {
        Expect::Fail
    } else {
        Expect::Either
    }
}

/// The input, read front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }

    /// A size: mostly ones that fit, in every tier; some hostile.
    fn size(&mut self) -> usize {
        match self.byte() % 16 {
            0 => 0,
            1..=5 => usize::from(self.u16()) % 1025,
            6..=9 => usize::from(self.u16()) * 2 + usize::from(self.byte() & 1),
            10 => self.u32() as usize % (POSSIBLE + 1),
            11 => usize::MAX - usize::from(self.byte()),
            12 => (isize::MAX as usize - usize::from(self.byte())).wrapping_add(usize::from(self.byte() % 4)),
            13 => (1usize << (57 + self.byte() % 7)).wrapping_add(usize::from(self.u16())).wrapping_sub(1 << 15),
            14 => (POSSIBLE + 1).wrapping_add(usize::from(self.u16())),
            _ => self.u64() as usize,
        }
    }

    /// An alignment: mostly small powers of two; some huge, zero, or not a
    /// power of two.
    fn align(&mut self) -> usize {
        match self.byte() % 8 {
            0..=3 => 1 << (self.byte() % 13),
            4 => 1 << (self.byte() % 64),
            5 => 0,
            6 => self.u64() as usize,
            _ => usize::from(self.byte()),
        }
    }
}

/// The byte at offset `i` of a block filled with `seed`.
fn pattern(seed: u8, i: usize) -> u8 {
    seed ^ (i as u8) ^ ((i >> 8) as u8).rotate_left(3)
}

/// The byte ranges of a block of `len` bytes that are filled and checked.
fn ranges(len: usize) -> [core::ops::Range<usize>; 2] {
    if len <= WHOLE { [0..len, len..len] } else { [0..EDGE, len - EDGE..len] }
}

/// Fill the checked ranges of `b`.
///
/// # Safety
/// `b.ptr` is a live block of at least `b.len` bytes.
unsafe fn fill(b: &Block) {
    let p = b.ptr.cast::<u8>();
    for r in ranges(b.len) {
        for i in r {
            // SAFETY: `i < b.len`.
            unsafe { p.add(i).write(pattern(b.seed, i)) };
        }
    }
}

/// Check the first `upto` bytes of `b`'s checked ranges (all of them for
/// `b.len`), at `at` (the block's current address).
///
/// # Safety
/// `at` is a live block holding at least `upto` bytes of `b`'s contents.
unsafe fn check(b: &Block, at: *mut c_void, upto: usize, what: &str) {
    let p = at.cast::<u8>();
    for r in ranges(b.len) {
        for i in r.start..r.end.min(upto) {
            // SAFETY: `i < upto`.
            let v = unsafe { p.add(i).read() };
            assert_eq!(v, pattern(b.seed, i), "{what}: byte {i} of a {}-byte block {at:p} changed", b.len);
        }
    }
}

/// Give `b` back the way its kind requires; `how` picks among the forms.
///
/// # Safety
/// `b` is a live block of ours, given up.
unsafe fn release(b: Block, how: u8) {
    let (p, n) = (b.ptr, b.len);
    // SAFETY: the caller's block, freed once, by a form matching its kind.
    unsafe {
        match (b.kind, how % 3) {
            (Kind::C, 0) => free(p),
            (Kind::C, 1) => free_sized(p, n),
            (Kind::C, _) => free_aligned_sized(p, 16, n),
            (Kind::New, 0) => delete(p),
            (Kind::New, 1) => delete_sized(p, n),
            (Kind::New, _) => delete_nothrow(p, ptr::null()),
            (Kind::NewArray, 0) => delete_array(p),
            (Kind::NewArray, 1) => delete_array_sized(p, n),
            (Kind::NewArray, _) => delete_array_nothrow(p, ptr::null()),
            (Kind::NewAligned(a), 0) => delete_aligned(p, a),
            (Kind::NewAligned(a), 1) => delete_sized_aligned(p, n, a),
            (Kind::NewAligned(a), _) => delete_aligned_nothrow(p, a, ptr::null()),
            (Kind::NewArrayAligned(a), 0) => delete_array_aligned(p, a),
            (Kind::NewArrayAligned(a), 1) => delete_array_sized_aligned(p, n, a),
            (Kind::NewArrayAligned(a), _) => delete_array_aligned_nothrow(p, a, ptr::null()),
        }
    }
}

/// The live blocks, and their address ranges for the disjointness check.
#[derive(Default)]
struct Model {
    live: Vec<Block>,
    spans: BTreeMap<usize, usize>,
    seed: u8,
}

impl Model {
    /// Record a fresh block: check its alignment, its usable size (writing
    /// every usable byte past `len`), that it overlaps no live block, and
    /// fill it. Zeroed blocks are checked to be zero first.
    ///
    /// # Safety
    /// `p` is a fresh non-null block of ours of at least `len` bytes.
    unsafe fn add(&mut self, p: *mut c_void, len: usize, align: usize, kind: Kind, zeroed: bool, what: &str) {
        assert!(!p.is_null());
        assert!(p.addr().is_multiple_of(align), "{what}: {p:p} is not {align}-aligned");
        // SAFETY: our live block.
        let usable = unsafe { malloc_usable_size(p) };
        assert!(usable >= len.max(1), "{what}: usable size {usable} < {len}");
        let start = p.addr();
        let end = start + usable;
        if let Some((&s, &e)) = self.spans.range(..end).next_back() {
            assert!(e <= start || s >= end, "{what}: [{start:#x}, {end:#x}) overlaps live [{s:#x}, {e:#x})");
        }
        self.spans.insert(start, end);
        let c = p.cast::<u8>();
        if zeroed {
            for r in ranges(len) {
                for i in r {
                    // SAFETY: `i < len`.
                    assert_eq!(unsafe { c.add(i).read() }, 0, "{what}: byte {i} of {len} not zeroed");
                }
            }
        }
        // Every usable byte is the program's: write the slack (up to a page
        // of it) and the last one.
        for i in len..usable.min(len + 4096) {
            // SAFETY: `i < usable`.
            unsafe { c.add(i).write(0xa5) };
        }
        // SAFETY: `usable - 1 < usable`.
        unsafe { c.add(usable - 1).write(0x5a) };
        self.seed = self.seed.wrapping_add(1);
        let b = Block { ptr: p, len, seed: self.seed, kind };
        // SAFETY: `len` bytes.
        unsafe { fill(&b) };
        self.live.push(b);
    }

    /// Take the live block picked by `i` out of the model, contents checked.
    fn take(&mut self, i: u8) -> Option<Block> {
        if self.live.is_empty() {
            return None;
        }
        let b = self.live.swap_remove(usize::from(i) % self.live.len());
        self.spans.remove(&b.ptr.addr()).expect("span of a live block");
        // SAFETY: a live block of `b.len` bytes.
        unsafe { check(&b, b.ptr, b.len, "take") };
        Some(b)
    }

    /// Put back a block taken out by [`take`](Self::take) and not given up
    /// (a `realloc` that failed).
    ///
    /// # Safety
    /// `b` is still a live block of ours.
    unsafe fn restore(&mut self, b: Block) {
        // SAFETY: the caller's live block.
        let usable = unsafe { malloc_usable_size(b.ptr) };
        self.spans.insert(b.ptr.addr(), b.ptr.addr() + usable);
        self.live.push(b);
    }

    /// No room for another block.
    fn full(&self) -> bool {
        self.live.len() >= MAX_LIVE
    }
}

/// Check the answer of an allocation that must or may fail: null and
/// `ENOMEM` (or `want_errno`) on failure.
fn failed(p: *mut c_void, e: Expect, want_errno: i32, what: &str) -> bool {
    if p.is_null() {
        assert_ne!(e, Expect::Succeed, "{what} failed");
        assert_eq!(errno(), want_errno, "{what}: errno");
        true
    } else {
        assert_ne!(e, Expect::Fail, "{what} returned {p:p}");
        false
    }
}

/// Run one input. With `exact`, also check that every Large block was given
/// back (only when nothing else in the process allocates Large blocks
/// meanwhile, as in the fuzz target).
pub fn c_abi(data: &[u8], exact: bool) {
    let large_before = crate::alloc().stats().large_live;
    let mut r = Input(data);
    let mut m = Model::default();
    let page = rustix::param::page_size();
    let (tx, rx) = mpsc::channel::<(Block, u8)>();
    // The second thread: checks the blocks handed to it and frees them
    // (remote frees), allocating a little of its own in between.
    let worker = std::thread::spawn(move || {
        for (b, how) in rx {
            // SAFETY: a live block, given up by the main thread.
            unsafe {
                check(&b, b.ptr, b.len, "hand-off");
                let own = malloc(usize::from(how) * 8);
                release(b, how);
                free(own);
            }
        }
    });
    let mut threads = 0;
    while !r.done() {
        let op = r.byte() % 16;
        if m.full() && op <= 8 {
            let how = r.byte();
            if let Some(b) = m.take(r.byte()) {
                // SAFETY: taken out of the model.
                unsafe { release(b, how) };
            }
            continue;
        }
        set_errno(0);
        // SAFETY: every call below gets either a live block of the model
        // (taken out of it first when the call gives it up), null, or a
        // pointer `fault.rs` defines the answer for.
        unsafe {
            match op {
                0 => {
                    let n = r.size();
                    let e = expect(n, 1);
                    let p = malloc(n);
                    if !failed(p, e, libc::ENOMEM, "malloc") {
                        m.add(p, n, malloc_align(n), Kind::C, false, "malloc");
                    }
                }
                1 => {
                    let k = if r.byte() % 4 == 0 { r.size() } else { usize::from(r.byte()) };
                    let n = r.size();
                    let e = k.checked_mul(n).map_or(Expect::Fail, |t| expect(t, 1));
                    let p = calloc(k, n);
                    if !failed(p, e, libc::ENOMEM, "calloc") {
                        let t = k * n;
                        m.add(p, t, malloc_align(t), Kind::C, true, "calloc");
                    }
                }
                2 | 3 => {
                    // realloc / reallocarray of a live block or of null.
                    let (k, n) = if op == 2 { (1, r.size()) } else { (usize::from(r.byte() % 9), r.size()) };
                    let total = k.checked_mul(n);
                    let e = total.map_or(Expect::Fail, |t| expect(t, 1));
                    let old = if r.byte() % 8 == 0 { None } else { m.take(r.byte()) };
                    // A C++ block is not for realloc: free it, realloc null.
                    let old = match old {
                        Some(b) if b.kind != Kind::C => {
                            release(b, 0);
                            None
                        }
                        old => old,
                    };
                    let p = old.map_or(ptr::null_mut(), |b| b.ptr);
                    let q = if op == 2 { realloc(p, n) } else { reallocarray(p, k, n) };
                    match (old, total) {
                        (Some(_), Some(0)) => assert!(q.is_null(), "realloc(p, 0) returned {q:p}"),
                        (Some(b), _) if q.is_null() => {
                            failed(q, e, libc::ENOMEM, "realloc");
                            check(&b, b.ptr, b.len, "failed realloc");
                            m.restore(b);
                        }
                        (Some(b), Some(t)) => {
                            assert_ne!(e, Expect::Fail, "realloc to {t} returned {q:p}");
                            check(&b, q, t.min(b.len), "realloc");
                            m.add(q, t, malloc_align(t), Kind::C, false, "realloc");
                        }
                        (None, _) => {
                            if !failed(q, e, libc::ENOMEM, "realloc(NULL)") {
                                let t = total.unwrap();
                                m.add(q, t, malloc_align(t), Kind::C, false, "realloc(NULL)");
                            }
                        }
                        (Some(_), None) => unreachable!("an overflowing reallocarray cannot succeed"),
                    }
                }
                4 => {
                    let (a, n) = (r.align(), r.size());
                    let sentinel = ptr::without_provenance_mut::<c_void>(0x1234_5670);
                    let mut out = sentinel;
                    let ret = posix_memalign(&mut out, a, n);
                    if !a.is_power_of_two() || !a.is_multiple_of(size_of::<usize>()) {
                        assert_eq!(ret, libc::EINVAL, "posix_memalign(align {a:#x})");
                        assert_eq!(out, sentinel, "posix_memalign wrote *memptr on EINVAL");
                    } else if ret == 0 {
                        assert_ne!(expect(n, a), Expect::Fail, "posix_memalign({a:#x}, {n:#x}) succeeded");
                        m.add(out, n, a.max(malloc_align(n)), Kind::C, false, "posix_memalign");
                    } else {
                        assert_eq!(ret, libc::ENOMEM, "posix_memalign({a:#x}, {n:#x})");
                        assert_ne!(expect(n, a), Expect::Succeed, "posix_memalign({a:#x}, {n:#x}) failed");
                        assert_eq!(out, sentinel, "posix_memalign wrote *memptr on ENOMEM");
                    }
                }
                5 => {
                    let (a, n) = (r.align(), r.size());
                    let p = aligned_alloc(a, n);
                    if !a.is_power_of_two() {
                        assert!(p.is_null() && errno() == libc::EINVAL, "aligned_alloc({a:#x}, {n})");
                    } else if !failed(p, expect(n, a), libc::ENOMEM, "aligned_alloc") {
                        m.add(p, n, a.max(malloc_align(n)), Kind::C, false, "aligned_alloc");
                    }
                }
                6 => {
                    let (a, n) = (r.align(), r.size());
                    let p = memalign(a, n);
                    if a > usize::MAX / 2 + 1 {
                        assert!(p.is_null() && errno() == libc::EINVAL, "memalign({a:#x}, {n})");
                    } else {
                        let a = a.next_power_of_two();
                        if !failed(p, expect(n, a), libc::ENOMEM, "memalign") {
                            m.add(p, n, a.max(malloc_align(n)), Kind::C, false, "memalign");
                        }
                    }
                }
                7 => {
                    let n = r.size();
                    if r.byte() % 2 == 0 {
                        let p = valloc(n);
                        if !failed(p, expect(n, page), libc::ENOMEM, "valloc") {
                            m.add(p, n, page, Kind::C, false, "valloc");
                        }
                    } else {
                        let rounded = n.max(1).checked_next_multiple_of(page);
                        let e = rounded.map_or(Expect::Fail, |t| expect(t, page));
                        let p = pvalloc(n);
                        if !failed(p, e, libc::ENOMEM, "pvalloc") {
                            m.add(p, rounded.unwrap(), page, Kind::C, false, "pvalloc");
                        }
                    }
                }
                8 => {
                    // C++: the throwing forms only with requests that fit
                    // (a failure would throw through this frame); the
                    // nothrow forms with anything.
                    let (which, n) = (r.byte() % 8, r.size());
                    let a = if which < 4 { 16 } else { r.align() };
                    let e = expect(n, a);
                    let fits = e == Expect::Succeed && a.is_power_of_two();
                    let (p, kind) = match which {
                        0 | 1 if fits => (new(n), Kind::New),
                        2 | 3 if fits => (new_array(n), Kind::NewArray),
                        0 | 2 => (new_nothrow(n, ptr::null()), Kind::New),
                        1 | 3 => (new_array_nothrow(n, ptr::null()), Kind::NewArray),
                        4 if fits => (new_aligned(n, a), Kind::NewAligned(a)),
                        5 if fits => (new_array_aligned(n, a), Kind::NewArrayAligned(a)),
                        4 | 6 => (new_aligned_nothrow(n, a, ptr::null()), Kind::NewAligned(a)),
                        _ => (new_array_aligned_nothrow(n, a, ptr::null()), Kind::NewArrayAligned(a)),
                    };
                    let align = if which < 4 { malloc_align(n) } else { a.max(malloc_align(n)) };
                    if p.is_null() {
                        assert!(e != Expect::Succeed || !a.is_power_of_two(), "operator new({n}, {a:#x}) failed");
                    } else {
                        assert!(e != Expect::Fail && a.is_power_of_two(), "operator new({n}, {a:#x}) = {p:p}");
                        m.add(p, n, align, kind, false, "operator new");
                    }
                }
                9 | 10 => {
                    let how = r.byte();
                    if let Some(b) = m.take(r.byte()) {
                        release(b, how);
                    }
                }
                11 => {
                    // Hand the block to the worker, which checks and frees it.
                    let how = r.byte();
                    if let Some(b) = m.take(r.byte()) {
                        tx.send((b, how)).expect("worker alive");
                    }
                }
                12 => {
                    // Check a block, and that its usable size still covers it.
                    if !m.live.is_empty() {
                        let b = m.live[usize::from(r.byte()) % m.live.len()];
                        check(&b, b.ptr, b.len, "check");
                        assert!(malloc_usable_size(b.ptr) >= b.len);
                    }
                }
                13 => {
                    // A thread allocates a few blocks and exits; they live on.
                    let sizes: Vec<usize> = (0..r.byte() % 4).map(|_| r.size()).collect();
                    if threads < MAX_THREADS && m.live.len() + sizes.len() <= MAX_LIVE {
                        threads += 1;
                        let got = std::thread::spawn(move || {
                            sizes
                                .into_iter()
                                .map(|n| {
                                    set_errno(0);
                                    let p = malloc(n);
                                    let ok = !failed(p, expect(n, 1), libc::ENOMEM, "malloc on a thread");
                                    (p.expose_provenance(), n, ok)
                                })
                                .collect::<Vec<_>>()
                        })
                        .join()
                        .expect("allocating thread");
                        for (a, n, ok) in got {
                            if ok {
                                m.add(
                                    ptr::with_exposed_provenance_mut(a),
                                    n,
                                    malloc_align(n),
                                    Kind::C,
                                    false,
                                    "thread",
                                );
                            }
                        }
                    }
                }
                14 => {
                    // Pointers that are not ours, and nulls: ignored.
                    let mut local = [0u64; 4];
                    let foreign = Box::into_raw(Box::new([7u8; 48]));
                    match r.byte() % 6 {
                        0 => free(local.as_mut_ptr().cast()),
                        1 => free(foreign.cast()),
                        2 => free(ptr::null_mut()),
                        3 => delete(ptr::null_mut()),
                        4 => assert_eq!(malloc_usable_size(ptr::null_mut()), 0),
                        _ => free_sized(ptr::null_mut(), usize::from(r.byte())),
                    }
                    assert_eq!(local, [0; 4]);
                    assert_eq!(*Box::from_raw(foreign), [7u8; 48], "a foreign block was written");
                }
                _ => {
                    malloc_trim(usize::from(r.byte()));
                }
            }
        }
    }
    let how = r.byte();
    for b in core::mem::take(&mut m.live) {
        // SAFETY: every live block, freed once.
        unsafe {
            check(&b, b.ptr, b.len, "end");
            release(b, how);
        }
    }
    drop(tx);
    worker.join().expect("worker");
    if exact {
        let after = crate::alloc().stats().large_live;
        assert_eq!(after, large_before, "Large blocks live before {large_before}, after freeing everything {after}");
    }
}
