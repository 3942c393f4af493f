//! The memory workloads (issue 9): resident memory over time, and what
//! purging costs in speed.
//!
//! Each (workload, allocator, repetition) runs in a fresh child process
//! (`hakmem-bench memrun ...`), so the resident memory measured is that
//! allocator's, plus the harness's small share (the same for every
//! allocator). A sampler thread in the child reads `/proc/self/statm` every
//! 10 ms, and every millisecond for 200 ms after the workload's last free,
//! where the return of memory is timed; the workload marks its phases
//! (baseline, peak, freed, end) synchronously.

use core::alloc::GlobalAlloc;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::allocs::{AllocKind, WithAlloc, dispatch};
use crate::suite::{Options, median, mib, own_rss, si, spawn_child, spawn_json};
use crate::workloads::{
    BATCH, Block, Queue, Rng, Scale, Workload, free_block, generations, log_uniform, new_block, snooze, touch_pages,
};

/// A memory workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemWorkload {
    /// 1 GiB of mixed sizes, freed, then 2 s idle.
    PeakRelease,
    /// Grow to 128 MiB, free to 10%, six times.
    Sawtooth,
    /// One thread allocates, another that never allocates frees.
    ProducerConsumer,
    /// Generations of threads that allocate, hand their blocks on and exit.
    ThreadExit,
}

impl MemWorkload {
    /// Every memory workload, in report order.
    pub const ALL: [MemWorkload; 4] =
        [MemWorkload::PeakRelease, MemWorkload::Sawtooth, MemWorkload::ProducerConsumer, MemWorkload::ThreadExit];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            MemWorkload::PeakRelease => "peak-release",
            MemWorkload::Sawtooth => "sawtooth",
            MemWorkload::ProducerConsumer => "producer-consumer",
            MemWorkload::ThreadExit => "thread-exit",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<MemWorkload> {
        MemWorkload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// What the workload does, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            MemWorkload::PeakRelease => {
                "peak-release: allocate 1 GiB, a third each in 16 B–1 KiB, 1–32 KiB and 64 KiB–4 MiB \
                 blocks (every page written), free it all in a random order, then idle 2 s making no \
                 allocator call. Target: RSS back within 10% of the pre-peak baseline within the purge delay."
            }
            MemWorkload::Sawtooth => {
                "sawtooth: six times, allocate 16 B–32 KiB blocks until 128 MiB are live, then free random \
                 blocks until 12.8 MiB are; the survivors pin pages. Then free everything and idle 1 s."
            }
            MemWorkload::ProducerConsumer => {
                "producer-consumer: one thread allocates 1M blocks of 16 B–16 KiB (log-uniform) in batches \
                 of 64 through a 64-batch queue; another thread, which never allocates, frees every one. \
                 At most ~4k blocks are live; memory must not grow with the 2.4 GiB that pass through. Then idle 1 s."
            }
            MemWorkload::ThreadExit => {
                "thread-exit: 100 generations of 2 threads; each frees the 4096 blocks (16 B–4 KiB) a thread \
                 of the previous generation left, allocates 4096 of its own, hands them on and exits. \
                 Then the main thread frees the last generation's and idles 1 s."
            }
        }
    }

    /// How long the child idles after the last free.
    pub fn idle(self, scale: Scale) -> Duration {
        match (self, scale) {
            (_, Scale::Test) => Duration::from_millis(60),
            (MemWorkload::PeakRelease, _) => Duration::from_secs(2),
            _ => Duration::from_secs(1),
        }
    }
}

// ---------------------------------------------------------------------------
// The child side.

unsafe extern "C" {
    fn getpagesize() -> core::ffi::c_int;
}

/// `/proc/self/statm`, kept open and re-read in place: reading it allocates
/// nothing.
pub struct Statm {
    f: File,
    page_kib: u64,
}

impl Statm {
    /// Open this process's `statm`.
    pub fn open() -> std::io::Result<Statm> {
        // SAFETY: a libc call with no arguments and no side effects.
        let page = unsafe { getpagesize() }.max(1024) as u64;
        Ok(Statm { f: File::open("/proc/self/statm")?, page_kib: page / 1024 })
    }

    /// Resident memory now, KiB.
    pub fn resident_kib(&self) -> u64 {
        let mut buf = [0u8; 160];
        let n = self.f.read_at(&mut buf, 0).unwrap_or(0);
        let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
        text.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * self.page_kib
    }
}

/// hakmem's own account of its memory at a mark.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct HakSnap {
    /// Bytes reserved from the OS and not released.
    pub reserved: u64,
    /// Of those, bytes that may be resident (reserved minus known not resident).
    pub committed: u64,
    /// Free bytes waiting for their purge delay (still resident).
    pub dirty: u64,
    /// Bytes purged so far.
    pub purged: u64,
    /// Small segments, and of those, empty ones.
    pub segments: u64,
    /// Empty small segments kept.
    pub empty_segments: u64,
    /// Pages handed to heaps.
    pub pages_in_use: u64,
    /// Bytes of live Large regions.
    pub large_live: u64,
    /// Bytes of freed Large regions cached.
    pub large_cached: u64,
    /// Heaps whose thread has gone, owning spans.
    pub abandoned_heaps: u64,
}

impl HakSnap {
    /// hakmem's figures now.
    pub fn now() -> HakSnap {
        let s = hakmem::stats();
        HakSnap {
            reserved: s.bytes_reserved as u64,
            committed: s.bytes_committed() as u64,
            dirty: s.bytes_dirty as u64,
            purged: s.bytes_purged,
            segments: s.segments as u64,
            empty_segments: s.empty_segments as u64,
            pages_in_use: s.pages_in_use as u64,
            large_live: s.large_live_bytes as u64,
            large_cached: s.large_cached_bytes as u64,
            abandoned_heaps: s.abandoned_heaps as u64,
        }
    }

    /// One line, MiB.
    pub fn line(&self) -> String {
        let m = |b: u64| format!("{:.1}", b as f64 / (1 << 20) as f64);
        format!(
            "reserved {} committed {} dirty {} purged {} MiB; {} segments ({} empty), {} pages in use; Large live {} cached {} MiB; {} abandoned heaps",
            m(self.reserved),
            m(self.committed),
            m(self.dirty),
            m(self.purged),
            self.segments,
            self.empty_segments,
            self.pages_in_use,
            m(self.large_live),
            m(self.large_cached),
            self.abandoned_heaps
        )
    }
}

/// A phase boundary the workload marked.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mark {
    /// `baseline`, `peak`, `freed`, `end`; for hakmem, after the final figure
    /// was taken, `collect` (after `hakmem::collect()`) and `flush+collect`
    /// (after `hakmem::flush_thread()` and another collect).
    pub name: String,
    /// Milliseconds since the child started.
    pub t_ms: f64,
    /// Resident memory then, KiB.
    pub rss_kib: u64,
    /// hakmem's accounting then (hakmem only).
    pub hakmem: Option<HakSnap>,
}

/// The record of one child run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemRun {
    /// The allocator.
    pub alloc: AllocKind,
    /// The workload.
    pub workload: MemWorkload,
    /// Allocator calls made.
    pub ops: u64,
    /// RSS at the `baseline` mark (after a warm-up call of each tier), KiB.
    pub baseline_kib: u64,
    /// `VmHWM` at the end: the exact peak, KiB.
    pub peak_kib: u64,
    /// RSS at the `end` mark (after the idle time), KiB.
    pub final_kib: u64,
    /// When the workload's last free returned, ms.
    pub freed_ms: f64,
    /// How long after `freed_ms` RSS first came within 10% of the baseline
    /// (`None`: not before the end).
    pub back_ms: Option<f64>,
    /// hakmem's purge delay in this child (hakmem only).
    pub purge_delay_ms: Option<u32>,
    /// The phase marks.
    pub marks: Vec<Mark>,
    /// (ms, KiB) samples.
    pub samples: Vec<(f64, u64)>,
}

impl MemRun {
    /// A mark by name.
    pub fn mark(&self, name: &str) -> Option<&Mark> {
        self.marks.iter().find(|m| m.name == name)
    }
}

struct Ctx<'a> {
    epoch: Instant,
    statm: &'a Statm,
    hakmem: bool,
    marks: Mutex<Vec<Mark>>,
    fast_until_ms: &'a AtomicU64,
}

impl Ctx<'_> {
    fn ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1e3
    }

    fn mark(&self, name: &str) {
        let t_ms = self.ms();
        let rss_kib = self.statm.resident_kib();
        let hakmem = self.hakmem.then(HakSnap::now);
        let m = Mark { name: name.into(), t_ms, rss_kib, hakmem };
        self.marks.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    }

    /// The workload's last free has returned: sample densely for a while.
    fn freed(&self) {
        self.fast_until_ms.store(self.ms() as u64 + 200, Ordering::Relaxed);
        self.mark("freed");
    }
}

const MAX_SAMPLES: usize = 1 << 14;

fn sampler(epoch: Instant, statm: &Statm, stop: &AtomicBool, fast_until_ms: &AtomicU64) -> Vec<(f64, u64)> {
    let mut v = Vec::with_capacity(MAX_SAMPLES);
    while !stop.load(Ordering::Acquire) {
        let t = epoch.elapsed();
        let kib = statm.resident_kib();
        if v.len() < MAX_SAMPLES {
            v.push((t.as_secs_f64() * 1e3, kib));
        }
        let fast = (t.as_millis() as u64) < fast_until_ms.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(if fast { 1 } else { 10 }));
    }
    v
}

struct Job<'a> {
    w: MemWorkload,
    scale: Scale,
    cx: &'a Ctx<'a>,
}

impl WithAlloc for Job<'_> {
    type Out = u64;
    fn call<A: GlobalAlloc + Sync>(self, a: &A) -> u64 {
        // First use of each tier before the baseline, so the allocator's
        // start-up memory is in the baseline, not in what it must return.
        for size in [64, 8 << 10, 1 << 20] {
            free_block(a, new_block(a, size));
        }
        thread::sleep(Duration::from_millis(20));
        self.cx.mark("baseline");
        let ops = match self.w {
            MemWorkload::PeakRelease => peak_release(a, self.scale, self.cx),
            MemWorkload::Sawtooth => sawtooth(a, self.scale, self.cx),
            MemWorkload::ProducerConsumer => producer_consumer(a, self.scale, self.cx),
            MemWorkload::ThreadExit => thread_exit(a, self.scale, self.cx),
        };
        // Idle: no allocator call at all.
        thread::sleep(self.w.idle(self.scale));
        self.cx.mark("end");
        ops + 6
    }
}

fn peak_release<A: GlobalAlloc + Sync>(a: &A, scale: Scale, cx: &Ctx<'_>) -> u64 {
    let total: usize = if scale == Scale::Test { 16 << 20 } else { 1 << 30 };
    let third = total / 3;
    let mut rng = Rng::new(0x91);
    let mut blocks: Vec<Block> = Vec::with_capacity(third / 500 + third / 16_000 + third / (64 << 10) + 64);
    let mut bytes = [0usize; 3];
    loop {
        let open = bytes.map(|b| b < third);
        if !open.iter().any(|&o| o) {
            break;
        }
        let tier = loop {
            let t = rng.below(3);
            if open[t] {
                break t;
            }
        };
        let size = match tier {
            0 => rng.range(16, 1024),
            1 => rng.range(1025, 32 << 10),
            _ => log_uniform(&mut rng, 64 << 10, 4 << 20),
        };
        let b = new_block(a, size);
        touch_pages(b);
        bytes[tier] += size;
        blocks.push(b);
    }
    cx.mark("peak");
    for i in (1..blocks.len()).rev() {
        let j = rng.below(i + 1);
        blocks.swap(i, j);
    }
    let n = blocks.len() as u64;
    for b in blocks.drain(..) {
        free_block(a, b);
    }
    drop(blocks);
    cx.freed();
    2 * n
}

fn sawtooth<A: GlobalAlloc + Sync>(a: &A, scale: Scale, cx: &Ctx<'_>) -> u64 {
    let (high, teeth): (usize, usize) = if scale == Scale::Test { (4 << 20, 2) } else { (128 << 20, 6) };
    let low = high / 10;
    let mut rng = Rng::new(0x92);
    let mut live: Vec<Block> = Vec::with_capacity(high / 256);
    let (mut bytes, mut calls) = (0usize, 0u64);
    for _ in 0..teeth {
        while bytes < high {
            let size = if rng.below(2) == 0 { rng.range(16, 1024) } else { rng.range(1025, 32 << 10) };
            let b = new_block(a, size);
            touch_pages(b);
            bytes += size;
            live.push(b);
            calls += 1;
        }
        while bytes > low {
            let b = live.swap_remove(rng.below(live.len()));
            bytes -= b.size;
            free_block(a, b);
            calls += 1;
        }
    }
    calls += live.len() as u64;
    for b in live.drain(..) {
        free_block(a, b);
    }
    drop(live);
    cx.freed();
    calls
}

fn producer_consumer<A: GlobalAlloc + Sync>(a: &A, scale: Scale, cx: &Ctx<'_>) -> u64 {
    let batches = scale.n(16_000);
    let q = Queue::new();
    thread::scope(|s| {
        let q = &q;
        s.spawn(move || {
            // This thread never allocates through `a`: it only frees.
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
        let mut rng = Rng::new(0x93);
        let mut batch = [Block::EMPTY; BATCH];
        let mut spins = 0;
        for _ in 0..batches {
            for b in batch.iter_mut() {
                *b = new_block(a, log_uniform(&mut rng, 16, 16 << 10));
            }
            while !q.can_push() {
                snooze(&mut spins);
            }
            q.push(&batch);
        }
    });
    cx.freed();
    (2 * BATCH * batches) as u64
}

fn thread_exit<A: GlobalAlloc + Sync>(a: &A, scale: Scale, cx: &Ctx<'_>) -> u64 {
    let (gens, blocks) = if scale == Scale::Test { (4, 64) } else { (100, 4096) };
    let calls = generations(a, 2, gens, blocks, 16, 4096);
    cx.freed();
    calls
}

/// The child side of `memrun`: run `w` once with `k`, sampling RSS.
pub fn child(k: AllocKind, w: MemWorkload, scale: Scale) -> Result<MemRun, String> {
    k.check_config()?;
    let statm = Statm::open().map_err(|e| format!("/proc/self/statm: {e}"))?;
    let epoch = Instant::now();
    let stop = AtomicBool::new(false);
    let fast = AtomicU64::new(0);
    let cx = Ctx {
        epoch,
        statm: &statm,
        hakmem: k.is_hakmem(),
        marks: Mutex::new(Vec::with_capacity(8)),
        fast_until_ms: &fast,
    };
    let (ops, samples) = thread::scope(|s| {
        let h = s.spawn(|| sampler(epoch, &statm, &stop, &fast));
        let ops = dispatch(k, Job { w, scale, cx: &cx });
        stop.store(true, Ordering::Release);
        (ops, h.join().expect("sampler panicked"))
    });
    let peak_kib = own_rss().peak_kib;
    if k.is_hakmem() {
        // Diagnosis only (after the final figure): what an explicit
        // collect would still return.
        hakmem::collect();
        cx.mark("collect");
        // ... and what this thread's caches held: give them back too.
        hakmem::flush_thread();
        hakmem::collect();
        cx.mark("flush+collect");
    }
    let marks = cx.marks.into_inner().unwrap_or_else(|e| e.into_inner());
    let at = |name: &str| marks.iter().find(|m| m.name == name).ok_or(format!("no `{name}` mark"));
    let baseline_kib = at("baseline")?.rss_kib;
    let final_kib = at("end")?.rss_kib;
    let freed = at("freed")?;
    let freed_ms = freed.t_ms;
    let end_ms = at("end")?.t_ms;
    let limit = baseline_kib + baseline_kib / 10;
    let back_ms = std::iter::once((freed.t_ms, freed.rss_kib))
        .chain(samples.iter().copied().filter(|&(t, _)| t > freed_ms && t <= end_ms))
        .chain(std::iter::once((end_ms, final_kib)))
        .find(|&(_, kib)| kib <= limit)
        .map(|(t, _)| t - freed_ms);
    let purge_delay_ms = k.is_hakmem().then(|| hakmem::allocator().config().purge_delay_ms);
    Ok(MemRun {
        alloc: k,
        workload: w,
        ops,
        baseline_kib,
        peak_kib,
        final_kib,
        freed_ms,
        back_ms,
        purge_delay_ms,
        marks,
        samples,
    })
}

// ---------------------------------------------------------------------------
// The parent side.

/// What `memory` runs.
#[derive(Clone, Debug)]
pub struct MemOptions {
    /// `test` shrinks everything (for the tests); `quick` and `full` are the same.
    pub scale: Scale,
    /// Runs per (workload, allocator), each in a fresh process.
    pub reps: usize,
    /// Workloads.
    pub workloads: Vec<MemWorkload>,
    /// Allocators.
    pub allocs: Vec<AllocKind>,
}

impl MemOptions {
    /// Defaults: every workload, hakmem and the three peers, 3 runs.
    pub fn preset(scale: Scale) -> MemOptions {
        MemOptions {
            scale,
            reps: if scale == Scale::Test { 1 } else { 3 },
            workloads: MemWorkload::ALL.to_vec(),
            allocs: vec![AllocKind::Hakmem, AllocKind::System, AllocKind::Mimalloc, AllocKind::Jemalloc],
        }
    }
}

/// Medians over the runs of one (workload, allocator).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemSummary {
    /// The allocator.
    pub alloc: AllocKind,
    /// Median baseline, KiB.
    pub baseline_kib: u64,
    /// Median peak, KiB.
    pub peak_kib: u64,
    /// Median final, KiB.
    pub final_kib: u64,
    /// Median time back within 10% of the baseline (`None`: the median run never was).
    pub back_ms: Option<f64>,
    /// Runs.
    pub runs: usize,
}

/// One memory workload's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemCell {
    /// The workload.
    pub workload: MemWorkload,
    /// One per allocator, in option order.
    pub summary: Vec<MemSummary>,
    /// Every run (repetition-major, rotated order).
    pub runs: Vec<MemRun>,
}

/// Every figure of a `memory` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryResults {
    /// Runs per (workload, allocator).
    pub reps: usize,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// One per workload.
    pub cells: Vec<MemCell>,
    /// `purge-cost`, when it ran.
    #[serde(default)]
    pub purge_cost: Option<PurgeCost>,
}

fn median_u64(xs: &[u64]) -> u64 {
    median(&xs.iter().map(|&x| x as f64).collect::<Vec<_>>()).round() as u64
}

fn summarise(k: AllocKind, runs: &[&MemRun]) -> MemSummary {
    let get = |f: fn(&MemRun) -> u64| median_u64(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let back = median(&runs.iter().map(|r| r.back_ms.unwrap_or(f64::INFINITY)).collect::<Vec<_>>());
    MemSummary {
        alloc: k,
        baseline_kib: get(|r| r.baseline_kib),
        peak_kib: get(|r| r.peak_kib),
        final_kib: get(|r| r.final_kib),
        back_ms: back.is_finite().then_some(back),
        runs: runs.len(),
    }
}

/// Run the memory workloads, printing each table as it completes.
pub fn run_memory(opts: &MemOptions) -> Result<MemoryResults, String> {
    let start = Instant::now();
    let n = opts.allocs.len();
    let mut cells = Vec::new();
    println!(
        "hakmem-bench memory: each run in a fresh process; RSS from /proc/self/statm every 10 ms (1 ms for 200 ms \
         after the last free); median of {} run(s); ratio = peer ÷ hakmem (above 1: the peer holds more)",
        opts.reps
    );
    for &w in &opts.workloads {
        let mut runs = Vec::new();
        for rep in 0..opts.reps {
            let mut line = format!("{:<17} run {}/{}:", w.name(), rep + 1, opts.reps);
            for j in 0..n {
                let k = opts.allocs[(rep + j) % n];
                let args = ["memrun", "--alloc", k.name(), "--workload", w.name(), "--scale", opts.scale.name()];
                let r: MemRun = spawn_json(k, &args, &[])?;
                line += &format!(" {} {}→{}", k.name(), mib(r.peak_kib), mib(r.final_kib));
                runs.push(r);
            }
            eprintln!("{line}");
        }
        let summary = opts
            .allocs
            .iter()
            .map(|&k| summarise(k, &runs.iter().filter(|r| r.alloc == k).collect::<Vec<_>>()))
            .collect();
        let cell = MemCell { workload: w, summary, runs };
        print_mem_cell(&cell);
        cells.push(cell);
    }
    let res = MemoryResults { reps: opts.reps, elapsed_s: start.elapsed().as_secs_f64(), cells, purge_cost: None };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nMemory targets (hakmem):");
    for c in &res.cells {
        for t in targets(c) {
            let _ = writeln!(out, "  {:<17} {:<7} {} — {}", c.workload.name(), t.status(), t.target, t.detail);
        }
    }
    let _ = writeln!(out, "memory run took {:.1} s", res.elapsed_s);
    Ok(res)
}

fn back_text(b: Option<f64>) -> String {
    b.map_or("never".into(), |ms| format!("{ms:.0} ms"))
}

fn print_mem_cell(c: &MemCell) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\n{}\n  {}", c.workload.name(), c.workload.describe());
    let _ = writeln!(
        out,
        "  {:<15} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8}",
        "alloc", "baseline", "peak", "final", "back≤+10%", "peak r", "final r"
    );
    let h = c.summary.iter().find(|s| s.alloc == AllocKind::Hakmem);
    for s in &c.summary {
        let r = |x: u64, y: u64| if y == 0 { "-".into() } else { format!("{:.2}x", x as f64 / y as f64) };
        let _ = writeln!(
            out,
            "  {:<15} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8}",
            s.alloc.name(),
            mib(s.baseline_kib),
            mib(s.peak_kib),
            mib(s.final_kib),
            back_text(s.back_ms),
            h.map_or("-".into(), |h| r(s.peak_kib, h.peak_kib)),
            h.map_or("-".into(), |h| r(s.final_kib, h.final_kib)),
        );
    }
    // hakmem's own account at each mark of its first run: why RSS is what it is.
    for r in c.runs.iter().filter(|r| r.alloc.is_hakmem()) {
        if c.runs.iter().filter(|x| x.alloc == r.alloc).position(|x| std::ptr::eq(x, r)) != Some(0) {
            continue;
        }
        for m in &r.marks {
            if let Some(hs) = &m.hakmem {
                let _ = writeln!(out, "  {} @{:<8} RSS {:>10}: {}", r.alloc.name(), m.name, mib(m.rss_kib), hs.line());
            }
        }
    }
}

/// One memory target and where hakmem stands.
#[derive(Clone, Debug)]
pub struct Target {
    /// What the target says.
    pub target: String,
    /// Met, missed, or not measurable (`None`: a figure is missing).
    pub met: Option<bool>,
    /// The figures.
    pub detail: String,
}

impl Target {
    /// `MET`, `MISSED` or `n/a`.
    pub fn status(&self) -> &'static str {
        match self.met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }
}

/// Issue 9's targets for one workload: back to baseline within the purge
/// delay (peak-release), peak ≤ mimalloc's, final ≤ the best peer's.
pub fn targets(c: &MemCell) -> Vec<Target> {
    let get = |k: AllocKind| c.summary.iter().find(|s| s.alloc == k);
    let Some(h) = get(AllocKind::Hakmem) else { return Vec::new() };
    let mut out = Vec::new();
    let pct = |x: u64, y: u64| (x as f64 / y.max(1) as f64 - 1.0) * 100.0;
    if c.workload == MemWorkload::PeakRelease {
        let delay = c.runs.iter().find(|r| r.alloc == AllocKind::Hakmem).and_then(|r| r.purge_delay_ms).unwrap_or(10);
        let met = h.back_ms.is_some_and(|b| b <= f64::from(delay));
        out.push(Target {
            target: format!("RSS back within 10% of the baseline within the purge delay ({delay} ms)"),
            met: Some(met),
            detail: format!(
                "back after {}; baseline {}, final {} ({:+.0}%)",
                back_text(h.back_ms),
                mib(h.baseline_kib),
                mib(h.final_kib),
                pct(h.final_kib, h.baseline_kib)
            ),
        });
    }
    match get(AllocKind::Mimalloc) {
        Some(m) => out.push(Target {
            target: "peak RSS ≤ mimalloc's".into(),
            met: Some(h.peak_kib <= m.peak_kib),
            detail: format!(
                "hakmem {}, mimalloc {} ({:+.1}%)",
                mib(h.peak_kib),
                mib(m.peak_kib),
                pct(h.peak_kib, m.peak_kib)
            ),
        }),
        None => {
            out.push(Target { target: "peak RSS ≤ mimalloc's".into(), met: None, detail: "mimalloc not run".into() })
        }
    }
    let best = c
        .summary
        .iter()
        .filter(|s| matches!(s.alloc, AllocKind::System | AllocKind::Mimalloc | AllocKind::Jemalloc))
        .min_by_key(|s| s.final_kib);
    match best {
        Some(b) => out.push(Target {
            target: "final RSS ≤ the best peer's".into(),
            met: Some(h.final_kib <= b.final_kib),
            detail: format!(
                "hakmem {}, best {} {} ({:+.1}%)",
                mib(h.final_kib),
                b.alloc.name(),
                mib(b.final_kib),
                pct(h.final_kib, b.final_kib)
            ),
        }),
        None => {
            out.push(Target { target: "final RSS ≤ the best peer's".into(), met: None, detail: "no peer run".into() })
        }
    }
    out
}

// ---------------------------------------------------------------------------
// What purging costs in speed.

/// One cell of `purge-cost`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PurgeCell {
    /// The workload.
    pub workload: Workload,
    /// Threads.
    pub threads: usize,
    /// hakmem's median ops/s with its default purging.
    pub default_median: f64,
    /// hakmem's median ops/s with purging off.
    pub nopurge_median: f64,
    /// Bytes the default configuration purged in a timed round (median).
    pub purged_bytes: u64,
    /// Bytes the no-purge configuration purged (must be 0).
    pub nopurge_purged_bytes: u64,
}

impl PurgeCell {
    /// `nopurge ÷ default`: above 1, purging costs that much.
    pub fn ratio(&self) -> f64 {
        self.nopurge_median / self.default_median
    }
}

/// `purge-cost`: hakmem against hakmem with purging off, on the quick suite.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PurgeCost {
    /// Rounds per cell (each a fresh child running a warm-up and a timed round).
    pub rounds: usize,
    /// One per (workload, threads).
    pub cells: Vec<PurgeCell>,
    /// Geometric mean of the cells' ratios.
    pub geomean: f64,
    /// Cells left out because a child failed (the error), e.g. an abort.
    #[serde(default)]
    pub failures: Vec<String>,
}

impl PurgeCost {
    /// The target: purging costs at most 3% throughput (geometric mean).
    pub fn met(&self) -> bool {
        self.geomean <= 1.03
    }
}

/// Measure what purging costs: every cell of `opts`, `opts.rounds` times,
/// each time one child per configuration (order alternating) that runs a
/// warm-up round and a timed one.
pub fn purge_cost(opts: &Options) -> Result<PurgeCost, String> {
    let mut cells = Vec::new();
    let mut failures = Vec::new();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "hakmem-bench purge-cost: hakmem (purge delay default) vs hakmem-nopurge ({:?}), each round a fresh child \
         per configuration (warm-up round, then the timed round), {} rounds per cell",
        AllocKind::HakmemNoPurge.env(),
        opts.rounds
    );
    let _ = writeln!(
        out,
        "{:<15} {:>2} {:>10} {:>10} {:>8} {:>12}",
        "workload", "t", "default", "nopurge", "ratio", "purged/round"
    );
    drop(out);
    for &w in &opts.workloads {
        for &t in &opts.threads {
            let kinds = [AllocKind::Hakmem, AllocKind::HakmemNoPurge];
            let mut rates = [Vec::new(), Vec::new()];
            let mut purged = [Vec::new(), Vec::new()];
            let mut failed = None;
            'rounds: for r in 0..opts.rounds {
                for j in 0..2 {
                    let i = (r + j) % 2;
                    // A failing child (an allocator abort) is reported and
                    // its cell left out, not the whole run.
                    let rep = match spawn_child(kinds[i], Some(w), t, opts.scale, 2, false) {
                        Ok(rep) => rep,
                        Err(e) => {
                            failed = Some(e);
                            break 'rounds;
                        }
                    };
                    let secs = *rep.secs.last().ok_or("child ran no round")?;
                    rates[i].push(rep.ops as f64 / secs);
                    purged[i].push(rep.paths.map_or(0, |p| p.bytes_purged) as f64);
                }
            }
            if let Some(e) = failed {
                println!("{:<15} {:>2} FAILED: {e}", w.name(), t);
                failures.push(format!("{} t={t}: {e}", w.name()));
                continue;
            }
            let cell = PurgeCell {
                workload: w,
                threads: t,
                default_median: median(&rates[0]),
                nopurge_median: median(&rates[1]),
                purged_bytes: (median(&purged[0]) / 2.0) as u64,
                nopurge_purged_bytes: purged[1].iter().copied().fold(0.0, f64::max) as u64,
            };
            if cell.nopurge_purged_bytes != 0 {
                return Err(format!("hakmem-nopurge purged {} bytes: purging was not off", cell.nopurge_purged_bytes));
            }
            println!(
                "{:<15} {:>2} {:>10} {:>10} {:>7.3}x {:>12}",
                w.name(),
                t,
                si(cell.default_median),
                si(cell.nopurge_median),
                cell.ratio(),
                mib(cell.purged_bytes / 1024)
            );
            cells.push(cell);
        }
    }
    let geomean = (cells.iter().map(|c| c.ratio().ln()).sum::<f64>() / cells.len().max(1) as f64).exp();
    let pc = PurgeCost { rounds: opts.rounds, cells, geomean, failures };
    println!(
        "purging costs {:+.1}% throughput (geometric mean of nopurge ÷ default over {} cells); target ≤ 3%: {}",
        (pc.geomean - 1.0) * 100.0,
        pc.cells.len(),
        if pc.met() { "MET" } else { "MISSED" }
    );
    if !pc.failures.is_empty() {
        println!("{} cell(s) FAILED (a child aborted): {}", pc.failures.len(), pc.failures.join("; "));
    }
    Ok(pc)
}
