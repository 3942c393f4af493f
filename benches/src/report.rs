//! `hakmem-bench report`: `docs/BENCHMARKS.md` and one SVG chart per
//! workload, from a `--json` record. The SVG is written by hand: a bar chart
//! needs a few dozen elements, not a plotting library.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::allocs::AllocKind;
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
    let (left, right, top, bottom) = (70.0, 150.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    // The axis reaches the highest whisker, or 1.5x the highest median when
    // an outlier round would flatten every bar; whiskers past it are clipped
    // (and marked with an arrowhead).
    let max_max = cells.iter().flat_map(|c| c.results.iter().map(|r| r.max)).fold(0.0, f64::max);
    let max_median = cells.iter().flat_map(|c| c.results.iter().map(|r| r.median)).fold(0.0, f64::max);
    let max = max_max.min(1.5 * max_median);
    let step = nice_step(max);
    let top_val = (max / step).ceil().max(1.0) * step;
    let y = |v: f64| top + plot_h * (1.0 - v / top_val);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{width}" height="{height}" fill="white"/><text x="{left}" y="22" font-size="15" font-weight="bold">{} — allocator calls per second (median, min–max)</text>"#,
        w.name()
    );
    let mut v = 0.0;
    while v <= top_val + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0,
            si(v)
        );
        v += step;
    }
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
    let _ = writeln!(
        s,
        r#"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="black"/><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    let mut seen: Vec<AllocKind> = Vec::new();
    for c in cells {
        for r in &c.results {
            if !seen.contains(&r.alloc) {
                seen.push(r.alloc);
            }
        }
    }
    for (i, k) in seen.iter().enumerate() {
        let ly = top + 10.0 + i as f64 * 20.0;
        let lx = left + plot_w + 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
            ly - 10.0,
            color(*k),
            lx + 18.0,
            ly,
            k.name()
        );
    }
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
         Regenerate with:\n\n```sh\ncargo run --release -p hakmem-bench -- --{} --json target/bench.json\nbenches/callgrind.sh > target/callgrind.txt\ncargo run --release -p hakmem-bench -- report target/bench.json --callgrind target/callgrind.txt\n```\n",
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
    std::fs::write(out, md)?;
    written.push(out.to_path_buf());
    Ok(written)
}
