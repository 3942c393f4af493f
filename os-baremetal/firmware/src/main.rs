//! hakmem-baremetal on a Cortex-M4 (QEMU mps2-an386).
//!
//! 1. Before `init`, both allocators return null.
//! 2. The global allocator gets a 64 KiB heap. While the SysTick interrupt
//!    allocates and frees from the same allocator (which has an interrupt
//!    guard): `Vec`, `BTreeMap` and `String` through `alloc`, then a random
//!    allocate / reallocate / free workload with every block's contents
//!    checked. Then exhaustion: null, and all the memory back after freeing.
//! 3. A second allocator (geometry `Compact`) gets a 1 MiB heap and runs the
//!    workload with blocks up to 30 000 B, through its `GlobalAlloc` methods;
//!    then exhaustion again.
//!
//! Results go out over semihosting; the program exits with status 0 only if
//! every check passed (a failed check, a panic or a fault exits non-zero).

#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write as _;
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use hakmem_baremetal::{BareMetal, Compact, InterruptGuard};

/// Mask interrupts; the token says whether they were enabled.
fn irq_disable() -> usize {
    let was_enabled = cortex_m::register::primask::read().is_active();
    cortex_m::interrupt::disable();
    was_enabled as usize
}

fn irq_restore(was_enabled: usize) {
    if was_enabled != 0 {
        // SAFETY: interrupts were enabled when the matching `irq_disable`
        // ran, and this call ends that masked section.
        unsafe { cortex_m::interrupt::enable() };
    }
}

const GUARD: InterruptGuard = InterruptGuard { disable: irq_disable, restore: irq_restore };

#[global_allocator]
static SMALL: BareMetal = BareMetal::new(hakmem_baremetal::cpu0).with_interrupt_guard(GUARD);

/// The 1 MiB heap uses the geometry meant for heaps of a MiB or more.
static BIG: BareMetal<1, Compact> = BareMetal::new(hakmem_baremetal::cpu0).with_interrupt_guard(GUARD);

/// Heap memory aligned to a segment (of either geometry), so none of it is
/// lost to alignment.
#[repr(C, align(65536))]
struct Heap<const N: usize>([u8; N]);

static mut HEAP_64K: Heap<{ 64 * 1024 }> = Heap([0; 64 * 1024]);
static mut HEAP_1M: Heap<{ 1024 * 1024 }> = Heap([0; 1024 * 1024]);

static FAILURES: AtomicU32 = AtomicU32::new(0);

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            FAILURES.fetch_add(1, Ordering::Relaxed);
            hprintln!("FAIL: {}", format_args!($($msg)+));
        }
    };
}

/// xorshift32: a reproducible workload.
struct Rng(u32);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
}

fn fill(p: *mut u8, n: usize, seed: u8) {
    for i in 0..n {
        // SAFETY: the caller's block has `n` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

fn intact(p: *mut u8, n: usize, seed: u8) -> bool {
    // SAFETY: the caller's block has `n` bytes.
    (0..n).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

#[derive(Clone, Copy)]
struct Live {
    ptr: *mut u8,
    size: usize,
    align: usize,
    seed: u8,
}

const SLOTS: usize = 256;

/// What one workload run did.
#[derive(Default)]
struct Tally {
    allocs: u32,
    reallocs: u32,
    frees: u32,
    failed_allocs: u32,
    peak_bytes: usize,
}

/// Random allocate / reallocate / free on `a` over `slots` live blocks at
/// most, sizes up to `max`, with content checks; every
/// block must lie inside `[lo, hi)`. Bookkeeping lives on the stack, so the
/// heap holds only the blocks under test.
#[allow(clippy::too_many_arguments)]
fn workload(a: &dyn GlobalAlloc, seed: u32, ops: u32, max: usize, slots: usize, lo: usize, hi: usize) -> Tally {
    let mut rng = Rng(seed);
    let mut live = [Live { ptr: core::ptr::null_mut(), size: 0, align: 1, seed: 0 }; SLOTS];
    let mut t = Tally::default();
    let mut bytes = 0usize;
    let in_heap = |p: *mut u8, n: usize| p.addr() >= lo && p.addr() + n <= hi;
    for _ in 0..ops {
        let s = &mut live[rng.below(slots.min(SLOTS))];
        if s.ptr.is_null() {
            let size = 1 + rng.below(max);
            let align = 1 << rng.below(7);
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc(layout) };
            if p.is_null() {
                t.failed_allocs += 1;
                continue;
            }
            check!(p.addr() % align == 0, "block {p:p} not aligned to {align}");
            check!(in_heap(p, size), "block {p:p}+{size} outside the heap");
            let seed = rng.next() as u8;
            fill(p, size, seed);
            *s = Live { ptr: p, size, align, seed };
            t.allocs += 1;
            bytes += size;
            t.peak_bytes = t.peak_bytes.max(bytes);
        } else if rng.below(3) == 0 {
            check!(intact(s.ptr, s.size, s.seed), "block {:p} corrupted", s.ptr);
            let new = 1 + rng.below(max);
            let layout = Layout::from_size_align(s.size, s.align).unwrap();
            // SAFETY: a live block of `a` with this layout.
            let q = unsafe { a.realloc(s.ptr, layout, new) };
            if q.is_null() {
                t.failed_allocs += 1;
                continue;
            }
            check!(q.addr() % s.align == 0, "realloc {q:p} misaligned");
            check!(in_heap(q, new), "realloc {q:p}+{new} outside the heap");
            check!(intact(q, s.size.min(new), s.seed), "realloc lost contents");
            fill(q, new, s.seed);
            bytes = bytes - s.size + new;
            t.peak_bytes = t.peak_bytes.max(bytes);
            s.ptr = q;
            s.size = new;
            t.reallocs += 1;
        } else {
            check!(intact(s.ptr, s.size, s.seed), "block {:p} corrupted", s.ptr);
            let layout = Layout::from_size_align(s.size, s.align).unwrap();
            // SAFETY: a live block of `a` with this layout.
            unsafe { a.dealloc(s.ptr, layout) };
            bytes -= s.size;
            s.ptr = core::ptr::null_mut();
            t.frees += 1;
        }
    }
    for s in live.iter().filter(|s| !s.ptr.is_null()) {
        check!(intact(s.ptr, s.size, s.seed), "block {:p} corrupted", s.ptr);
        // SAFETY: a live block of `a` with this layout.
        unsafe { a.dealloc(s.ptr, Layout::from_size_align(s.size, s.align).unwrap()) };
    }
    t
}

/// Blocks `fill_until_null` keeps at most.
const FILL_CAP: usize = 4096;

/// Allocate blocks of `size` until the first null (or `FILL_CAP` blocks);
/// free them; return the count.
fn fill_until_null(a: &dyn GlobalAlloc, size: usize) -> usize {
    let layout = Layout::from_size_align(size, 8).unwrap();
    let mut blocks = [core::ptr::null_mut::<u8>(); FILL_CAP];
    let mut n = 0;
    while n < blocks.len() {
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(layout) };
        if p.is_null() {
            break;
        }
        blocks[n] = p;
        n += 1;
    }
    for &p in &blocks[..n] {
        // SAFETY: live blocks of `layout`.
        unsafe { a.dealloc(p, layout) };
    }
    n
}

fn report_fill(heap: &str, n: usize, size: usize) {
    if n == FILL_CAP {
        hprintln!("{} heap: {} blocks of {} B and no null yet (the test's cap)", heap, n, size);
    } else {
        hprintln!("{} heap: {} blocks of {} B before null", heap, n, size);
    }
}

fn collections(lo: usize, hi: usize) {
    // The collections allocate through `#[global_allocator]`: their buffers
    // must lie in the 64 KiB heap, or something else is serving them.
    let inside = |p: *const u8| (lo..hi).contains(&p.addr());
    let mut v: Vec<u32> = Vec::new();
    for i in 0..2000 {
        v.push(i * 3);
    }
    check!(inside(v.as_ptr().cast()), "Vec buffer at {:p}, outside the hakmem heap", v.as_ptr());
    check!(v.iter().enumerate().all(|(i, &x)| x == i as u32 * 3), "Vec contents");
    v.retain(|x| x % 2 == 0);
    v.shrink_to_fit();
    check!(v.len() == 1000, "Vec::retain kept {}", v.len());

    let mut m: BTreeMap<u32, String> = BTreeMap::new();
    for i in 0..300u32 {
        let mut s = String::new();
        let _ = write!(s, "value-{}-{}", i, i * i);
        m.insert(i.wrapping_mul(2_654_435_761) % 10_007, s);
    }
    for i in (0..300u32).step_by(2) {
        m.remove(&(i.wrapping_mul(2_654_435_761) % 10_007));
    }
    let ok = (0..300u32).all(|i| {
        let k = i.wrapping_mul(2_654_435_761) % 10_007;
        match m.get(&k) {
            Some(s) => i % 2 == 1 && s.starts_with("value-") && s.ends_with(&alloc::format!("-{}", i * i)),
            None => i % 2 == 0,
        }
    });
    check!(ok && m.len() == 150, "BTreeMap contents ({} entries)", m.len());

    let mut s = String::new();
    for w in ["hakmem", " on", " a", " Cortex-M4"] {
        s.push_str(w);
    }
    let one = s.len();
    s = s.repeat(50);
    check!(inside(s.as_ptr()), "String buffer at {:p}, outside the hakmem heap", s.as_ptr());
    let boxed = alloc::boxed::Box::new(m);
    check!(inside((&raw const *boxed).cast()), "Box outside the hakmem heap");
    check!(
        one == 21 && s.len() == 21 * 50 && s.starts_with("hakmem on a Cortex-M4hakmem"),
        "String ({} bytes)",
        s.len()
    );
}

// ---- The interrupt side: SysTick allocates and frees too. ----

static IRQ_ALLOCS: AtomicU32 = AtomicU32::new(0);
static IRQ_FAILS: AtomicU32 = AtomicU32::new(0);
/// A block the handler keeps from one interrupt to the next (0: none).
static IRQ_KEPT: AtomicU32 = AtomicU32::new(0);
const IRQ_LAYOUT: Layout = match Layout::from_size_align(96, 8) {
    Ok(l) => l,
    Err(_) => panic!(),
};

#[exception]
fn SysTick() {
    let n = IRQ_ALLOCS.load(Ordering::Relaxed);
    // Small messages, as an interrupt handler would allocate.
    let size = 8 + (n as usize * 24) % 120;
    let layout = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: a non-zero size.
    let p = unsafe { SMALL.alloc(layout) };
    if p.is_null() {
        // The heap may be full of the main workload's blocks: allowed.
        return;
    }
    fill(p, size, n as u8);
    if !intact(p, size, n as u8) {
        IRQ_FAILS.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: the block just allocated.
    unsafe { SMALL.dealloc(p, layout) };
    // Keep one block across interrupts, freed by the next one.
    let kept = IRQ_KEPT.swap(0, Ordering::Relaxed) as usize as *mut u8;
    if !kept.is_null() {
        if !intact(kept, IRQ_LAYOUT.size(), 0x5a) {
            IRQ_FAILS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the block a previous interrupt allocated with this layout.
        unsafe { SMALL.dealloc(kept, IRQ_LAYOUT) };
    } else {
        // SAFETY: a non-zero size.
        let q = unsafe { SMALL.alloc(IRQ_LAYOUT) };
        if !q.is_null() {
            fill(q, IRQ_LAYOUT.size(), 0x5a);
            IRQ_KEPT.store(q.addr() as u32, Ordering::Relaxed);
        }
    }
    IRQ_ALLOCS.fetch_add(1, Ordering::Relaxed);
}

#[entry]
fn main() -> ! {
    let one = Layout::from_size_align(16, 8).unwrap();
    // SAFETY: a non-zero size.
    check!(unsafe { SMALL.alloc(one) }.is_null(), "allocation before init");
    // SAFETY: as above.
    check!(unsafe { BIG.alloc(one) }.is_null(), "allocation before init (1 MiB)");

    // SAFETY: the heaps are used only here, once, to hand them over.
    let (h64, h1m) = unsafe { (&mut (*addr_of_mut!(HEAP_64K)).0, &mut (*addr_of_mut!(HEAP_1M)).0) };
    let (lo64, hi64) = (h64.as_ptr().addr(), h64.as_ptr().addr() + h64.len());
    let (lo1m, hi1m) = (h1m.as_ptr().addr(), h1m.as_ptr().addr() + h1m.len());
    let got64 = SMALL.init(h64);
    let got1m = BIG.init(h1m);
    check!(got64 == Ok(64 * 1024), "64 KiB heap: init gave {got64:?}");
    check!(got1m == Ok(1024 * 1024), "1 MiB heap: init gave {got1m:?}");
    hprintln!("hakmem-baremetal on Cortex-M4: heaps of {:?} and {:?} bytes", got64, got1m);
    hprintln!(
        "allocator statics: {} B (Tiny, 1 CPU), {} B (Compact, 1 CPU)",
        core::mem::size_of_val(&SMALL),
        core::mem::size_of_val(&BIG)
    );

    // SysTick every 2000 core cycles (QEMU's mps2 clock: 25 MHz).
    let mut cp = cortex_m::Peripherals::take().unwrap();
    cp.SYST.set_clock_source(SystClkSource::Core);
    cp.SYST.set_reload(2_000);
    cp.SYST.clear_current();
    cp.SYST.enable_interrupt();
    cp.SYST.enable_counter();

    collections(lo64, hi64);
    hprintln!("64 KiB heap: Vec, BTreeMap and String done");
    let t = workload(&SMALL, 0x1234_5678, 30_000, 600, 64, lo64, hi64);
    hprintln!(
        "64 KiB heap: {} allocs, {} reallocs, {} frees, {} out-of-memory, peak {} B live",
        t.allocs,
        t.reallocs,
        t.frees,
        t.failed_allocs,
        t.peak_bytes
    );
    check!(t.allocs > 5_000 && t.frees > 5_000, "64 KiB workload did too little");

    cp.SYST.disable_interrupt();
    cp.SYST.disable_counter();
    let kept = IRQ_KEPT.swap(0, Ordering::Relaxed) as usize as *mut u8;
    if !kept.is_null() {
        // SAFETY: the interrupt's block, with its layout.
        unsafe { SMALL.dealloc(kept, IRQ_LAYOUT) };
    }
    let irq = IRQ_ALLOCS.load(Ordering::Relaxed);
    hprintln!("SysTick handler: {} rounds of alloc/free during the run", irq);
    check!(irq > 100, "the interrupt handler hardly ran ({irq})");
    check!(IRQ_FAILS.load(Ordering::Relaxed) == 0, "interrupt blocks corrupted");

    // Exhaustion: null (no crash), and every byte comes back.
    let huge = Layout::from_size_align(100 * 1024, 8).unwrap();
    // SAFETY: a non-zero size.
    check!(unsafe { SMALL.alloc(huge) }.is_null(), "100 KiB from a 64 KiB heap");
    for size in [24, 200, 1500, 9000] {
        let first = fill_until_null(&SMALL, size);
        let again = fill_until_null(&SMALL, size);
        report_fill("64 KiB", first, size);
        check!(first > 0 && first == again, "{size} B: {first} then {again} blocks");
    }

    let t = workload(&BIG, 0x0bad_cafe, 30_000, 30_000, 64, lo1m, hi1m);
    hprintln!(
        "1 MiB heap: {} allocs, {} reallocs, {} frees, {} out-of-memory, peak {} B live",
        t.allocs,
        t.reallocs,
        t.frees,
        t.failed_allocs,
        t.peak_bytes
    );
    check!(t.allocs > 5_000 && t.frees > 5_000, "1 MiB workload did too little");
    let s = BIG.stats();
    check!(s.large_live == 0, "1 MiB heap: {} Large blocks leaked", s.large_live);
    for size in [24, 200, 1500, 9000, 30_000] {
        let first = fill_until_null(&BIG, size);
        let again = fill_until_null(&BIG, size);
        report_fill("1 MiB", first, size);
        check!(first > 0 && first == again, "{size} B: {first} then {again} blocks");
    }

    let (a, b) = (SMALL.stats(), BIG.stats());
    hprintln!("metadata: {} pages of 1 KiB (64 KiB heap), {} pages of 4 KiB (1 MiB heap)", a.meta_pages, b.meta_pages);

    // A build with HAKMEM_FIRMWARE_FORCE_FAIL set fails here: it shows that a
    // failed check reaches the exit status of run-qemu.sh (and CI).
    check!(option_env!("HAKMEM_FIRMWARE_FORCE_FAIL").is_none(), "forced failure (HAKMEM_FIRMWARE_FORCE_FAIL)");

    let failures = FAILURES.load(Ordering::Relaxed);
    if failures == 0 {
        hprintln!("firmware: all checks passed");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("firmware: {} checks FAILED", failures);
        debug::exit(debug::EXIT_FAILURE);
    }
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("firmware: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("firmware: HardFault at pc {:#x}", frame.pc());
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
