//! The workloads. Each is generic over the allocator and returns the number
//! of allocator calls it made (every `alloc`, `dealloc` and `realloc` counts
//! one), which the tests check against a counting wrapper.
//!
//! Every call goes through a non-inlined shim ([`shim_alloc`] and friends),
//! as a Rust program's calls go through the `__rust_alloc` symbols: an
//! allocator written in Rust gets no advantage from being inlined into the
//! benchmark loop that a C allocator behind an `extern` call cannot have.
//!
//! Blocks are stamped when allocated (first word and last byte) and checked
//! when freed, so an allocator that hands out overlapping blocks or corrupts
//! a live one fails the run instead of going faster.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::cell::UnsafeCell;
use std::hint::black_box;
use std::thread;

use serde::{Deserialize, Serialize};

/// How much work a round does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// For the tests: a few milliseconds in a debug build.
    Test,
    /// The default: the whole suite in under a minute.
    Quick,
    /// Four times the quick work per round.
    Full,
}

impl Scale {
    /// Scale an iteration count given for `Quick`.
    pub fn n(self, quick: usize) -> usize {
        match self {
            Scale::Test => (quick / 64).max(1),
            Scale::Quick => quick,
            Scale::Full => quick * 4,
        }
    }

    /// Parse `test`, `quick` or `full`.
    pub fn parse(s: &str) -> Option<Scale> {
        match s {
            "test" => Some(Scale::Test),
            "quick" => Some(Scale::Quick),
            "full" => Some(Scale::Full),
            _ => None,
        }
    }

    /// The name [`parse`](Self::parse) accepts.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Test => "test",
            Scale::Quick => "quick",
            Scale::Full => "full",
        }
    }
}

/// A workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Larson with 8–64 B blocks.
    LarsonTiny,
    /// Larson with 2–32 KiB blocks.
    LarsonMid,
    /// 257–768 B, working set 256, 20k iterations per repetition.
    C6Heavy,
    /// 16–1024 B, working set 256, 20k iterations per repetition.
    Mixed,
    /// Producers allocate, consumers free.
    Xmalloc,
    /// Passive false sharing (Hoard's cache-scratch).
    CacheScratch,
    /// Active false sharing (Hoard's cache-thrash).
    CacheThrash,
    /// Vectors grown by doubling and strings by one byte, through every tier.
    ReallocGrowth,
    /// Short-lived threads allocate and exit; the next ones free their blocks.
    ThreadChurn,
    /// 64 KiB – 64 MiB blocks, every page touched.
    Large,
    /// Tiny and Mid alloc+free pairs (the callgrind workload).
    Fastpath,
}

/// Sizes and counts of the `fastpath` workload.
pub const FAST_TINY: usize = 32;
/// The Mid size of the `fastpath` workload.
pub const FAST_MID: usize = 4096;

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 11] = [
        Workload::LarsonTiny,
        Workload::LarsonMid,
        Workload::C6Heavy,
        Workload::Mixed,
        Workload::Xmalloc,
        Workload::CacheScratch,
        Workload::CacheThrash,
        Workload::ReallocGrowth,
        Workload::ThreadChurn,
        Workload::Large,
        Workload::Fastpath,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::LarsonTiny => "larson-tiny",
            Workload::LarsonMid => "larson-mid",
            Workload::C6Heavy => "c6-heavy",
            Workload::Mixed => "mixed",
            Workload::Xmalloc => "xmalloc",
            Workload::CacheScratch => "cache-scratch",
            Workload::CacheThrash => "cache-thrash",
            Workload::ReallocGrowth => "realloc-growth",
            Workload::ThreadChurn => "thread-churn",
            Workload::Large => "large",
            Workload::Fastpath => "fastpath",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// What the workload does, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::LarsonTiny => {
                "Larson, 8–64 B: each thread keeps 1000 slots and repeatedly frees a random slot and \
                 allocates a random size into it. With more than one thread, every thread hands its \
                 array to a new thread 4 times a round, so most frees are of blocks a dead thread \
                 allocated (cross-thread), as in the classic larson. One thread: no hand-off."
            }
            Workload::LarsonMid => "Larson, 2–32 KiB: as larson-tiny with 200 slots per thread.",
            Workload::C6Heavy => {
                "C6-heavy: each thread fills a working set of 256 blocks of 257–768 B, then 20k \
                 times frees a random one and allocates a random size in its place, then frees all; \
                 repeated. All frees local."
            }
            Workload::Mixed => "Mixed: as c6-heavy with sizes 16–1024 B.",
            Workload::Xmalloc => {
                "xmalloc: blocks of 8–512 B made in batches of 64 by one thread and freed by another \
                 (every free remote). t=1 runs one producer and one consumer thread; t=N runs N \
                 threads in a ring, each producing for the next and freeing what the previous made."
            }
            Workload::CacheScratch => {
                "cache-scratch (passive false sharing): the main thread allocates one 8 B object per \
                 worker and hands it over; each worker frees it, then repeatedly allocates an 8 B \
                 object, writes it 32 times and frees it. An allocator that gives the workers blocks \
                 on one cache line makes their writes fight."
            }
            Workload::CacheThrash => {
                "cache-thrash (active false sharing): each thread repeatedly allocates an 8 B object, \
                 writes it 32 times and frees it."
            }
            Workload::ReallocGrowth => {
                "realloc-growth: vectors grown by doubling from 8 B to 4 MiB, strings grown one byte \
                 at a time to 2 KiB and one to 136 KiB: through Tiny, Mid and Large. Contents are \
                 checked after every move."
            }
            Workload::ThreadChurn => {
                "thread-churn: generations of short-lived threads; each frees the 256 blocks \
                 (16–2048 B) a thread of the previous generation left, allocates 256 of its own, \
                 hands them on and exits."
            }
            Workload::Large => {
                "large: each thread keeps 4 slots of 64 KiB – 64 MiB blocks (log-uniform sizes), \
                 replacing a random one each step, writing every 4 KiB page of each new block."
            }
            Workload::Fastpath => {
                "fastpath: alloc+free pairs of one 32 B block (Tiny), then of one 4 KiB block (Mid): \
                 the allocator's fast paths and nothing else."
            }
        }
    }

    /// Whether every free is made by the thread that allocated the block and
    /// every size fits the speed-of-light floor, so the floor can run it.
    pub fn local_only(self, threads: usize) -> bool {
        match self {
            Workload::LarsonTiny | Workload::LarsonMid => threads == 1,
            Workload::C6Heavy | Workload::Mixed | Workload::CacheThrash | Workload::Fastpath => true,
            Workload::Xmalloc
            | Workload::CacheScratch
            | Workload::ReallocGrowth
            | Workload::ThreadChurn
            | Workload::Large => false,
        }
    }

    /// Run one round with `threads` threads; returns the allocator calls made.
    pub fn run<A: GlobalAlloc + Sync>(self, a: &A, threads: usize, scale: Scale) -> u64 {
        let threads = threads.max(1);
        match self {
            Workload::LarsonTiny => larson(a, threads, 8, 64, 1000, scale.n(1_200_000), 4, 0x11),
            Workload::LarsonMid => larson(a, threads, 2048, 32768, 200, scale.n(300_000), 4, 0x22),
            Workload::C6Heavy => working_set(a, threads, 257, 768, scale.n(60), 0x33),
            Workload::Mixed => working_set(a, threads, 16, 1024, scale.n(60), 0x44),
            Workload::Xmalloc => xmalloc(a, threads, scale.n(6_000)),
            Workload::CacheScratch => cache(a, threads, true, scale.n(1_000_000)),
            Workload::CacheThrash => cache(a, threads, false, scale.n(1_000_000)),
            Workload::ReallocGrowth => realloc_growth(a, threads, scale),
            Workload::ThreadChurn => thread_churn(a, threads, scale.n(256)),
            Workload::Large => large(a, threads, scale.n(12)),
            Workload::Fastpath => fastpath(a, threads, scale.n(500_000)),
        }
    }
}

// ---------------------------------------------------------------------------
// Calls into the allocator.

/// `a.alloc(layout)` behind a call boundary (see the module docs).
#[inline(never)]
pub fn shim_alloc<A: GlobalAlloc>(a: &A, layout: Layout) -> *mut u8 {
    // SAFETY: every layout the workloads make has a non-zero size.
    unsafe { a.alloc(layout) }
}

/// `a.dealloc(ptr, layout)` behind a call boundary.
///
/// # Safety
/// `ptr` is a live block of `a` allocated with `layout`.
#[inline(never)]
pub unsafe fn shim_dealloc<A: GlobalAlloc>(a: &A, ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded from the caller.
    unsafe { a.dealloc(ptr, layout) }
}

/// `a.realloc(ptr, layout, new_size)` behind a call boundary.
///
/// # Safety
/// `ptr` is a live block of `a` allocated with `layout`; `new_size` is non-zero.
#[inline(never)]
pub unsafe fn shim_realloc<A: GlobalAlloc>(a: &A, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
    // SAFETY: forwarded from the caller.
    unsafe { a.realloc(ptr, layout, new_size) }
}

/// The layout of every workload block: `size` bytes, 8-aligned.
#[inline(always)]
pub fn layout(size: usize) -> Layout {
    debug_assert!(size > 0 && size <= isize::MAX as usize / 2);
    // SAFETY: 8 is a power of two and sizes stay far below `isize::MAX`.
    unsafe { Layout::from_size_align_unchecked(size, 8) }
}

#[cold]
#[inline(never)]
fn oom(size: usize) -> ! {
    panic!("allocation of {size} bytes failed (null)");
}

#[cold]
#[inline(never)]
fn corrupt(ptr: *mut u8, size: usize) -> ! {
    panic!("block {ptr:p} of {size} bytes was changed while live: heap corruption");
}

/// A live block and its size.
#[derive(Clone, Copy, Debug)]
pub struct Block {
    ptr: *mut u8,
    pub(crate) size: usize,
}

// SAFETY: a block is plain memory; the workloads hand blocks between threads
// only through joins and release/acquire queues.
unsafe impl Send for Block {}
// SAFETY: as above; shared blocks are only read (copied) through `&`.
unsafe impl Sync for Block {}

impl Block {
    pub(crate) const EMPTY: Block = Block { ptr: core::ptr::null_mut(), size: 0 };
}

#[inline(always)]
fn tag(ptr: *mut u8, size: usize) -> u64 {
    (ptr as u64) ^ (size as u64).rotate_left(40) ^ 0x5bd1_e995_0000_0000
}

/// Allocate `size` (≥ 8) bytes and stamp them.
#[inline(always)]
pub(crate) fn new_block<A: GlobalAlloc>(a: &A, size: usize) -> Block {
    let ptr = shim_alloc(a, layout(size));
    if ptr.is_null() {
        oom(size)
    }
    let t = tag(ptr, size);
    // SAFETY: a fresh block of `size` ≥ 8 bytes, 8-aligned.
    unsafe {
        ptr.cast::<u64>().write(t);
        if size > 8 {
            ptr.add(size - 1).write(t as u8);
        }
    }
    Block { ptr, size }
}

/// Check a block's stamp and free it.
#[inline(always)]
pub(crate) fn free_block<A: GlobalAlloc>(a: &A, b: Block) {
    let t = tag(b.ptr, b.size);
    // SAFETY: a live block of `b.size` ≥ 8 bytes that we stamped.
    let ok = unsafe { b.ptr.cast::<u64>().read() == t && (b.size <= 8 || b.ptr.add(b.size - 1).read() == t as u8) };
    if !ok {
        corrupt(b.ptr, b.size)
    }
    // SAFETY: a live block of `a` with this layout.
    unsafe { shim_dealloc(a, b.ptr, layout(b.size)) }
}

/// xorshift64*: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n < 2^32).
    #[inline(always)]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform in `lo..=hi`.
    #[inline(always)]
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

/// Run `f(i)` for `i in 0..threads`: on this thread when `threads == 1`, else
/// each on a new scoped thread. Returns the sum.
pub(crate) fn per_thread<F: Fn(usize) -> u64 + Sync>(threads: usize, f: F) -> u64 {
    if threads == 1 {
        return f(0);
    }
    thread::scope(|s| {
        let f = &f;
        let hs: Vec<_> = (0..threads).map(|i| s.spawn(move || f(i))).collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).sum()
    })
}

fn fill<A: GlobalAlloc>(a: &A, arr: &mut Vec<Block>, n: usize, lo: usize, hi: usize, rng: &mut Rng) {
    for _ in 0..n {
        arr.push(new_block(a, rng.range(lo, hi)));
    }
}

fn churn<A: GlobalAlloc>(a: &A, arr: &mut [Block], iters: usize, lo: usize, hi: usize, rng: &mut Rng) {
    let n = arr.len();
    for _ in 0..iters {
        let i = rng.below(n);
        free_block(a, arr[i]);
        arr[i] = new_block(a, rng.range(lo, hi));
    }
}

pub(crate) fn drain<A: GlobalAlloc>(a: &A, arr: &mut Vec<Block>) {
    for b in arr.drain(..) {
        free_block(a, b);
    }
}

// ---------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn larson<A: GlobalAlloc + Sync>(
    a: &A,
    threads: usize,
    lo: usize,
    hi: usize,
    slots: usize,
    iters: usize,
    gens: usize,
    seed: u64,
) -> u64 {
    if threads == 1 {
        let mut rng = Rng::new(seed);
        let mut arr = Vec::with_capacity(slots);
        fill(a, &mut arr, slots, lo, hi, &mut rng);
        churn(a, &mut arr, iters, lo, hi, &mut rng);
        drain(a, &mut arr);
        return (2 * slots + 2 * iters) as u64;
    }
    let per_gen = iters.div_ceil(gens);
    let mut arrays: Vec<Vec<Block>> = (0..threads).map(|_| Vec::with_capacity(slots)).collect();
    for g in 0..gens {
        arrays = thread::scope(|s| {
            let hs: Vec<_> = arrays
                .into_iter()
                .enumerate()
                .map(|(i, mut arr)| {
                    s.spawn(move || {
                        let mut rng = Rng::new(seed ^ ((i * gens + g) as u64) << 8);
                        if g == 0 {
                            fill(a, &mut arr, slots, lo, hi, &mut rng);
                        }
                        churn(a, &mut arr, per_gen, lo, hi, &mut rng);
                        arr
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
        });
    }
    // The last generation's blocks, freed by this thread.
    for mut arr in arrays {
        drain(a, &mut arr);
    }
    (threads * (2 * slots + 2 * per_gen * gens)) as u64
}

const WS: usize = 256;
const WS_ITERS: usize = 20_000;

fn working_set<A: GlobalAlloc + Sync>(a: &A, threads: usize, lo: usize, hi: usize, reps: usize, seed: u64) -> u64 {
    per_thread(threads, |t| {
        let mut rng = Rng::new(seed ^ (t as u64) << 8);
        let mut arr = Vec::with_capacity(WS);
        for _ in 0..reps {
            fill(a, &mut arr, WS, lo, hi, &mut rng);
            churn(a, &mut arr, WS_ITERS, lo, hi, &mut rng);
            drain(a, &mut arr);
        }
        (reps * (2 * WS + 2 * WS_ITERS)) as u64
    })
}

// --- xmalloc ---------------------------------------------------------------

pub(crate) const BATCH: usize = 64;
const QCAP: usize = 64;

#[repr(align(128))]
struct Padded<T>(T);

/// A bounded single-producer single-consumer queue of batches.
pub(crate) struct Queue {
    slots: [UnsafeCell<[Block; BATCH]>; QCAP],
    head: Padded<AtomicUsize>,
    tail: Padded<AtomicUsize>,
}

// SAFETY: a slot is written only by the producer while `tail - head < QCAP`
// says the consumer is done with it, and read only by the consumer after the
// producer's release store of `tail`; the indices are atomics.
unsafe impl Sync for Queue {}

impl Queue {
    pub(crate) fn new() -> Queue {
        Queue {
            slots: core::array::from_fn(|_| UnsafeCell::new([Block::EMPTY; BATCH])),
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
        }
    }
    /// Producer side: room for a batch?
    pub(crate) fn can_push(&self) -> bool {
        let t = self.tail.0.load(Ordering::Relaxed);
        t - self.head.0.load(Ordering::Acquire) < QCAP
    }
    /// Producer side, after `can_push`.
    pub(crate) fn push(&self, batch: &[Block; BATCH]) {
        let t = self.tail.0.load(Ordering::Relaxed);
        // SAFETY: the consumer has released this slot (see `can_push`).
        unsafe { *self.slots[t % QCAP].get() = *batch };
        self.tail.0.store(t + 1, Ordering::Release);
    }
    /// Consumer side.
    pub(crate) fn pop(&self, out: &mut [Block; BATCH]) -> bool {
        let h = self.head.0.load(Ordering::Relaxed);
        if h == self.tail.0.load(Ordering::Acquire) {
            return false;
        }
        // SAFETY: the producer published this slot with its release store.
        *out = unsafe { *self.slots[h % QCAP].get() };
        self.head.0.store(h + 1, Ordering::Release);
        true
    }
}

pub(crate) fn snooze(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        core::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

fn produce<A: GlobalAlloc>(a: &A, rng: &mut Rng, batch: &mut [Block; BATCH]) {
    for b in batch.iter_mut() {
        *b = new_block(a, rng.range(8, 512));
    }
}

fn xmalloc<A: GlobalAlloc + Sync>(a: &A, threads: usize, batches: usize) -> u64 {
    if threads == 1 {
        let q = Queue::new();
        thread::scope(|s| {
            let q = &q;
            s.spawn(move || {
                let mut rng = Rng::new(0x55);
                let mut batch = [Block::EMPTY; BATCH];
                let mut spins = 0;
                for _ in 0..batches {
                    produce(a, &mut rng, &mut batch);
                    while !q.can_push() {
                        snooze(&mut spins);
                    }
                    q.push(&batch);
                }
            });
            s.spawn(move || {
                let mut batch = [Block::EMPTY; BATCH];
                let mut spins = 0;
                for _ in 0..batches {
                    while !q.pop(&mut batch) {
                        snooze(&mut spins);
                    }
                    for b in batch {
                        free_block(a, b);
                    }
                }
            });
        });
        return (2 * BATCH * batches) as u64;
    }
    let queues: Vec<Queue> = (0..threads).map(|_| Queue::new()).collect();
    let queues = &queues;
    per_thread(threads, |i| {
        let out = &queues[(i + 1) % threads];
        let inq = &queues[i];
        let mut rng = Rng::new(0x55 ^ (i as u64) << 8);
        let mut batch = [Block::EMPTY; BATCH];
        let (mut produced, mut consumed, mut spins) = (0, 0, 0);
        while produced < batches || consumed < batches {
            let mut progress = false;
            if produced < batches && out.can_push() {
                produce(a, &mut rng, &mut batch);
                out.push(&batch);
                produced += 1;
                progress = true;
            }
            if consumed < batches && inq.pop(&mut batch) {
                for b in batch {
                    free_block(a, b);
                }
                consumed += 1;
                progress = true;
            }
            if progress {
                spins = 0;
            } else {
                snooze(&mut spins);
            }
        }
        (2 * BATCH * batches) as u64
    })
}

// --- false sharing ---------------------------------------------------------

const CACHE_OBJ: usize = 8;
const CACHE_WRITES: usize = 32;

#[inline(always)]
fn hammer(b: Block) {
    let t = tag(b.ptr, b.size);
    for _ in 0..CACHE_WRITES {
        // SAFETY: a live 8-byte block; the stamp is rewritten unchanged.
        unsafe { b.ptr.cast::<u64>().write_volatile(t) };
    }
}

fn cache<A: GlobalAlloc + Sync>(a: &A, threads: usize, scratch: bool, iters: usize) -> u64 {
    let mut handed: Vec<Block> = Vec::new();
    if scratch {
        // The main thread allocates every worker's first object: neighbours.
        handed = (0..threads).map(|_| new_block(a, CACHE_OBJ)).collect();
    }
    let handed = &handed;
    let work = |i: usize| {
        let mut calls = 0;
        if scratch {
            let b = handed[i];
            hammer(b);
            free_block(a, b);
            calls += 1;
        }
        for _ in 0..iters {
            let b = new_block(a, CACHE_OBJ);
            hammer(b);
            free_block(a, b);
        }
        calls + 2 * iters as u64
    };
    let worker_calls = if scratch && threads == 1 {
        // Even alone, the worker is another thread than the allocating one.
        thread::scope(|s| s.spawn(|| work(0)).join().expect("worker panicked"))
    } else {
        per_thread(threads, work)
    };
    worker_calls + if scratch { threads as u64 } else { 0 }
}

// --- realloc ---------------------------------------------------------------

const DOUBLE_MAX: usize = 4 << 20;
const PLUS_ONE_SMALL: usize = 2048;
const PLUS_ONE_BIG: usize = 136 * 1024;

fn grow_by_doubling<A: GlobalAlloc>(a: &A, seed: u64) -> u64 {
    let mut size = 8;
    let ptr = shim_alloc(a, layout(size));
    if ptr.is_null() {
        oom(size)
    }
    let mut ptr = ptr;
    // SAFETY: 8 fresh bytes.
    unsafe { ptr.cast::<u64>().write(seed) };
    let mut calls = 1;
    while size < DOUBLE_MAX {
        let new = size * 2;
        // SAFETY: a live block of this layout.
        let q = unsafe { shim_realloc(a, ptr, layout(size), new) };
        if q.is_null() {
            oom(new)
        }
        calls += 1;
        // SAFETY: `q` holds `new` bytes, the first `size` copied from `ptr`.
        unsafe {
            if q.cast::<u64>().read() != seed || (size > 8 && q.add(size - 1).read() != 0xa5) {
                corrupt(q, new);
            }
            q.add(new - 1).write(0xa5);
        }
        ptr = q;
        size = new;
    }
    // SAFETY: a live block of this layout.
    unsafe { shim_dealloc(a, ptr, layout(size)) };
    calls + 1
}

fn grow_by_one<A: GlobalAlloc>(a: &A, to: usize) -> u64 {
    let mut ptr = shim_alloc(a, layout(1));
    if ptr.is_null() {
        oom(1)
    }
    // SAFETY: one fresh byte.
    unsafe { ptr.write(0) };
    for n in 1..to {
        // SAFETY: a live block of `n` bytes.
        let q = unsafe { shim_realloc(a, ptr, layout(n), n + 1) };
        if q.is_null() {
            oom(n + 1)
        }
        // SAFETY: `q` holds `n + 1` bytes, the first `n` copied.
        unsafe {
            if q.add(n - 1).read() != (n - 1) as u8 || q.add((n - 1) / 2).read() != ((n - 1) / 2) as u8 {
                corrupt(q, n + 1);
            }
            q.add(n).write(n as u8);
        }
        ptr = q;
    }
    // SAFETY: a live block of `to` bytes.
    unsafe { shim_dealloc(a, ptr, layout(to)) };
    (to + 1) as u64
}

fn realloc_growth<A: GlobalAlloc + Sync>(a: &A, threads: usize, scale: Scale) -> u64 {
    let vectors = scale.n(48);
    let strings = scale.n(192);
    per_thread(threads, |t| {
        let mut calls = 0;
        for v in 0..vectors {
            calls += grow_by_doubling(a, 0x1234_5678 ^ (t * vectors + v) as u64);
        }
        for _ in 0..strings {
            calls += grow_by_one(a, PLUS_ONE_SMALL);
        }
        calls + grow_by_one(a, PLUS_ONE_BIG)
    })
}

// --- thread churn ----------------------------------------------------------

const CHURN_BLOCKS: usize = 256;

fn thread_churn<A: GlobalAlloc + Sync>(a: &A, threads: usize, gens: usize) -> u64 {
    generations(a, threads, gens, CHURN_BLOCKS, 16, 2048)
}

/// `gens` generations of `threads` short-lived threads: each frees the
/// `blocks` blocks a thread of the previous generation left, allocates
/// `blocks` of its own (`lo..=hi` bytes), hands them on and exits; the
/// calling thread frees the last generation's. Returns the calls made.
pub(crate) fn generations<A: GlobalAlloc + Sync>(
    a: &A,
    threads: usize,
    gens: usize,
    blocks: usize,
    lo: usize,
    hi: usize,
) -> u64 {
    let mut carry: Vec<Vec<Block>> = (0..threads).map(|_| Vec::new()).collect();
    for g in 0..gens {
        carry = thread::scope(|s| {
            let hs: Vec<_> = carry
                .into_iter()
                .enumerate()
                .map(|(i, mut old)| {
                    s.spawn(move || {
                        drain(a, &mut old);
                        let mut rng = Rng::new(0x66 ^ ((g * threads + i) as u64) << 8);
                        fill(a, &mut old, blocks, lo, hi, &mut rng);
                        old
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
        });
    }
    for mut arr in carry {
        drain(a, &mut arr);
    }
    (2 * blocks * threads * gens) as u64
}

// --- large -----------------------------------------------------------------

const LARGE_MIN: usize = 64 << 10;
const LARGE_MAX: usize = 64 << 20;
const LARGE_SLOTS: usize = 4;

pub(crate) fn log_uniform(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
    ((l + u * (h - l)).exp() as usize).clamp(lo, hi)
}

fn large<A: GlobalAlloc + Sync>(a: &A, threads: usize, iters: usize) -> u64 {
    per_thread(threads, |t| {
        let mut rng = Rng::new(0x77 ^ (t as u64) << 8);
        let mut slots = [Block::EMPTY; LARGE_SLOTS];
        let mut calls = 0;
        for _ in 0..iters {
            let i = rng.below(LARGE_SLOTS);
            if !slots[i].ptr.is_null() {
                free_block(a, slots[i]);
                calls += 1;
            }
            let b = new_block(a, log_uniform(&mut rng, LARGE_MIN, LARGE_MAX));
            touch_pages(b);
            slots[i] = b;
            calls += 1;
        }
        for b in slots {
            if !b.ptr.is_null() {
                free_block(a, b);
                calls += 1;
            }
        }
        calls
    })
}

/// Write one byte in every 4 KiB page of `b` past its first (the stamps
/// touch the first and last), so the whole block is resident.
#[inline]
pub(crate) fn touch_pages(b: Block) {
    let mut off = 4096;
    while off < b.size.saturating_sub(1) {
        // SAFETY: inside the live block, clear of its stamps.
        unsafe { b.ptr.add(off).write_volatile(1) };
        off += 4096;
    }
}

// --- fast path ---------------------------------------------------------------

/// `pairs` alloc+free pairs of `size` bytes: nothing but the allocator's
/// fast path and the shim calls. The callgrind script subtracts a run of the
/// same loop over [`NullAlloc`] to remove the loop's own instructions.
pub fn pairs<A: GlobalAlloc>(a: &A, size: usize, pairs: usize) -> u64 {
    let l = layout(size);
    for _ in 0..pairs {
        let p = shim_alloc(a, l);
        if p.is_null() {
            oom(size)
        }
        // SAFETY: a live block of `l`.
        unsafe { shim_dealloc(a, black_box(p), l) };
    }
    2 * pairs as u64
}

fn fastpath<A: GlobalAlloc + Sync>(a: &A, threads: usize, n: usize) -> u64 {
    per_thread(threads, |_| pairs(a, FAST_TINY, n) + pairs(a, FAST_MID, n))
}

/// An "allocator" that hands out one static buffer and frees nothing: the
/// callgrind baseline, so a pair's count excludes the harness's loop.
pub struct NullAlloc;

#[repr(align(4096))]
struct NullBuf(#[allow(dead_code)] [u8; FAST_MID]);
static NULL_BUF: NullBuf = NullBuf([0; FAST_MID]);

// SAFETY: only for the fastpath baseline, which never writes its blocks nor
// holds two at once; it returns null for anything the buffer cannot hold.
unsafe impl GlobalAlloc for NullAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > FAST_MID || layout.align() > 4096 {
            return core::ptr::null_mut();
        }
        black_box(&raw const NULL_BUF).cast_mut().cast()
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        black_box(ptr);
    }
}
