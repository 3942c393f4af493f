//! Host tests of the bare-metal adapter: threads stand in for CPUs (each
//! thread's CPU id is a thread-local), and a static region stands in for RAM.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::mpsc;

use hakmem_baremetal::{BareMetal, Config, Fault, FaultKind, Geo, InterruptGuard, Tiny, Wide};

const SEG: usize = Geo::<Tiny>::SEGMENT_SIZE;

/// `bytes` of memory aligned to a segment, leaked (it becomes the region's).
fn region(bytes: usize) -> &'static mut [u8] {
    let layout = Layout::from_size_align(bytes, SEG).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: fresh, never freed: it lives for the rest of the test process.
    unsafe { std::slice::from_raw_parts_mut(p, bytes) }
}

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}
fn cpu_of_thread() -> usize {
    CPU.with(|c| c.get())
}

/// Operations per thread: fewer under Miri, which runs these tests too (its
/// data-race detector checks the slot flags and the core's remote frees).
const OPS: usize = if cfg!(miri) { 300 } else { 20_000 };
/// Bytes of the multi-threaded tests' regions.
const BIG: usize = if cfg!(miri) { 1 << 20 } else { 8 << 20 };

/// A small, fast xorshift generator: reproducible workloads.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A live block with the byte pattern written into it.
struct Block {
    ptr: *mut u8,
    layout: Layout,
    seed: u8,
}
// SAFETY: a block is plain memory handed from thread to thread.
unsafe impl Send for Block {}

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: the caller's block has `n` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}
fn check(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: as in `fill`.
        let b = unsafe { p.add(i).read() };
        assert_eq!(b, seed.wrapping_add(i as u8), "corrupted byte {i} of a {n}-byte block");
    }
}

fn new_block<A: GlobalAlloc>(a: &A, rng: &mut Rng, max: usize) -> Option<Block> {
    let size = 1 + rng.below(max);
    let align = 1 << rng.below(7);
    let layout = Layout::from_size_align(size, align).unwrap();
    // SAFETY: a non-zero size.
    let ptr = unsafe { a.alloc(layout) };
    if ptr.is_null() {
        return None;
    }
    assert_eq!(ptr.addr() % align, 0, "misaligned block");
    let seed = rng.next() as u8;
    fill(ptr, size, seed);
    Some(Block { ptr, layout, seed })
}

fn free_block<A: GlobalAlloc>(a: &A, b: Block) {
    check(b.ptr, b.layout.size(), b.seed);
    // SAFETY: a live block of `a` with its layout.
    unsafe { a.dealloc(b.ptr, b.layout) };
}

/// Random allocate/reallocate/free with content checks; some blocks are sent
/// to the next thread to free (remote frees). Returns successful operations.
fn workload<A: GlobalAlloc>(
    a: &A,
    seed: u64,
    ops: usize,
    max: usize,
    send: &mpsc::Sender<Block>,
    recv: &mpsc::Receiver<Block>,
) -> usize {
    let mut rng = Rng(seed | 1);
    let mut live: Vec<Block> = Vec::new();
    let mut done = 0;
    for _ in 0..ops {
        while let Ok(b) = recv.try_recv() {
            free_block(a, b);
            done += 1;
        }
        match rng.below(10) {
            0..=3 => {
                if let Some(b) = new_block(a, &mut rng, max) {
                    live.push(b);
                    done += 1;
                }
            }
            4..=5 if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len()));
                free_block(a, b);
                done += 1;
            }
            6 if !live.is_empty() => {
                let b = live.swap_remove(rng.below(live.len()));
                let _ = send.send(b);
            }
            7..=9 if !live.is_empty() => {
                let i = rng.below(live.len());
                let b = &mut live[i];
                let new = 1 + rng.below(max * 2);
                check(b.ptr, b.layout.size(), b.seed);
                // SAFETY: a live block of `a` with its layout.
                let q = unsafe { a.realloc(b.ptr, b.layout, new) };
                if !q.is_null() {
                    assert_eq!(q.addr() % b.layout.align(), 0);
                    check(q, b.layout.size().min(new), b.seed);
                    b.ptr = q;
                    b.layout = Layout::from_size_align(new, b.layout.align()).unwrap();
                    fill(q, new, b.seed);
                    done += 1;
                }
            }
            _ => {}
        }
    }
    for b in live {
        free_block(a, b);
    }
    done
}

/// Run `threads` threads on `a`, thread `i` on CPU `cpu(i)`, each sending
/// blocks to the next one to free.
fn run_threads<A: GlobalAlloc + Sync>(
    a: &'static A,
    threads: usize,
    cpu: fn(usize) -> usize,
    ops: usize,
    max: usize,
) -> usize {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel()).unzip();
    let mut handles = Vec::new();
    for (i, recv) in receivers.into_iter().enumerate() {
        let send = senders[(i + 1) % threads].clone();
        handles.push(std::thread::spawn(move || {
            CPU.with(|c| c.set(cpu(i)));
            let n = workload(a, 0x9e37_79b9 * (i as u64 + 1), ops, max, &send, &recv);
            drop(send);
            // Whatever is still on the way to us is ours to free: wait until
            // the previous thread is done sending (its sender is dropped).
            let mut rest = 0;
            for b in recv.iter() {
                free_block(a, b);
                rest += 1;
            }
            n + rest
        }));
    }
    drop(senders);
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// Allocate random sizes up to `max` until the first failure; returns the
/// bytes obtained, having freed everything again.
fn fill_until_full<A: GlobalAlloc>(a: &A, seed: u64, max: usize) -> usize {
    let mut rng = Rng(seed);
    let mut live = Vec::new();
    let mut bytes = 0;
    while let Some(b) = new_block(a, &mut rng, max) {
        bytes += b.layout.size();
        live.push(b);
    }
    for b in live {
        free_block(a, b);
    }
    bytes
}

#[test]
fn allocation_before_init_returns_null() {
    static A: BareMetal = BareMetal::new(hakmem_baremetal::cpu0);
    let l = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: a non-zero size.
    assert!(unsafe { A.alloc(l) }.is_null());
    // SAFETY: as above.
    assert!(unsafe { A.alloc(Layout::from_size_align(100_000, 8).unwrap()) }.is_null());
    assert_eq!(A.init(region(64 * 1024)), Ok(64 * 1024));
    // SAFETY: as above.
    let p = unsafe { A.alloc(l) };
    assert!(!p.is_null());
    // SAFETY: the block just allocated.
    unsafe { A.dealloc(p, l) };
}

#[test]
fn threads_as_cpus_with_remote_frees() {
    static A: BareMetal<4> = BareMetal::new(cpu_of_thread);
    A.init(region(BIG)).unwrap();
    let n = run_threads(&A, 4, |i| i, OPS, 3000);
    assert!(n > OPS * 2, "only {n} operations succeeded");
    A.collect();
    let s = A.stats();
    assert_eq!(s.large_live, 0, "a Large block leaked: {s:?}");
}

#[test]
fn more_threads_than_slots_share_the_fallback_path() {
    // Six threads on two slots, and ids out of range: busy slots and the
    // shared heap are exercised all the time.
    static A: BareMetal<2> = BareMetal::new(cpu_of_thread);
    A.init(region(BIG)).unwrap();
    let n = run_threads(&A, 6, |i| i % 3, OPS / 2, 1500);
    assert!(n > OPS * 3 / 2, "only {n} operations succeeded");
}

#[test]
fn exhaustion_returns_null_and_memory_comes_back() {
    static A: BareMetal = BareMetal::new(hakmem_baremetal::cpu0);
    A.init(region(64 * 1024)).unwrap();
    for max in [64, 700, 4000] {
        // The first fill after another size's leaves the heap in its steady
        // state for this size; from then on every fill must get the same.
        fill_until_full(&A, 7, max);
        let first = fill_until_full(&A, 7, max);
        // Every size class in use holds a span of its own (about eight blocks),
        // so a 64 KiB heap fills up long before its bytes do; see PORTING.md.
        assert!(first > 8 * 1024, "a 64 KiB heap gave only {first} B (max {max})");
        let fills: Vec<usize> = (0..6).map(|_| fill_until_full(&A, 7, max)).collect();
        // Layouts differ from fill to fill (what the bins hold when the heap
        // runs out), but the heap settles, and nothing is lost for good.
        let (lo, hi) = (*fills.iter().min().unwrap(), *fills.iter().max().unwrap());
        assert!(lo * 4 >= hi * 3, "fills vary too much (max {max}): {fills:?}");
        assert!(lo * 4 >= first * 3, "memory lost (max {max}): {first} then {fills:?}");
        // A leak would make every fill smaller than the one before.
        assert!(fills[3] == fills[5] || fills[2] == fills[4], "no steady state: {fills:?}");
    }

    // Bigger than the heap: null, not a crash.
    // SAFETY: a non-zero size.
    let p = unsafe { A.alloc(Layout::from_size_align(1 << 20, 8).unwrap()) };
    assert!(p.is_null());
}

#[test]
fn regions_added_later_are_used() {
    static A: BareMetal = BareMetal::new(hakmem_baremetal::cpu0);
    A.init(region(64 * 1024)).unwrap();
    let l = Layout::from_size_align(20_000, 8).unwrap();
    let mut live = Vec::new();
    loop {
        // SAFETY: a non-zero size.
        let p = unsafe { A.alloc(l) };
        if p.is_null() {
            break;
        }
        live.push(p);
    }
    let before = live.len();
    A.init(region(256 * 1024)).unwrap();
    loop {
        // SAFETY: as above.
        let p = unsafe { A.alloc(l) };
        if p.is_null() {
            break;
        }
        live.push(p);
    }
    assert!(live.len() >= before + 6, "{before} then {}", live.len());
    for p in live {
        // SAFETY: live blocks of `l`.
        unsafe { A.dealloc(p, l) };
    }
}

static DEPTH: AtomicIsize = AtomicIsize::new(0);
static MASKS: AtomicUsize = AtomicUsize::new(0);
fn mask() -> usize {
    MASKS.fetch_add(1, Ordering::Relaxed);
    DEPTH.fetch_add(1, Ordering::Relaxed) as usize
}
fn unmask(prev: usize) {
    let d = DEPTH.fetch_sub(1, Ordering::Relaxed);
    assert_eq!(d as usize, prev + 1, "guard calls not nested");
}

#[test]
fn interrupt_guard_wraps_locking_calls() {
    static A: BareMetal =
        BareMetal::new(hakmem_baremetal::cpu0).with_interrupt_guard(InterruptGuard { disable: mask, restore: unmask });
    A.init(region(256 * 1024)).unwrap();
    let l = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { A.alloc(l) };
    assert!(MASKS.load(Ordering::Relaxed) >= 1, "the slow path ran unmasked");
    // SAFETY: the block just allocated.
    unsafe { A.dealloc(p, l) };
    let before = MASKS.load(Ordering::Relaxed);
    // SAFETY: as above.
    let q = unsafe { A.alloc(l) };
    assert_eq!(q, p, "a fast-path allocation should reuse the freed block");
    assert_eq!(MASKS.load(Ordering::Relaxed), before, "the fast path masked interrupts");
    // SAFETY: as above.
    unsafe { A.dealloc(q, l) };
    assert_eq!(MASKS.load(Ordering::Relaxed), before + 1, "a free ran unmasked");
    assert_eq!(DEPTH.load(Ordering::Relaxed), 0);
}

fn fault_panics(f: Fault) -> ! {
    std::panic::panic_any(f)
}

#[test]
fn bad_frees_reach_the_fault_handler() {
    static A: BareMetal = BareMetal::new(hakmem_baremetal::cpu0).with_fault_handler(fault_panics);
    A.init(region(64 * 1024)).unwrap();
    let l = Layout::from_size_align(32, 8).unwrap();
    let mut foreign = [0u64; 4];
    let fp = foreign.as_mut_ptr().cast::<u8>();
    let r = std::panic::catch_unwind(|| {
        // SAFETY: deliberately wrong: the handler must catch it first.
        unsafe { A.dealloc(fp, l) }
    });
    let f = *r.unwrap_err().downcast::<Fault>().unwrap();
    assert_eq!(f.kind, FaultKind::NotOurs);
    // A Large block freed twice: its region is gone the second time.
    let big = Layout::from_size_align(40_000, 8).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { A.alloc(big) };
    assert!(!p.is_null());
    // SAFETY: the block just allocated.
    unsafe { A.dealloc(p, big) };
    let r = std::panic::catch_unwind(|| {
        // SAFETY: deliberately a double free.
        unsafe { A.dealloc(p, big) }
    });
    let f = *r.unwrap_err().downcast::<Fault>().unwrap();
    assert_eq!(f.addr, p.addr());
}

/// A configuration that differs from the adapter's only in its probe count.
const fn probes(n: u8) -> Config {
    Config { trylock_probes: n, ..hakmem_baremetal::CONFIG }
}

fn cpu5() -> usize {
    5
}

fn cpu_max() -> usize {
    usize::MAX
}

#[test]
fn a_cpu_id_of_usize_max_probes_without_overflow() {
    static A: BareMetal<3> = BareMetal::with_config(cpu_max, probes(3));
    A.init(region(256 * 1024)).unwrap();
    let l = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { A.alloc(l) };
    assert!(!p.is_null());
    // SAFETY: the block just allocated.
    unsafe { A.dealloc(p, l) };
    assert_eq!(A.fallback_calls(), 0, "two other slots were free");
}

#[test]
fn trylock_probes_zero_sends_every_call_to_the_fallback_path() {
    static A: BareMetal<2> = BareMetal::with_config(hakmem_baremetal::cpu0, probes(0));
    A.init(region(256 * 1024)).unwrap();
    let l = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { A.alloc(l) };
    assert!(!p.is_null());
    // SAFETY: the block just allocated.
    unsafe { A.dealloc(p, l) };
    assert_eq!(A.fallback_calls(), 2, "with no probe, the free slot 0 must not be used");
}

#[test]
fn trylock_probes_let_a_cpu_without_a_slot_take_another() {
    // CPU id 5 has no slot of its own on a two-slot allocator: with one probe
    // (its own, absent) it takes the fallback path; with two it tries slot 1.
    static ONE: BareMetal<2> = BareMetal::with_config(cpu5, probes(1));
    static TWO: BareMetal<2> = BareMetal::with_config(cpu5, probes(2));
    let l = Layout::from_size_align(64, 8).unwrap();
    for (a, fallbacks) in [(&ONE, 2), (&TWO, 0)] {
        a.init(region(256 * 1024)).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: the block just allocated.
        unsafe { a.dealloc(p, l) };
        assert_eq!(a.fallback_calls(), fallbacks);
    }
}

thread_local! {
    /// An "interrupt" to run once, inside the next masked section.
    static IRQ: Cell<Option<fn()>> = const { Cell::new(None) };
}
/// The guard's mask function: runs the armed interrupt, as if it had arrived
/// while the interrupted call held its CPU's slot.
fn mask_and_interrupt() -> usize {
    if let Some(f) = IRQ.with(|c| c.take()) {
        f();
    }
    0
}
fn restore_nothing(_: usize) {}

const IRQ_GUARD: InterruptGuard = InterruptGuard { disable: mask_and_interrupt, restore: restore_nothing };

#[test]
fn trylock_probes_decide_where_an_interrupt_on_a_busy_slot_goes() {
    // The first allocation takes the slow path, masked, while it holds slot
    // 0; the "interrupt" then allocates and frees on the same CPU. With one
    // probe it must use the fallback path; with two it takes slot 1.
    static ONE: BareMetal<2> =
        BareMetal::with_config(hakmem_baremetal::cpu0, probes(1)).with_interrupt_guard(IRQ_GUARD);
    static TWO: BareMetal<2> =
        BareMetal::with_config(hakmem_baremetal::cpu0, probes(2)).with_interrupt_guard(IRQ_GUARD);
    static TARGET: AtomicUsize = AtomicUsize::new(0);
    fn irq() {
        // SAFETY: TARGET holds the address of one of the statics above.
        let a = unsafe { &*(TARGET.load(Ordering::Relaxed) as *const BareMetal<2>) };
        let l = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        // SAFETY: the block just allocated.
        unsafe { a.dealloc(p, l) };
    }
    let l = Layout::from_size_align(64, 8).unwrap();
    for (a, fallbacks) in [(&ONE, 2), (&TWO, 0)] {
        a.init(region(256 * 1024)).unwrap();
        TARGET.store(std::ptr::from_ref(a).addr(), Ordering::Relaxed);
        IRQ.with(|c| c.set(Some(irq)));
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(l) };
        assert!(!p.is_null());
        assert!(IRQ.with(|c| c.get()).is_none(), "the interrupt did not run");
        assert_eq!(a.fallback_calls(), fallbacks, "where the interrupt's alloc and free went");
        // SAFETY: the block just allocated.
        unsafe { a.dealloc(p, l) };
        assert_eq!(a.fallback_calls(), fallbacks, "the outer free must use its own slot");
    }
}

#[test]
fn wide_geometry_with_threads_and_blocks_up_to_128_kib() {
    // Blocks up to 128 KiB come from spans in `Wide`; larger ones are Large.
    static A: BareMetal<2, Wide> = BareMetal::new(cpu_of_thread);
    let bytes = if cfg!(miri) { 2 << 20 } else { 16 << 20 };
    let layout = Layout::from_size_align(bytes, Geo::<Wide>::SEGMENT_SIZE).unwrap();
    // SAFETY: a non-zero size; never freed (the region's for good).
    let p = unsafe { std::alloc::alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: fresh memory that nothing else uses.
    assert_eq!(unsafe { A.init_raw(p, bytes) }, Ok(bytes));
    let n = run_threads(&A, 2, |i| i, OPS / 4, 150_000);
    assert!(n > OPS / 4, "only {n} operations succeeded");
    A.collect();
    assert_eq!(A.stats().large_live, 0, "a Large block leaked");
    // What the threads left cached comes back: a fill reaches at least a
    // third of the region (spans of the big classes leave much unused, see
    // docs/BENCHMARKS.md), and a second fill gets as far as the first.
    let first = fill_until_full(&A, 7, 100_000);
    let again = fill_until_full(&A, 7, 100_000);
    assert!(first > bytes / 3, "only {first} of {bytes} bytes before the first null");
    assert_eq!(first, again, "the second fill got a different share");
}
