//! Running the suite: interleaved rounds, child processes for memory (and,
//! with `--isolate`, for timing), statistics, the table and the JSON record.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::allocs::{AllocKind, WithAlloc, dispatch};
use crate::machine::Machine;
use crate::workloads::{Scale, Workload};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Work per round.
    pub scale: Scale,
    /// Timed rounds per (workload, threads, allocator).
    pub rounds: usize,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Allocators.
    pub allocs: Vec<AllocKind>,
    /// Time each round in a fresh child process.
    pub isolate: bool,
    /// Measure resident memory in child processes.
    pub rss: bool,
}

impl Options {
    /// The quick (default) or full configuration.
    pub fn preset(scale: Scale) -> Options {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = vec![1, n];
        threads.dedup();
        Options {
            scale,
            rounds: if scale == Scale::Full { 9 } else { 5 },
            threads,
            workloads: Workload::ALL.to_vec(),
            allocs: AllocKind::ALL.to_vec(),
            isolate: false,
            rss: true,
        }
    }
}

/// Every figure of a run, as written by `--json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// `quick`, `full` or `test`.
    pub mode: String,
    /// When the run started.
    pub date: String,
    /// Where it ran.
    pub machine: Machine,
    /// Timed rounds per cell.
    pub rounds: usize,
    /// Whether rounds ran in child processes.
    pub isolate: bool,
    /// Wall time of the whole run, seconds.
    pub elapsed_s: f64,
    /// Resident memory of a child that runs no workload (KiB): the harness's
    /// own share of every peak and final figure.
    pub baseline_rss_kib: Option<MemFigures>,
    /// One per (workload, threads).
    pub cells: Vec<Cell>,
    /// The memory workloads (`memory`, or the suite with `--memory`).
    #[serde(default)]
    pub memory: Option<crate::memory::MemoryResults>,
    /// The `--preload` programs.
    #[serde(default)]
    pub preload: Option<crate::preload::PreloadResults>,
}

impl Results {
    /// Take `other`'s memory workloads and purge-cost figures where they are
    /// newer than this record's (a `memory` or `purge-cost` run merged into a
    /// suite run for one report).
    pub fn merge(&mut self, other: Results) {
        if other.preload.is_some() {
            self.preload = other.preload;
        }
        let Some(om) = other.memory else { return };
        let m = self.memory.get_or_insert_with(|| crate::memory::MemoryResults {
            reps: 0,
            elapsed_s: 0.0,
            cells: Vec::new(),
            purge_cost: None,
        });
        if !om.cells.is_empty() {
            m.cells = om.cells;
            m.reps = om.reps;
            m.elapsed_s = om.elapsed_s;
        }
        if om.purge_cost.is_some() {
            m.purge_cost = om.purge_cost;
        }
    }
}

/// Peak and final resident memory of one child, KiB.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct MemFigures {
    /// `VmHWM`: the peak.
    pub peak_kib: u64,
    /// `VmRSS` after the workload freed everything.
    pub final_kib: u64,
}

/// The results of one workload at one thread count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    /// The workload.
    pub workload: Workload,
    /// Threads.
    pub threads: usize,
    /// Allocator calls per round.
    pub ops_per_round: u64,
    /// One per allocator run.
    pub results: Vec<AllocResult>,
}

/// One allocator's figures in a cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AllocResult {
    /// The allocator.
    pub alloc: AllocKind,
    /// Allocator calls per second, one per round, in round order.
    pub samples: Vec<f64>,
    /// Median of `samples`.
    pub median: f64,
    /// Least of `samples`.
    pub min: f64,
    /// Greatest of `samples`.
    pub max: f64,
    /// `median / hakmem's median` (above 1: the peer is faster).
    pub ratio_to_hakmem: Option<f64>,
    /// Resident memory in a fresh child running one round.
    pub mem: Option<MemFigures>,
    /// hakmem's path counters in that child (exact: sampling off there).
    #[serde(default)]
    pub paths: Option<Paths>,
}

/// Operation counts of one tier, from hakmem's counters.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TierPaths {
    /// Allocations served by a thread's bins.
    pub fast_alloc: u64,
    /// Allocations that took the slow path (a refill).
    pub slow_alloc: u64,
    /// Frees absorbed by a thread's bins.
    pub fast_free: u64,
    /// Local frees that went back to their span.
    pub slow_free: u64,
    /// Frees by a thread that did not own the block (once drained).
    pub remote_free: u64,
}

impl TierPaths {
    fn from_stats(c: hakmem_core::ClassStats) -> TierPaths {
        TierPaths {
            fast_alloc: c.fast_alloc,
            slow_alloc: c.slow_alloc,
            fast_free: c.fast_free,
            slow_free: c.slow_free,
            remote_free: c.remote_free,
        }
    }
    fn minus(self, o: TierPaths) -> TierPaths {
        TierPaths {
            fast_alloc: self.fast_alloc.saturating_sub(o.fast_alloc),
            slow_alloc: self.slow_alloc.saturating_sub(o.slow_alloc),
            fast_free: self.fast_free.saturating_sub(o.fast_free),
            slow_free: self.slow_free.saturating_sub(o.slow_free),
            remote_free: self.remote_free.saturating_sub(o.remote_free),
        }
    }
    /// Allocations.
    pub fn allocs(&self) -> u64 {
        self.fast_alloc + self.slow_alloc
    }
    /// Frees (remote ones once drained).
    pub fn frees(&self) -> u64 {
        self.fast_free + self.slow_free + self.remote_free
    }
}

/// hakmem's own account of a run: which paths its calls took, and what it
/// purged. Read from `hakmem::stats()` before and after the run.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Paths {
    /// Fast-path counts are samples × 2^shift: exact when 0.
    pub tiny_sample_shift: u32,
    /// See `tiny_sample_shift`.
    pub mid_sample_shift: u32,
    /// Tiny classes.
    pub tiny: TierPaths,
    /// Mid classes.
    pub mid: TierPaths,
    /// Large allocations.
    pub large_allocs: u64,
    /// Threshold flushes of magazines and LIFOs.
    pub flushes: u64,
    /// Bytes purged.
    pub bytes_purged: u64,
}

impl Paths {
    /// The counters now (cumulative since the process started).
    pub fn now() -> Paths {
        let s = hakmem::stats();
        Paths {
            tiny_sample_shift: s.tiny_sample_shift,
            mid_sample_shift: s.mid_sample_shift,
            tiny: TierPaths::from_stats(s.tiny()),
            mid: TierPaths::from_stats(s.mid()),
            large_allocs: s.large_allocs,
            flushes: s.flushes,
            bytes_purged: s.bytes_purged,
        }
    }
    /// What happened between `before` and `self`.
    pub fn since(self, before: Paths) -> Paths {
        Paths {
            tiny: self.tiny.minus(before.tiny),
            mid: self.mid.minus(before.mid),
            large_allocs: self.large_allocs - before.large_allocs,
            flushes: self.flushes - before.flushes,
            bytes_purged: self.bytes_purged - before.bytes_purged,
            ..self
        }
    }
    /// One line: fast share of allocations and frees per tier, remote share.
    pub fn line(&self) -> String {
        let pct =
            |a: u64, b: u64| if b == 0 { "-".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / b as f64) };
        let tier = |name: &str, t: &TierPaths| {
            if t.allocs() + t.frees() == 0 {
                return format!("{name} none");
            }
            format!(
                "{name} alloc {} fast ({} slow), free {} fast, {} slow, {} remote",
                pct(t.fast_alloc, t.allocs()),
                t.slow_alloc,
                pct(t.fast_free, t.frees()),
                pct(t.slow_free, t.frees()),
                pct(t.remote_free, t.frees()),
            )
        };
        let exact = if self.tiny_sample_shift == 0 && self.mid_sample_shift == 0 {
            "exact".to_string()
        } else {
            format!("fast counts sampled 1/2^{}, 1/2^{}", self.tiny_sample_shift, self.mid_sample_shift)
        };
        format!(
            "{}; {}; large {}; {} flushes; purged {} ({exact})",
            tier("tiny", &self.tiny),
            tier("mid", &self.mid),
            self.large_allocs,
            self.flushes,
            mib(self.bytes_purged / 1024)
        )
    }
}

/// The median of a non-empty slice.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

struct Once {
    w: Workload,
    threads: usize,
    scale: Scale,
}

impl WithAlloc for Once {
    type Out = (u64, f64);
    fn call<A: core::alloc::GlobalAlloc + Sync>(self, a: &A) -> (u64, f64) {
        let t = Instant::now();
        let ops = self.w.run(a, self.threads, self.scale);
        (ops, t.elapsed().as_secs_f64())
    }
}

/// Run one round in this process: (allocator calls, seconds).
pub fn run_once(k: AllocKind, w: Workload, threads: usize, scale: Scale) -> (u64, f64) {
    dispatch(k, Once { w, threads, scale })
}

/// What a child process reports (one JSON line on stdout).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildReport {
    /// Allocator calls per round.
    pub ops: u64,
    /// Seconds per round.
    pub secs: Vec<f64>,
    /// Peak and final resident memory.
    pub mem: MemFigures,
    /// hakmem's counters over the rounds (hakmem only).
    #[serde(default)]
    pub paths: Option<Paths>,
}

/// `VmHWM` and `VmRSS` of this process, KiB.
pub fn own_rss() -> MemFigures {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    MemFigures { peak_kib: field("VmHWM:"), final_kib: field("VmRSS:") }
}

/// The child side: run `rounds` rounds (none for `w == None`) and report.
/// Memory is read after the last round; hakmem's counters span all rounds.
pub fn child_main(
    k: AllocKind,
    w: Option<Workload>,
    threads: usize,
    scale: Scale,
    rounds: usize,
) -> Result<ChildReport, String> {
    k.check_config()?;
    let mut ops = 0;
    let mut secs = Vec::new();
    let before = k.is_hakmem().then(Paths::now);
    if let Some(w) = w {
        for _ in 0..rounds {
            let (o, s) = run_once(k, w, threads, scale);
            ops = o;
            secs.push(s);
        }
    }
    let mem = own_rss();
    // Remote frees are counted when drained: drain what exited threads left.
    let paths = before.map(|b| {
        // `collect` purges everything: take the purge figure before it.
        let purged = hakmem::stats().bytes_purged;
        hakmem::collect();
        Paths { bytes_purged: purged, ..Paths::now() }.since(b)
    });
    Ok(ChildReport { ops, secs, mem, paths })
}

/// The environment that makes hakmem's fast-path counters exact.
pub const EXACT_COUNTS: [(&str, &str); 2] = [("HAKMEM_TINY_COUNT_SAMPLE", "0"), ("HAKMEM_POOL_COUNT_SAMPLE", "0")];

/// Run `hakmem-bench ARGS` as a child with `k`'s environment (and `extra`)
/// and parse the JSON line it prints last.
pub fn spawn_json<T: serde::de::DeserializeOwned>(
    k: AllocKind,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Result<T, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stderr(Stdio::inherit());
    for &(key, v) in k.env().iter().chain(extra) {
        cmd.env(key, v);
    }
    let out = cmd.output().map_err(|e| format!("spawn: {e}"))?;
    if !out.status.success() {
        return Err(format!("child `{}` failed: {}", args.join(" "), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("child report {line:?}: {e}"))
}

/// The parent side: spawn `hakmem-bench run ...` and read its report.
/// `exact` turns hakmem's counter sampling off in the child.
pub fn spawn_child(
    k: AllocKind,
    w: Option<Workload>,
    threads: usize,
    scale: Scale,
    rounds: usize,
    exact: bool,
) -> Result<ChildReport, String> {
    let threads = threads.to_string();
    let rounds = rounds.to_string();
    let args = [
        "run",
        "--alloc",
        k.name(),
        "--workload",
        w.map_or("idle", |w| w.name()),
        "--threads",
        &threads,
        "--scale",
        scale.name(),
        "--rounds",
        &rounds,
    ];
    spawn_json(k, &args, if exact && k.is_hakmem() { &EXACT_COUNTS } else { &[] })
}

/// Allocators that can run `w` at `threads`, in the order given.
pub fn allocs_for(opts: &Options, w: Workload, threads: usize) -> Vec<AllocKind> {
    opts.allocs.iter().copied().filter(|&k| k != AllocKind::Sol || w.local_only(threads)).collect()
}

/// Run the suite, printing each cell's table as it completes.
pub fn run_suite(opts: &Options) -> Result<Results, String> {
    let start = Instant::now();
    let mut machine = crate::machine::describe();
    let date = crate::machine::now_utc();
    if !opts.isolate
        && let Some(k) = opts.allocs.iter().find(|k| !k.env().is_empty())
    {
        return Err(format!("{} runs in child processes only: add --isolate", k.name()));
    }
    let baseline =
        if opts.rss { Some(spawn_child(AllocKind::Hakmem, None, 1, opts.scale, 1, false)?.mem) } else { None };
    print_header(opts, baseline);
    let mut cells = Vec::new();
    for &w in &opts.workloads {
        for &threads in &opts.threads {
            let cell = run_cell(opts, w, threads)?;
            print_cell(&cell);
            cells.push(cell);
        }
    }
    machine.loadavg.push(crate::machine::loadavg());
    let results = Results {
        mode: opts.scale.name().into(),
        date,
        machine,
        rounds: opts.rounds,
        isolate: opts.isolate,
        elapsed_s: start.elapsed().as_secs_f64(),
        baseline_rss_kib: baseline,
        cells,
        memory: None,
        preload: None,
    };
    print_summary(&results);
    Ok(results)
}

fn run_cell(opts: &Options, w: Workload, threads: usize) -> Result<Cell, String> {
    let allocs = allocs_for(opts, w, threads);
    let n = allocs.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ops_per_round = 0;
    if !opts.isolate {
        // One untimed round each, so no allocator pays for first use in a
        // timed round.
        for &k in &allocs {
            ops_per_round = run_once(k, w, threads, opts.scale).0;
        }
    }
    for r in 0..opts.rounds {
        let mut line = format!("{:<14} t={threads} round {}/{}:", w.name(), r + 1, opts.rounds);
        for j in 0..n {
            let i = (r + j) % n;
            let k = allocs[i];
            let (ops, secs) = if opts.isolate {
                let rep = spawn_child(k, Some(w), threads, opts.scale, 1, false)?;
                (rep.ops, rep.secs[0])
            } else {
                run_once(k, w, threads, opts.scale)
            };
            if ops_per_round != 0 && ops != ops_per_round {
                return Err(format!("{} made {ops} calls where {ops_per_round} were expected", k.name()));
            }
            ops_per_round = ops;
            let rate = ops as f64 / secs;
            samples[i].push(rate);
            line += &format!(" {} {}", k.name(), si(rate));
        }
        eprintln!("{line}");
    }
    let mut results: Vec<AllocResult> = allocs
        .iter()
        .zip(samples)
        .map(|(&k, s)| AllocResult {
            alloc: k,
            median: median(&s),
            min: s.iter().copied().fold(f64::INFINITY, f64::min),
            max: s.iter().copied().fold(0.0, f64::max),
            samples: s,
            ratio_to_hakmem: None,
            mem: None,
            paths: None,
        })
        .collect();
    if let Some(h) = results.iter().find(|r| r.alloc == AllocKind::Hakmem) {
        let hm = h.median;
        for r in &mut results {
            r.ratio_to_hakmem = Some(r.median / hm);
        }
    }
    if opts.rss {
        for r in &mut results {
            // hakmem's child counts exactly: the counters cost a little time
            // there, not memory, and this child is not timed.
            let rep = spawn_child(r.alloc, Some(w), threads, opts.scale, 1, true)?;
            r.mem = Some(rep.mem);
            r.paths = rep.paths;
        }
    }
    Ok(Cell { workload: w, threads, ops_per_round, results })
}

/// `1234567.0` as `1.23M`.
pub fn si(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.2}k", x / 1e3)
    } else {
        format!("{x:.1}")
    }
}

/// KiB as `12.3 MiB`.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_header(opts: &Options, baseline: Option<MemFigures>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "hakmem-bench {}: {} timed rounds per cell{}, allocators in rotating order; \
         ops = allocator calls (alloc, free, realloc); ratio = peer median / hakmem median",
        opts.scale.name(),
        opts.rounds,
        if opts.isolate { ", each in a fresh process" } else { " after one warm-up round, all in this process" },
    );
    if let Some(b) = baseline {
        let _ = writeln!(
            out,
            "RSS: peak (VmHWM) and final (VmRSS) of a fresh child per cell; a child running nothing: peak {}, final {}",
            mib(b.peak_kib),
            mib(b.final_kib)
        );
    }
    let _ = writeln!(
        out,
        "sol (speed of light) runs only where every free is local and sizes ≤ 64 KiB: {}",
        Workload::ALL
            .iter()
            .filter(|w| w.local_only(1))
            .map(|w| { if w.local_only(2) { w.name().to_string() } else { format!("{} (t=1)", w.name()) } })
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn print_cell(cell: &Cell) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n{} t={} ({} calls/round)\n  {:<9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}",
        cell.workload.name(),
        cell.threads,
        cell.ops_per_round,
        "alloc",
        "median/s",
        "min/s",
        "max/s",
        "ratio",
        "peak RSS",
        "final RSS"
    );
    for r in &cell.results {
        let _ = writeln!(
            out,
            "  {:<9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>11}",
            r.alloc.name(),
            si(r.median),
            si(r.min),
            si(r.max),
            r.ratio_to_hakmem.map_or("-".into(), |x| format!("{x:.2}x")),
            r.mem.map_or("-".into(), |m| mib(m.peak_kib)),
            r.mem.map_or("-".into(), |m| mib(m.final_kib)),
        );
    }
    for r in &cell.results {
        if let Some(p) = &r.paths {
            let _ = writeln!(out, "  {} paths: {}", r.alloc.name(), p.line());
        }
    }
}

fn print_summary(res: &Results) {
    let mut out = std::io::stdout().lock();
    let peers = [AllocKind::System, AllocKind::Mimalloc, AllocKind::Jemalloc, AllocKind::Sol];
    let _ = writeln!(
        out,
        "\nSummary: hakmem's median ops/s and each peer's ratio to it (above 1.00x: the peer is faster); peak RSS, MiB"
    );
    let _ = write!(out, "{:<15} {:>2} {:>9}", "workload", "t", "hakmem");
    for p in peers {
        let _ = write!(out, " {:>9}", p.name());
    }
    let _ = write!(out, " | {:>7}", "hakmem");
    for p in &peers[..3] {
        let _ = write!(out, " {:>8}", p.name());
    }
    let _ = writeln!(out);
    for c in &res.cells {
        let get = |k: AllocKind| c.results.iter().find(|r| r.alloc == k);
        let _ = write!(
            out,
            "{:<15} {:>2} {:>9}",
            c.workload.name(),
            c.threads,
            get(AllocKind::Hakmem).map_or("-".into(), |r| si(r.median))
        );
        for p in peers {
            let _ = write!(
                out,
                " {:>9}",
                get(p).and_then(|r| r.ratio_to_hakmem).map_or("-".into(), |x| format!("{x:.2}x"))
            );
        }
        let peak = |k| get(k).and_then(|r| r.mem).map_or("-".into(), |m| format!("{:.1}", m.peak_kib as f64 / 1024.0));
        let _ = write!(out, " | {:>7}", peak(AllocKind::Hakmem));
        for &p in &peers[..3] {
            let _ = write!(out, " {:>8}", peak(p));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\n{} run took {:.1} s (load average at start, end: {})",
        res.mode,
        res.elapsed_s,
        res.machine.loadavg.join(" / ")
    );
}
