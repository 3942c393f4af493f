//! `hakmem-bench report`: `docs/BENCHMARKS.md` and one SVG chart per
//! workload, from a `--json` record. The SVG is written by hand: a bar chart
//! needs a few dozen elements, not a plotting library.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::allocs::AllocKind;
use crate::memory::{MemCell, MemRun, targets as mem_targets};
use crate::suite::{AllocResult, Cell, Results, mib, si};
use crate::workloads::Workload;

/// Instructions per alloc+free pair measured under callgrind.
#[derive(Clone, Debug)]
pub struct CallgrindFigure {
    /// Allocator name.
    pub alloc: String,
    /// `tiny` or `mid`.
    pub tier: String,
    /// Instructions per pair.
    pub per_pair: f64,
}

/// Parse the output of `benches/callgrind.sh` (lines `alloc tier per_pair`,
/// `#` comments).
pub fn parse_callgrind(text: &str) -> Vec<CallgrindFigure> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let alloc = it.next()?.to_string();
            let tier = it.next()?.to_string();
            let per_pair = it.next()?.parse().ok()?;
            Some(CallgrindFigure { alloc, tier, per_pair })
        })
        .collect()
}

fn color(k: AllocKind) -> &'static str {
    match k {
        AllocKind::Hakmem => "#d62728",
        AllocKind::System => "#7f7f7f",
        AllocKind::Mimalloc => "#1f77b4",
        AllocKind::Jemalloc => "#2ca02c",
        AllocKind::Sol => "#bcbd22",
        AllocKind::HakmemNoPurge => "#ff7f0e",
        AllocKind::HakmemPurgeThread => "#9467bd",
    }
}

/// A chart's opening tag, white background and title.
fn svg_open(s: &mut String, width: f64, height: f64, left: f64, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="{left}" y="22" font-size="15" font-weight="bold">{title}</text>"#
    );
}

/// The plot area of a chart, and its value-to-y mapping.
struct Plot {
    left: f64,
    top: f64,
    w: f64,
    h: f64,
    top_val: f64,
    step: f64,
}

impl Plot {
    /// A plot area whose y axis reaches `max` in round steps.
    fn new(width: f64, height: f64, (left, right, top, bottom): (f64, f64, f64, f64), max: f64) -> Plot {
        let step = nice_step(max);
        let top_val = (max / step).ceil().max(1.0) * step;
        Plot { left, top, w: width - left - right, h: height - top - bottom, top_val, step }
    }
    fn y(&self, v: f64) -> f64 {
        self.top + self.h * (1.0 - v / self.top_val)
    }
    /// Horizontal grid lines with their labels.
    fn y_grid(&self, s: &mut String, label: impl Fn(f64) -> String) {
        let mut v = 0.0;
        while v <= self.top_val + self.step / 2.0 {
            let yy = self.y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                self.left,
                self.left + self.w,
                self.left - 6.0,
                yy + 4.0,
                label(v)
            );
            v += self.step;
        }
    }
    /// The two axis lines.
    fn axes(&self, s: &mut String) {
        let (l, t, b) = (self.left, self.top, self.top + self.h);
        let _ = writeln!(
            s,
            r#"<line x1="{l}" x2="{l}" y1="{t}" y2="{b}" stroke="black"/><line x1="{l}" x2="{}" y1="{b}" y2="{b}" stroke="black"/>"#,
            l + self.w
        );
    }
    /// A legend to the right of the plot.
    fn legend(&self, s: &mut String, kinds: &[AllocKind]) {
        for (i, k) in kinds.iter().enumerate() {
            let ly = self.top + 10.0 + i as f64 * 20.0;
            let lx = self.left + self.w + 20.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{ly:.1}">{}</text>"#,
                ly - 10.0,
                color(*k),
                lx + 18.0,
                k.name()
            );
        }
    }
}

/// A round step for an axis reaching `max` in about five steps.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// An SVG bar chart of one workload: a group per thread count, a bar per
/// allocator (the median), a whisker from min to max.
pub fn svg_chart(w: Workload, cells: &[&Cell]) -> String {
    let (width, height) = (760.0, 380.0);
    // The axis reaches the highest whisker, or 1.5x the highest median when
    // an outlier round would flatten every bar; whiskers past it are clipped
    // (and marked with an arrowhead).
    let max_max = cells.iter().flat_map(|c| c.results.iter().map(|r| r.max)).fold(0.0, f64::max);
    let max_median = cells.iter().flat_map(|c| c.results.iter().map(|r| r.median)).fold(0.0, f64::max);
    let p = Plot::new(width, height, (70.0, 150.0, 40.0, 50.0), max_max.min(1.5 * max_median));
    let (left, top, plot_w, plot_h, top_val) = (p.left, p.top, p.w, p.h, p.top_val);
    let y = |v: f64| p.y(v);
    let mut s = String::new();
    svg_open(&mut s, width, height, left, &format!("{} — allocator calls per second (median, min–max)", w.name()));
    p.y_grid(&mut s, si);
    let groups = cells.len().max(1) as f64;
    let group_w = plot_w / groups;
    for (gi, c) in cells.iter().enumerate() {
        let n = c.results.len().max(1) as f64;
        let bar_w = (group_w * 0.8 / n).min(60.0);
        let x0 = left + gi as f64 * group_w + (group_w - bar_w * n) / 2.0;
        for (bi, r) in c.results.iter().enumerate() {
            let x = x0 + bi as f64 * bar_w;
            let (yt, yb) = (y(r.median), y(0.0));
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{yt:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} t={}: median {}, min {}, max {}</title></rect>"#,
                x + 2.0,
                bar_w - 4.0,
                (yb - yt).max(0.0),
                color(r.alloc),
                r.alloc.name(),
                c.threads,
                si(r.median),
                si(r.min),
                si(r.max)
            );
            let cx = x + bar_w / 2.0;
            let hi = r.max.min(top_val);
            let _ = writeln!(
                s,
                r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                y(r.min),
                y(hi),
                y(hi) - 4.0,
                si(r.median)
            );
            if r.max > top_val {
                let t = y(top_val);
                let _ = writeln!(
                    s,
                    r#"<path d="M{:.1},{:.1} L{cx:.1},{t:.1} L{:.1},{:.1}" fill="none" stroke="black"/>"#,
                    cx - 4.0,
                    t + 6.0,
                    cx + 4.0,
                    t + 6.0
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} thread{}</text>"#,
            left + (gi as f64 + 0.5) * group_w,
            top + plot_h + 20.0,
            c.threads,
            if c.threads == 1 { "" } else { "s" }
        );
    }
    p.axes(&mut s);
    let mut seen: Vec<AllocKind> = Vec::new();
    for c in cells {
        for r in &c.results {
            if !seen.contains(&r.alloc) {
                seen.push(r.alloc);
            }
        }
    }
    p.legend(&mut s, &seen);
    s.push_str("</svg>\n");
    s
}

/// An SVG line chart of one memory workload: resident memory over time of
/// each allocator's first run, a dot where its last free returned.
pub fn svg_rss_chart(c: &MemCell) -> String {
    let (width, height) = (760.0, 380.0);
    let firsts: Vec<&MemRun> = c.summary.iter().filter_map(|s| c.runs.iter().find(|r| r.alloc == s.alloc)).collect();
    let max_kib = firsts.iter().flat_map(|r| r.samples.iter().map(|x| x.1)).fold(0, u64::max) as f64;
    let max_t = firsts.iter().flat_map(|r| r.samples.iter().map(|x| x.0)).fold(0.0, f64::max).max(1.0);
    let p = Plot::new(width, height, (70.0, 150.0, 40.0, 50.0), max_kib / 1024.0);
    let mut s = String::new();
    svg_open(&mut s, width, height, p.left, &format!("{} — resident memory (MiB) over time (s)", c.workload.name()));
    p.y_grid(&mut s, |v| format!("{v:.0}"));
    let x = |t: f64| p.left + p.w * t / max_t;
    let tstep = nice_step(max_t / 1000.0);
    let mut t = 0.0;
    while t * 1000.0 <= max_t {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t * 1000.0),
            p.top + p.h + 18.0,
            if tstep < 1.0 { format!("{t:.1}") } else { format!("{t:.0}") }
        );
        t += tstep;
    }
    for r in &firsts {
        let mut pts = String::new();
        for &(t, kib) in &r.samples {
            let _ = write!(pts, "{:.1},{:.1} ", x(t), p.y(kib as f64 / 1024.0));
        }
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"><title>{}</title></polyline>"#,
            pts.trim_end(),
            color(r.alloc),
            r.alloc.name()
        );
        if let Some(m) = r.mark("freed") {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: last free returned at {:.0} ms, RSS {}</title></circle>"#,
                x(m.t_ms),
                p.y(m.rss_kib as f64 / 1024.0),
                color(r.alloc),
                r.alloc.name(),
                m.t_ms,
                mib(m.rss_kib)
            );
        }
    }
    p.axes(&mut s);
    p.legend(&mut s, &firsts.iter().map(|r| r.alloc).collect::<Vec<_>>());
    s.push_str("</svg>\n");
    s
}

fn ratio_to(c: &Cell, a: AllocKind, b: AllocKind) -> Option<f64> {
    let find = |k: AllocKind| c.results.iter().find(|r| r.alloc == k).map(|r| r.median);
    Some(find(a)? / find(b)?)
}

fn best_peer(c: &Cell) -> Option<&AllocResult> {
    c.results
        .iter()
        .filter(|r| !matches!(r.alloc, AllocKind::Hakmem | AllocKind::Sol))
        .max_by(|a, b| a.median.total_cmp(&b.median))
}

fn status(value: f64, target: f64) -> String {
    if value >= target { "met".into() } else { format!("**short by {:.0}%**", (1.0 - value / target) * 100.0) }
}

/// The targets section: where hakmem stands against issue 3's goals.
fn targets(res: &Results, cg: &[CallgrindFigure]) -> String {
    let mut s = String::new();
    s.push_str("## Where hakmem stands against the targets\n\n");
    s.push_str("Speed, same run: hakmem ≥ 1.2× mimalloc on larson-tiny, larson-mid, c6-heavy and mixed; ≥ 1.0× the best peer (system, mimalloc, jemalloc) elsewhere.\n\n");
    s.push_str("| workload | t | target | hakmem ÷ reference | status |\n|---|---:|---|---:|---|\n");
    for c in &res.cells {
        let primary =
            matches!(c.workload, Workload::LarsonTiny | Workload::LarsonMid | Workload::C6Heavy | Workload::Mixed);
        let (target, reference, r) = if primary {
            (1.2, "mimalloc".to_string(), ratio_to(c, AllocKind::Hakmem, AllocKind::Mimalloc))
        } else {
            match best_peer(c) {
                Some(b) => (1.0, format!("best peer ({})", b.alloc.name()), ratio_to(c, AllocKind::Hakmem, b.alloc)),
                None => continue,
            }
        };
        let Some(r) = r else { continue };
        let _ = writeln!(
            s,
            "| {} | {} | ≥ {target:.1}× {reference} | {r:.2}× | {} |",
            c.workload.name(),
            c.threads,
            status(r, target)
        );
    }
    s.push_str("\nMemory: hakmem's peak RSS ≤ mimalloc's in every cell (fresh child per cell).\n\n");
    s.push_str("| workload | t | hakmem peak | mimalloc peak | status |\n|---|---:|---:|---:|---|\n");
    for c in &res.cells {
        let peak = |k: AllocKind| c.results.iter().find(|r| r.alloc == k).and_then(|r| r.mem).map(|m| m.peak_kib);
        let (Some(h), Some(m)) = (peak(AllocKind::Hakmem), peak(AllocKind::Mimalloc)) else {
            continue;
        };
        let st =
            if h <= m { "met".to_string() } else { format!("**{:.0}% above**", (h as f64 / m as f64 - 1.0) * 100.0) };
        let _ = writeln!(s, "| {} | {} | {} | {} | {st} |", c.workload.name(), c.threads, mib(h), mib(m));
    }
    let find = |a: &str, t: &str| cg.iter().find(|f| f.alloc == a && f.tier == t).map(|f| f.per_pair);
    s.push_str("\nInstructions: a Tiny alloc+free pair ≤ mimalloc's under callgrind.\n\n");
    match (find("hakmem", "tiny"), find("mimalloc", "tiny")) {
        (Some(h), Some(m)) => {
            let st = if h <= m { "met".to_string() } else { format!("**{:.0}% above**", (h / m - 1.0) * 100.0) };
            let _ = writeln!(s, "hakmem {h:.1} vs mimalloc {m:.1} instructions per Tiny pair: {st}.");
        }
        _ => s.push_str("Not measured in this report (run `benches/callgrind.sh` and pass `--callgrind`).\n"),
    }
    s
}

/// Write `out` (markdown) and its charts in `<dir of out>/benchmarks/`.
pub fn write_report(
    res: &Results,
    out: &Path,
    callgrind: &[CallgrindFigure],
    notes: Option<&str>,
) -> std::io::Result<Vec<PathBuf>> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let chart_dir = dir.join("benchmarks");
    std::fs::create_dir_all(&chart_dir)?;
    let mut written = Vec::new();
    let m = &res.machine;
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    let _ = writeln!(
        md,
        "Generated by `hakmem-bench report` from a `{}` run on {} ({} timed rounds per cell, {}; the run took {:.0} s). \
         Regenerate with:\n\n```sh\ncargo run --release -p hakmem-bench -- --{} --json target/bench.json   # --full includes the memory workloads\n\
         cargo run --release -p hakmem-bench -- purge-cost --json target/pc.json\n\
         cargo build --release -p hakmem-cabi && cargo run --release -p hakmem-bench -- --preload --json target/pre.json\n\
         benches/callgrind.sh > target/callgrind.txt\n\
         cargo run --release -p hakmem-bench -- report target/bench.json target/pc.json target/pre.json --callgrind target/callgrind.txt \\\n             --notes docs/benchmarks/notes.md\n```\n",
        res.mode,
        res.date,
        res.rounds,
        if res.isolate {
            "each round in a fresh process"
        } else {
            "one warm-up round, then rounds interleaved in one process with the order rotated each round"
        },
        res.elapsed_s,
        if res.mode == "full" { "full" } else { "quick" }
    );
    if let Some(n) = notes {
        md.push_str(n.trim_end());
        md.push_str("\n\n");
    }
    md.push_str("## Machine\n\n");
    let _ = writeln!(md, "- CPU: {} ({} logical CPUs usable)", m.cpu, m.cpus);
    let _ = writeln!(md, "- Memory: {:.1} GiB", m.mem_kib as f64 / (1024.0 * 1024.0));
    let _ = writeln!(md, "- Kernel: {}; transparent huge pages: `{}`", m.kernel, m.thp);
    let _ = writeln!(md, "- Compiler: {}", m.rustc);
    for (k, v) in &m.versions {
        let _ = writeln!(md, "- {k}: {v}");
    }
    if !m.commit.is_empty() {
        let _ = writeln!(md, "- hakmem commit: `{}`", m.commit);
    }
    let _ = writeln!(md, "- Load average (1/5/15 min) at start and end: {}", m.loadavg.join(" → "));
    md.push_str("\n## How to read\n\n");
    md.push_str(
        "- **ops/s** counts allocator calls (each alloc, free and realloc is one) per second of wall time, \
         summed over threads. Every block is stamped when allocated and checked when freed.\n\
         - **ratio** is the allocator's median divided by hakmem's: above 1 the allocator is faster than hakmem.\n\
         - Every allocator is called through its `GlobalAlloc` implementation behind a non-inlined call, \
         as `__rust_alloc` is; the program's own global allocator is a separate harness allocator.\n\
         - **peak RSS** is `VmHWM` and **final RSS** `VmRSS` of a fresh child process that ran one round \
         (after the workload freed everything); both include the harness's own share, shown below.\n\
         - **sol** is the speed-of-light floor (per-thread LIFO lists of power-of-two blocks, no ownership, \
         no cross-thread frees). It runs only where every free is local and sizes are at most 64 KiB.\n",
    );
    if let Some(b) = res.baseline_rss_kib {
        let _ = writeln!(md, "- A child running no workload: peak {}, final {}.", mib(b.peak_kib), mib(b.final_kib));
    }
    md.push('\n');
    md.push_str(&targets(res, callgrind));
    if !callgrind.is_empty() {
        md.push_str("\n## Instructions per alloc+free pair (callgrind)\n\n");
        md.push_str("From `benches/callgrind.sh`: instructions executed inside the `GlobalAlloc` calls per pair of the `fastpath` loop \
            (difference of two pair counts, so first-use set-up is excluded), less the same for a null allocator (the call shims' own cost). \
            Noise-free, unlike every timing above.\n\n| allocator | Tiny (32 B) | Mid (4 KiB) |\n|---|---:|---:|\n");
        let mut names: Vec<&str> = Vec::new();
        for f in callgrind {
            if !names.contains(&f.alloc.as_str()) {
                names.push(&f.alloc);
            }
        }
        for n in names {
            let get = |t: &str| {
                callgrind
                    .iter()
                    .find(|f| f.alloc == n && f.tier == t)
                    .map_or("-".into(), |f| format!("{:.1}", f.per_pair))
            };
            let _ = writeln!(md, "| {n} | {} | {} |", get("tiny"), get("mid"));
        }
    }
    md.push_str("\n## Workloads\n");
    for w in Workload::ALL {
        let cells: Vec<&Cell> = res.cells.iter().filter(|c| c.workload == w).collect();
        if cells.is_empty() {
            continue;
        }
        let file = chart_dir.join(format!("{}.svg", w.name()));
        std::fs::write(&file, svg_chart(w, &cells))?;
        written.push(file);
        let _ =
            writeln!(md, "\n### {}\n\n{}\n\n![{}](benchmarks/{}.svg)\n", w.name(), w.describe(), w.name(), w.name());
        md.push_str("| t | allocator | median ops/s | min | max | ratio | peak RSS | final RSS |\n|---:|---|---:|---:|---:|---:|---:|---:|\n");
        for c in cells {
            for r in &c.results {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    c.threads,
                    r.alloc.name(),
                    si(r.median),
                    si(r.min),
                    si(r.max),
                    r.ratio_to_hakmem.map_or("-".into(), |x| format!("{x:.2}")),
                    r.mem.map_or("-".into(), |m| mib(m.peak_kib)),
                    r.mem.map_or("-".into(), |m| mib(m.final_kib)),
                );
            }
        }
    }
    let paths: Vec<(&Cell, &crate::suite::Paths)> = res
        .cells
        .iter()
        .filter_map(|c| {
            c.results.iter().find(|r| r.alloc == AllocKind::Hakmem).and_then(|r| r.paths.as_ref()).map(|p| (c, p))
        })
        .collect();
    if !paths.is_empty() {
        md.push_str("\n## hakmem's fast and slow paths\n\n");
        md.push_str(
            "From `hakmem::stats()` in the memory child of each cell (one round, a fresh process, counter sampling off: \
             `HAKMEM_TINY_COUNT_SAMPLE=0`, `HAKMEM_POOL_COUNT_SAMPLE=0`, so the counts are exact). Fast = served by the \
             thread's bins; slow = a refill (alloc) or a return to the span (free); remote = freed by a thread that did \
             not own the block, counted when the owner drained it.\n\n\
             | workload | t | Tiny allocs | fast | Tiny frees | fast | slow | remote | Mid allocs | fast | Mid frees | fast | slow | remote | Large | flushes |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let pct =
            |a: u64, b: u64| if b == 0 { "-".to_string() } else { format!("{:.1}%", 100.0 * a as f64 / b as f64) };
        for (c, p) in paths {
            let _ = write!(md, "| {} | {} ", c.workload.name(), c.threads);
            for t in [&p.tiny, &p.mid] {
                let _ = write!(
                    md,
                    "| {} | {} | {} | {} | {} | {} ",
                    t.allocs(),
                    pct(t.fast_alloc, t.allocs()),
                    t.frees(),
                    pct(t.fast_free, t.frees()),
                    pct(t.slow_free, t.frees()),
                    pct(t.remote_free, t.frees())
                );
            }
            let _ = writeln!(md, "| {} | {} |", p.large_allocs, p.flushes);
        }
    }
    if let Some(m) = &res.memory {
        md.push_str(&memory_section(m, &chart_dir, &mut written)?);
    }
    if let Some(p) = &res.preload {
        md.push_str("\n## Programs under LD_PRELOAD\n\n");
        let _ = writeln!(
            md,
            "From `hakmem-bench --preload`: each program run {} times per allocator after a warm-up run, allocators in \
             rotating order; medians. Peak RSS is `ru_maxrss` from `wait4`. A probe checked that `malloc` resolves to \
             each library, and every hakmem warm-up run printed its `HAKMEM_STATS` line. Ratio = allocator ÷ hakmem \
             (above 1: slower, or more memory). The harness's own RSS, a floor under every figure: {}.{}\n",
            p.runs,
            mib(p.floor_kib),
            if p.skipped.is_empty() { String::new() } else { format!(" Skipped: {}.", p.skipped.join("; ")) }
        );
        for c in &p.cells {
            let _ = writeln!(md, "\n### {}\n\n{}\n", c.workload, c.what);
            md.push_str("| allocator | wall s | min | max | ratio | CPU s | peak RSS | ratio |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
            let h = c.figures.iter().find(|f| f.alloc == "hakmem");
            for f in &c.figures {
                let r = |x: f64, y: Option<f64>| y.filter(|&y| y > 0.0).map_or("-".into(), |y| format!("{:.2}", x / y));
                let _ = writeln!(
                    md,
                    "| {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {} | {} |",
                    f.alloc,
                    f.wall_s,
                    f.wall_min_s,
                    f.wall_max_s,
                    r(f.wall_s, h.map(|h| h.wall_s)),
                    f.cpu_s,
                    mib(f.maxrss_kib),
                    r(f.maxrss_kib as f64, h.map(|h| h.maxrss_kib as f64))
                );
            }
        }
    }
    std::fs::write(out, md)?;
    written.push(out.to_path_buf());
    Ok(written)
}

/// The memory workloads and purge-cost sections, with one RSS chart per workload.
fn memory_section(
    m: &crate::memory::MemoryResults,
    chart_dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<String> {
    let mut md = String::new();
    if !m.cells.is_empty() {
        md.push_str("\n## Memory over time\n\n");
        let _ = writeln!(
            md,
            "From `hakmem-bench memory` ({:.0} s): each (workload, allocator) ran {} time(s), each in a fresh process, \
             sampling `/proc/self/statm` every 10 ms (every 1 ms for 200 ms after the last free). **baseline** is RSS \
             after one warm-up allocation per tier, before the workload; **peak** is `VmHWM`; **final** is RSS at the \
             end of the idle time (no allocator call in it); **back** is how long after the last free RSS first came \
             within 10% of the baseline. Medians over the runs; the charts show each allocator's first run (a dot \
             where the last free returned). Ratios are peer ÷ hakmem (above 1: the peer holds more). All figures \
             include the harness's own share (the same in every process).\n",
            m.elapsed_s, m.reps
        );
        md.push_str("| workload | target | status | figures |\n|---|---|---|---|\n");
        for c in &m.cells {
            for t in mem_targets(c) {
                let _ = writeln!(md, "| {} | {} | {} | {} |", c.workload.name(), t.target, t.status(), t.detail);
            }
        }
        for c in &m.cells {
            let file = chart_dir.join(format!("mem-{}.svg", c.workload.name()));
            std::fs::write(&file, svg_rss_chart(c))?;
            written.push(file);
            let _ = writeln!(
                md,
                "\n### {}\n\n{}\n\n![{}](benchmarks/mem-{}.svg)\n",
                c.workload.name(),
                c.workload.describe(),
                c.workload.name(),
                c.workload.name()
            );
            md.push_str("| allocator | baseline | peak | final | back | peak ratio | final ratio |\n|---|---:|---:|---:|---:|---:|---:|\n");
            let h = c.summary.iter().find(|s| s.alloc == AllocKind::Hakmem);
            for s in &c.summary {
                let r = |x: u64, y: Option<u64>| {
                    y.filter(|&y| y > 0).map_or("-".into(), |y| format!("{:.2}", x as f64 / y as f64))
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    s.alloc.name(),
                    mib(s.baseline_kib),
                    mib(s.peak_kib),
                    mib(s.final_kib),
                    s.back_ms.map_or("never".into(), |b| format!("{b:.0} ms")),
                    r(s.peak_kib, h.map(|h| h.peak_kib)),
                    r(s.final_kib, h.map(|h| h.final_kib)),
                );
            }
            if let Some(r) = c.runs.iter().find(|r| r.alloc == AllocKind::Hakmem) {
                md.push_str("\nhakmem's own account at each mark of its first run (`hakmem::stats()`):\n\n");
                for mk in &r.marks {
                    if let Some(hs) = &mk.hakmem {
                        let _ = writeln!(
                            md,
                            "- `{}` at {:.0} ms, RSS {}: {}",
                            mk.name,
                            mk.t_ms,
                            mib(mk.rss_kib),
                            hs.line()
                        );
                    }
                }
            }
        }
    }
    if let Some(pc) = &m.purge_cost {
        md.push_str("\n## What purging costs\n\n");
        let _ = writeln!(
            md,
            "From `hakmem-bench purge-cost`: hakmem with its default purging against `hakmem-nopurge` ({}), each round \
             a fresh child per configuration running a warm-up round and then the timed one, {} rounds per cell, \
             median ops/s. Ratio = nopurge ÷ default (above 1: purging costs that much). Target: at most 3% \
             (geometric mean): **{}**, {:+.1}%.\n",
            crate::allocs::AllocKind::HakmemNoPurge
                .env()
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect::<Vec<_>>()
                .join(", "),
            pc.rounds,
            if pc.met() { "met" } else { "missed" },
            (pc.geomean - 1.0) * 100.0
        );
        for f in &pc.failures {
            let _ = writeln!(md, "**Failed** (cell left out): {f}\n");
        }
        md.push_str("| workload | t | default ops/s | nopurge ops/s | ratio | purged per round |\n|---|---:|---:|---:|---:|---:|\n");
        for c in &pc.cells {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.3} | {} |",
                c.workload.name(),
                c.threads,
                si(c.default_median),
                si(c.nopurge_median),
                c.ratio(),
                mib(c.purged_bytes / 1024)
            );
        }
    }
    Ok(md)
}
