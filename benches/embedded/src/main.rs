//! hakmem-baremetal against the embedded allocators (talc, rlsf,
//! linked_list_allocator), every one of them over the same fixed region of
//! 64 KiB, 1 MiB or 16 MiB:
//!
//! - **ra** — random actions, in the style talc publishes: each thread
//!   allocates (sizes 1..max, alignment 8 to 2048 with falling odds),
//!   reallocates (to 1..10·max) or frees at random, keeping about 300 blocks
//!   live, for a fixed time; the score is the number of *successful* actions.
//!   Maximum sizes 200, 1000, 3000, 10000 and 30000 B; 1 and 2 threads.
//! - **he** — heap efficiency: from a fresh allocator, allocate (70%), free
//!   (10%) and reallocate (20%) random sizes up to the maximum until the first
//!   allocation fails; the score is the requested bytes then live as a share
//!   of the region. Mean over several rounds; one thread.
//! - **wc** — cycles per operation (the time-stamp counter around each call)
//!   over a random-actions run of fixed length on one thread, repeated with
//!   the same operations: for each operation its fastest run (which filters
//!   out the machine's interruptions, since the allocators are deterministic),
//!   then the maximum, the 99.9th percentile and the mean over operations.
//!
//! Every pointer returned is checked to lie inside the region, so the
//! allocator under test is the one serving. Usage:
//! `cargo run --release -p hakmem-bench-embedded -- [ra] [he] [wc] [--quick]
//! [--only=NAME] [--trials=N] [--ms=N]`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hakmem_baremetal::{BareMetal, Compact, Geo, Geometry, Small, Tiny, Wide};

const REGIONS: [usize; 3] = [64 << 10, 1 << 20, 16 << 20];
const MAX_SIZES: [usize; 5] = [200, 1000, 3000, 10_000, 30_000];
/// The region's alignment: that of the largest segment tried here (`Wide`),
/// so no allocator loses bytes to aligning the region.
const REGION_ALIGN: usize = 1 << 18;
/// Blocks random actions keeps live at least (talc's choice).
const TARGET_LIVE: usize = 300;

type Dyn = Box<dyn GlobalAlloc + Sync>;

/// An allocator under test: a name and a constructor over `[base, base + size)`
/// for a given number of threads.
struct Contender {
    name: &'static str,
    /// The smallest region it can use (a hakmem geometry's segment).
    min_region: usize,
    /// # Safety
    /// The range is writable memory that nothing else uses while the
    /// returned allocator lives.
    make: unsafe fn(*mut u8, usize, usize) -> Dyn,
}

thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}
fn thread_cpu() -> usize {
    CPU.with(|c| c.get())
}

/// hakmem as it would be deployed for `threads` CPUs: one slot per thread
/// (a single-CPU build never calls the CPU-id function), and bitmaps for 4096
/// segments, so 16 MiB fits even 4 KiB segments.
unsafe fn make_hakmem<G: Geometry>(base: *mut u8, size: usize, threads: usize) -> Dyn {
    let a: Dyn = if threads == 1 {
        let a = Box::new(BareMetal::<1, G, 128>::new(thread_cpu));
        // SAFETY: forwarded from the caller.
        let got = unsafe { a.init_raw(base, size) }.expect("hakmem: region refused");
        assert_eq!(got, size, "the region is segment aligned");
        a
    } else {
        assert_eq!(threads, 2);
        let a = Box::new(BareMetal::<2, G, 128>::new(thread_cpu));
        // SAFETY: forwarded from the caller.
        let got = unsafe { a.init_raw(base, size) }.expect("hakmem: region refused");
        assert_eq!(got, size, "the region is segment aligned");
        a
    };
    a
}

type TalcLock = talc::TalcLock<spinning_top::RawSpinlock, talc::source::Manual>;
unsafe fn make_talc(base: *mut u8, size: usize, _threads: usize) -> Dyn {
    let t = TalcLock::new(talc::source::Manual);
    // SAFETY: forwarded from the caller.
    unsafe { t.lock().claim(base, size) }.expect("talc: claim failed");
    Box::new(t)
}

/// rlsf with the parameters talc's benchmark uses for it.
type Tlsf = rlsf::Tlsf<'static, usize, usize, { usize::BITS as usize - 12 }, { usize::BITS as usize }>;
struct Rlsf(spin::mutex::SpinMutex<Tlsf>);
// SAFETY: the pool is only reached through the lock.
unsafe impl Sync for Rlsf {}
// SAFETY: as above.
unsafe impl Send for Rlsf {}
// SAFETY: forwards to rlsf, which returns blocks of the layout or None.
unsafe impl GlobalAlloc for Rlsf {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().allocate(layout).map_or(std::ptr::null_mut(), NonNull::as_ptr)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: a block of this pool with this alignment.
        unsafe { self.0.lock().deallocate(NonNull::new_unchecked(ptr), layout.align()) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: a block of this pool; the new layout is valid (GlobalAlloc's contract).
        unsafe {
            self.0
                .lock()
                .reallocate(NonNull::new_unchecked(ptr), Layout::from_size_align_unchecked(new_size, layout.align()))
                .map_or(std::ptr::null_mut(), NonNull::as_ptr)
        }
    }
}
unsafe fn make_rlsf(base: *mut u8, size: usize, _threads: usize) -> Dyn {
    let mut t = Tlsf::new();
    let block = NonNull::slice_from_raw_parts(NonNull::new(base).unwrap(), size);
    // SAFETY: forwarded from the caller.
    unsafe { t.insert_free_block_ptr(block) }.expect("rlsf: pool refused");
    Box::new(Rlsf(spin::mutex::SpinMutex::new(t)))
}

unsafe fn make_lla(base: *mut u8, size: usize, _threads: usize) -> Dyn {
    let h = linked_list_allocator::LockedHeap::empty();
    // SAFETY: forwarded from the caller.
    unsafe { h.lock().init(base, size) };
    Box::new(h)
}

const CONTENDERS: &[Contender] = &[
    Contender { name: "hakmem Tiny 8K/1K", min_region: Geo::<Tiny>::SEGMENT_SIZE, make: make_hakmem::<Tiny> },
    Contender { name: "hakmem Small 32K/1K", min_region: Geo::<Small>::SEGMENT_SIZE, make: make_hakmem::<Small> },
    Contender { name: "hakmem Compact 64K/4K", min_region: Geo::<Compact>::SEGMENT_SIZE, make: make_hakmem::<Compact> },
    Contender { name: "hakmem Wide 256K/4K", min_region: Geo::<Wide>::SEGMENT_SIZE, make: make_hakmem::<Wide> },
    Contender { name: "talc", min_region: 0, make: make_talc },
    Contender { name: "rlsf", min_region: 0, make: make_rlsf },
    Contender { name: "linked_list_allocator", min_region: 0, make: make_lla },
];

/// xorshift64*: cheap and reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
    /// 8 << (trailing zeros of a random u16) / 2: 8 B usually, up to 2 KiB.
    fn align(&mut self) -> usize {
        8 << ((self.next() as u16).trailing_zeros() / 2)
    }
}

/// The memory every allocator is given (the first `size` bytes of it).
struct Region {
    base: *mut u8,
    size: usize,
}
// SAFETY: raw memory handed to one allocator at a time.
unsafe impl Sync for Region {}

impl Region {
    fn new(size: usize) -> Region {
        let layout = Layout::from_size_align(size, REGION_ALIGN).unwrap();
        // SAFETY: a non-zero size; never freed.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!base.is_null());
        Region { base, size }
    }
    fn check(&self, p: *mut u8, size: usize, layout_align: usize, who: &str) {
        let ok = p.addr() >= self.base.addr()
            && p.addr() + size <= self.base.addr() + self.size
            && p.addr().is_multiple_of(layout_align);
        assert!(ok, "{who} returned {p:p} (+{size}) outside the region or misaligned");
    }
}

/// One thread of random actions on `a` for `dur`; returns successful actions.
fn random_actions(a: &dyn GlobalAlloc, r: &Region, who: &str, max: usize, dur: Duration, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut v: Vec<(*mut u8, Layout)> = Vec::with_capacity(100_000);
    let mut score = 0u64;
    let start = Instant::now();
    while start.elapsed() < dur {
        for _ in 0..64 {
            let action = rng.below(5);
            if action == 4 {
                if !v.is_empty() {
                    let i = rng.below(v.len());
                    let (p, l) = v[i];
                    let new = 1 + rng.below(max * 10 - 1);
                    // SAFETY: a live block of `a` with layout `l`.
                    let q = unsafe { a.realloc(p, l, new) };
                    if !q.is_null() {
                        r.check(q, new, l.align(), who);
                        v[i] = (q, Layout::from_size_align(new, l.align()).unwrap());
                        score += 1;
                    }
                }
            } else if action < 2 || v.len() < TARGET_LIVE {
                let l = Layout::from_size_align(1 + rng.below(max - 1), rng.align()).unwrap();
                // SAFETY: a non-zero size.
                let p = unsafe { a.alloc(l) };
                if !p.is_null() {
                    r.check(p, l.size(), l.align(), who);
                    v.push((p, l));
                    score += 1;
                }
            } else {
                let (p, l) = v.swap_remove(rng.below(v.len()));
                // SAFETY: a live block of `a` with layout `l`.
                unsafe { a.dealloc(p, l) };
                score += 1;
            }
        }
    }
    for (p, l) in v {
        // SAFETY: as above.
        unsafe { a.dealloc(p, l) };
    }
    score
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

struct Opts {
    regions: Vec<usize>,
    maxes: Vec<usize>,
    quick: bool,
    only: Option<String>,
    trials: usize,
    ms: u64,
}

fn contenders(o: &Opts, region: usize) -> Vec<&'static Contender> {
    CONTENDERS
        .iter()
        .filter(|c| c.min_region <= region)
        .filter(|c| o.only.as_ref().is_none_or(|f| c.name.contains(f.as_str()) || c.name == "talc"))
        .collect()
}

fn bench_ra(r: &Region, o: &Opts) {
    println!("\n## Random actions: successful actions per second (median of {} trials of {} ms)\n", o.trials, o.ms);
    for threads in [1usize, 2] {
        for &size in &o.regions {
            println!("### {} KiB region, {threads} thread(s)\n", size >> 10);
            print!("| allocator |");
            for &m in &o.maxes {
                print!(" max {m} B |");
            }
            println!();
            println!("|---|{}", "---:|".repeat(o.maxes.len()));
            let mut talc_row = vec![0f64; o.maxes.len()];
            let mut rows = Vec::new();
            for c in contenders(o, size) {
                let mut row = vec![0f64; o.maxes.len()];
                for (k, &max) in o.maxes.iter().enumerate() {
                    let runs: Vec<f64> = (0..o.trials)
                        .map(|t| {
                            let reg = Region { base: r.base, size };
                            // SAFETY: the region is free: the previous allocator is gone.
                            let a = unsafe { (c.make)(reg.base, size, threads) };
                            let barrier = Barrier::new(threads);
                            let dur = Duration::from_millis(o.ms);
                            let total: u64 = std::thread::scope(|s| {
                                let hs: Vec<_> = (0..threads)
                                    .map(|i| {
                                        let (a, reg, barrier) = (&*a, &reg, &barrier);
                                        s.spawn(move || {
                                            CPU.with(|c| c.set(i));
                                            barrier.wait();
                                            let seed = 0x5eed ^ ((t as u64) << 8) ^ (i as u64 + 1);
                                            random_actions(a, reg, c.name, max, dur, seed)
                                        })
                                    })
                                    .collect();
                                hs.into_iter().map(|h| h.join().unwrap()).sum()
                            });
                            total as f64 / dur.as_secs_f64()
                        })
                        .collect();
                    row[k] = median(runs);
                }
                if c.name == "talc" {
                    talc_row = row.clone();
                }
                rows.push((c.name, row));
            }
            for (name, row) in rows {
                print!("| {name} |");
                for (k, v) in row.iter().enumerate() {
                    if name.starts_with("hakmem") && talc_row[k] > 0.0 {
                        print!(" {:.2} M ({:.2}× talc) |", v / 1e6, v / talc_row[k]);
                    } else {
                        print!(" {:.2} M |", v / 1e6);
                    }
                }
                println!();
            }
            println!();
        }
    }
}

/// Requested bytes live at the first failed allocation, as a share of the region.
fn efficiency_round(c: &Contender, r: &Region, size: usize, max: usize, seed: u64) -> f64 {
    // SAFETY: the region is free: the previous allocator is gone.
    let a = unsafe { (c.make)(r.base, size, 1) };
    let reg = Region { base: r.base, size };
    let mut rng = Rng(seed);
    let mut v: Vec<(*mut u8, Layout)> = Vec::new();
    let mut live = 0usize;
    loop {
        match rng.below(10) {
            0..=6 => {
                let l = Layout::from_size_align(1 + rng.below(max - 1), rng.align()).unwrap();
                // SAFETY: a non-zero size.
                let p = unsafe { a.alloc(l) };
                if p.is_null() {
                    break;
                }
                reg.check(p, l.size(), l.align(), c.name);
                live += l.size();
                v.push((p, l));
            }
            7 if !v.is_empty() => {
                let (p, l) = v.swap_remove(rng.below(v.len()));
                live -= l.size();
                // SAFETY: a live block of `a` with layout `l`.
                unsafe { a.dealloc(p, l) };
            }
            8..=9 if !v.is_empty() => {
                let i = rng.below(v.len());
                let (p, l) = v[i];
                let new = 1 + rng.below(max - 1);
                // SAFETY: a live block of `a` with layout `l`.
                let q = unsafe { a.realloc(p, l, new) };
                if !q.is_null() {
                    reg.check(q, new, l.align(), c.name);
                    live = live - l.size() + new;
                    v[i] = (q, Layout::from_size_align(new, l.align()).unwrap());
                }
            }
            _ => {}
        }
    }
    for (p, l) in v {
        // SAFETY: as above.
        unsafe { a.dealloc(p, l) };
    }
    live as f64 / size as f64
}

fn bench_he(r: &Region, o: &Opts) {
    println!("\n## Heap efficiency: % of the region live (requested bytes) at the first failed allocation\n");
    for &size in &o.regions {
        let rounds = match (o.quick, size) {
            (true, _) => 2,
            (false, s) if s <= 1 << 20 => 10,
            _ => 3,
        };
        println!("### {} KiB region (mean of {rounds} rounds)\n", size >> 10);
        print!("| allocator |");
        for &m in &o.maxes {
            print!(" max {m} B |");
        }
        println!();
        println!("|---|{}", "---:|".repeat(o.maxes.len()));
        for c in contenders(o, size) {
            print!("| {} |", c.name);
            for &max in &o.maxes {
                let sum: f64 =
                    (0..rounds).map(|i| efficiency_round(c, r, size, max, 0xe ^ ((i as u64) << 16) ^ max as u64)).sum();
                print!(" {:.1}% |", 100.0 * sum / rounds as f64);
            }
            println!();
        }
        println!();
    }
}

#[inline(always)]
fn stamp() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC is available on every x86-64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        T0.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Cycles of each operation of a random-actions run of `ops` operations.
fn op_cycles(a: &dyn GlobalAlloc, r: &Region, who: &str, max: usize, ops: usize, seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed);
    let mut v: Vec<(*mut u8, Layout)> = Vec::with_capacity(100_000);
    let mut cycles = Vec::with_capacity(ops);
    while cycles.len() < ops {
        let action = rng.below(5);
        if action == 4 {
            if !v.is_empty() {
                let i = rng.below(v.len());
                let (p, l) = v[i];
                let new = 1 + rng.below(max * 10 - 1);
                let t0 = stamp();
                // SAFETY: a live block of `a` with layout `l`.
                let q = unsafe { a.realloc(p, l, new) };
                cycles.push(stamp() - t0);
                if !q.is_null() {
                    r.check(q, new, l.align(), who);
                    v[i] = (q, Layout::from_size_align(new, l.align()).unwrap());
                }
            }
        } else if action < 2 || v.len() < TARGET_LIVE {
            let l = Layout::from_size_align(1 + rng.below(max - 1), rng.align()).unwrap();
            let t0 = stamp();
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc(l) };
            cycles.push(stamp() - t0);
            if !p.is_null() {
                r.check(p, l.size(), l.align(), who);
                v.push((p, l));
            }
        } else {
            let (p, l) = v.swap_remove(rng.below(v.len()));
            let t0 = stamp();
            // SAFETY: a live block of `a` with layout `l`.
            unsafe { a.dealloc(p, l) };
            cycles.push(stamp() - t0);
        }
    }
    for (p, l) in v {
        // SAFETY: as above.
        unsafe { a.dealloc(p, l) };
    }
    cycles
}

fn bench_wc(r: &Region, o: &Opts) {
    let ops = if o.quick { 20_000 } else { 100_000 };
    let trials = o.trials.max(3);
    println!(
        "\n## Cycles per operation, one thread, {ops} random actions, the same ones in each of {trials} runs: \
         max / 99.9th percentile / mean over operations of each operation's fastest run\n"
    );
    for &size in &o.regions {
        println!("### {} KiB region\n", size >> 10);
        print!("| allocator |");
        for &m in &o.maxes {
            print!(" max {m} B |");
        }
        println!();
        println!("|---|{}", "---:|".repeat(o.maxes.len()));
        for c in contenders(o, size) {
            print!("| {} |", c.name);
            for &max in &o.maxes {
                // The allocators are deterministic: each run performs the same
                // operations on the same addresses, so an operation's fastest
                // run is its own cost without the machine's interruptions.
                let mut best = vec![u64::MAX; ops];
                for _ in 0..trials {
                    // SAFETY: the region is free: the previous allocator is gone.
                    let a = unsafe { (c.make)(r.base, size, 1) };
                    let reg = Region { base: r.base, size };
                    let cy = op_cycles(&*a, &reg, c.name, max, ops, 0xc0de);
                    for (b, c) in best.iter_mut().zip(cy) {
                        *b = (*b).min(c);
                    }
                }
                let mean = best.iter().sum::<u64>() as f64 / ops as f64;
                best.sort_unstable();
                let p999 = best[ops * 999 / 1000];
                print!(" {} / {} / {:.0} |", best[ops - 1], p999, mean);
            }
            println!();
        }
        println!();
    }
}

fn main() {
    let mut o =
        Opts { regions: REGIONS.to_vec(), maxes: MAX_SIZES.to_vec(), quick: false, only: None, trials: 5, ms: 200 };
    let mut which = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "--quick" {
            o.quick = true;
            o.trials = 1;
            o.ms = 20;
        } else if let Some(v) = a.strip_prefix("--only=") {
            o.only = Some(v.to_string());
        } else if let Some(v) = a.strip_prefix("--trials=") {
            o.trials = v.parse().expect("--trials=N");
        } else if let Some(v) = a.strip_prefix("--region=") {
            o.regions = v.split(',').map(|k| k.parse::<usize>().expect("--region=KiB,...") << 10).collect();
        } else if let Some(v) = a.strip_prefix("--max=") {
            o.maxes = v.split(',').map(|k| k.parse().expect("--max=B,...")).collect();
        } else if let Some(v) = a.strip_prefix("--ms=") {
            o.ms = v.parse().expect("--ms=N");
        } else if ["ra", "he", "wc"].contains(&a.as_str()) {
            which.push(a);
        } else if a != "--bench" {
            eprintln!("unknown argument {a}");
            std::process::exit(2);
        }
    }
    if which.is_empty() {
        which = vec!["ra".into(), "he".into(), "wc".into()];
    }
    let r = Region::new(REGIONS[2]);
    println!("# hakmem-bench-embedded ({} build)", if cfg!(debug_assertions) { "debug" } else { "release" });
    for w in which {
        match w.as_str() {
            "ra" => bench_ra(&r, &o),
            "he" => bench_he(&r, &o),
            _ => bench_wc(&r, &o),
        }
    }
}
