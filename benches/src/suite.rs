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
pub fn child_main(k: AllocKind, w: Option<Workload>, threads: usize, scale: Scale, rounds: usize) -> ChildReport {
    let mut ops = 0;
    let mut secs = Vec::new();
    if let Some(w) = w {
        for _ in 0..rounds {
            let (o, s) = run_once(k, w, threads, scale);
            ops = o;
            secs.push(s);
        }
    }
    ChildReport { ops, secs, mem: own_rss() }
}

/// The parent side: spawn `hakmem-bench run ...` and read its report.
pub fn spawn_child(k: AllocKind, w: Option<Workload>, threads: usize, scale: Scale) -> Result<ChildReport, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args([
            "run",
            "--alloc",
            k.name(),
            "--workload",
            w.map_or("idle", |w| w.name()),
            "--threads",
            &threads.to_string(),
            "--scale",
            scale.name(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "child `run --alloc {} --workload {}` failed: {}",
            k.name(),
            w.map_or("idle", |w| w.name()),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("child report {line:?}: {e}"))
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
    let baseline = if opts.rss { Some(spawn_child(AllocKind::Hakmem, None, 1, opts.scale)?.mem) } else { None };
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
                let rep = spawn_child(k, Some(w), threads, opts.scale)?;
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
            r.mem = Some(spawn_child(r.alloc, Some(w), threads, opts.scale)?.mem);
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
