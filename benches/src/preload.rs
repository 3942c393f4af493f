//! `hakmem-bench --preload`: C, shell and Python workloads run as separate
//! programs with each allocator's shared library in `LD_PRELOAD` — hakmem's
//! `libhakmem.so`, glibc (nothing preloaded), and Debian's mimalloc, jemalloc
//! and tcmalloc where installed. Wall time and peak RSS (`ru_maxrss` from
//! `wait4`: the largest of the program and the children it waited for),
//! medians over the runs, allocators taking turns in a rotating order.
//!
//! The allocator under test is checked, not assumed: before measuring, the
//! cabi crate's `probe.c` (compiled here with `cc`) prints, under each
//! preload, the object its `malloc` resolves to, which must be the library
//! named; and every hakmem run must append its `HAKMEM_STATS` line naming
//! the workload's program, or the run fails.

use std::ffi::OsString;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::suite::median;

/// An allocator as a preloaded library.
#[derive(Clone, Debug)]
pub struct Lib {
    /// `hakmem`, `glibc`, `mimalloc`, `jemalloc`, `tcmalloc`.
    pub name: &'static str,
    /// The library to preload; `None` for glibc.
    pub path: Option<PathBuf>,
}

/// A program to run.
#[derive(Clone, Debug)]
pub struct Program {
    /// Workload name.
    pub name: &'static str,
    /// What it is.
    pub what: &'static str,
    /// Command line.
    pub argv: Vec<OsString>,
    /// Extra environment (the same for every allocator).
    pub env: Vec<(&'static str, &'static str)>,
    /// The program name hakmem's stats line must carry.
    pub prog: String,
}

/// Medians of one (workload, allocator).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreloadFigure {
    /// Allocator name.
    pub alloc: String,
    /// Median wall time, seconds.
    pub wall_s: f64,
    /// Least and greatest wall time.
    pub wall_min_s: f64,
    /// See `wall_min_s`.
    pub wall_max_s: f64,
    /// Median user + system CPU time, seconds.
    pub cpu_s: f64,
    /// Median peak RSS, KiB.
    pub maxrss_kib: u64,
    /// Runs.
    pub runs: usize,
}

/// One workload's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreloadCell {
    /// Workload name.
    pub workload: String,
    /// What it runs.
    pub what: String,
    /// One per allocator.
    pub figures: Vec<PreloadFigure>,
}

/// Every figure of a `--preload` run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreloadResults {
    /// Runs per (workload, allocator).
    pub runs: usize,
    /// The preloaded libraries, by allocator name.
    pub libs: Vec<(String, String)>,
    /// Peers skipped (library not installed), with the reason.
    pub skipped: Vec<String>,
    /// This harness's own peak RSS when it started the programs, KiB: a
    /// floor under every figure (Linux carries the high-water mark across `exec`).
    pub floor_kib: u64,
    /// One per workload.
    pub cells: Vec<PreloadCell>,
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where a Debian library lives, if installed.
fn find_lib(file: &str) -> Option<PathBuf> {
    let dirs =
        ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"];
    if let Some(p) = dirs.iter().map(|d| Path::new(d).join(file)).find(|p| p.exists()) {
        return Some(p);
    }
    // Elsewhere: ask the loader's cache.
    let out = Command::new("ldconfig").arg("-p").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with(file))
        .and_then(|l| l.split("=>").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| p.exists())
}

/// hakmem (from `lib`, default `target/release/libhakmem.so`), glibc, and the
/// peers that are installed; the notes say which were skipped.
pub fn libraries(lib: Option<PathBuf>, names: &[String]) -> Result<(Vec<Lib>, Vec<String>), String> {
    let hak = lib.unwrap_or_else(|| workspace_root().join("target/release/libhakmem.so"));
    let hak = fs::canonicalize(&hak).map_err(|_| {
        format!("{} not found: build it with `cargo build --release -p hakmem-cabi` (or pass --lib)", hak.display())
    })?;
    let mut libs = vec![Lib { name: "hakmem", path: Some(hak) }, Lib { name: "glibc", path: None }];
    let mut skipped = Vec::new();
    for (name, file) in
        [("mimalloc", "libmimalloc.so.2"), ("jemalloc", "libjemalloc.so.2"), ("tcmalloc", "libtcmalloc_minimal.so.4")]
    {
        match find_lib(file) {
            Some(p) => libs.push(Lib { name, path: Some(p) }),
            None => skipped.push(format!("{name}: {file} not installed")),
        }
    }
    if !names.is_empty() {
        libs.retain(|l| l.name == "hakmem" || names.iter().any(|n| n == l.name));
    }
    Ok((libs, skipped))
}

fn cc(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let st = Command::new("cc").args(args).status().map_err(|e| format!("cc: {e}"))?;
    if st.success() { Ok(()) } else { Err(format!("cc {args:?} failed")) }
}

/// Build the C programs and the inputs in `dir`; the workloads.
pub fn prepare(dir: &Path, quick: bool) -> Result<Vec<Program>, String> {
    let programs = workspace_root().join("os-linux/cabi/tests/programs");
    let mstress = dir.join("mstress");
    cc(&[
        "-O2".as_ref(),
        "-pthread".as_ref(),
        programs.join("mstress.c").as_os_str(),
        "-o".as_ref(),
        mstress.as_os_str(),
    ])?;
    // The sort input: a few MB of words and numbers, deterministic.
    let lines = dir.join("lines.txt");
    let mut out = BufWriter::new(fs::File::create(&lines).map_err(|e| e.to_string())?);
    let mut rng = crate::workloads::Rng::new(0x5047);
    for _ in 0..if quick { 200_000 } else { 600_000 } {
        let len = 1 + rng.below(20);
        let word: String = (0..len).map(|_| (b'a' + rng.below(8) as u8) as char).collect();
        writeln!(out, "{word} {}", rng.below(1_000_000_000)).map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    // The interpreter itself, not a pyenv-style shim script around it.
    let py = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let python = String::from_utf8_lossy(&py.stdout).trim().to_string();
    let py_name = Path::new(&python).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The compiler's input: one C file of many small functions, which cc1
    // parses and optimises with many small allocations.
    let big_c = dir.join("big.c");
    let funcs = if quick { 800 } else { 3000 };
    let mut src = String::from("#include <stdio.h>\n");
    for i in 0..funcs {
        src += &format!(
            "static int f{i}(int x) {{ int s = 0; for (int j = 0; j < x % {m}; j++) s += j * {i}; return s ^ x; }}\n",
            m = i + 7
        );
    }
    src += "int main(void) { long t = 0;\n";
    for i in 0..funcs {
        src += &format!("  t += f{i}({i});\n");
    }
    src += "  printf(\"%ld\\n\", t); return 0; }\n";
    fs::write(&big_c, src).map_err(|e| e.to_string())?;
    let os = |s: &str| OsString::from(s);
    let steps = if quick { "1000000" } else { "4000000" };
    Ok(vec![
        Program {
            name: "mstress",
            what: "cabi's mstress.c (gcc -O2): 2 threads, a 4096-block window each, 8 B–32 KiB, every 8th free cross-thread",
            argv: vec![mstress.clone().into(), os("2"), os(steps), os("0")],
            env: vec![],
            prog: "mstress".into(),
        },
        Program {
            name: "mstress-large",
            what: "the same with one block in 64 of 64 KiB–1 MiB",
            argv: vec![mstress.into(), os("2"), os(if quick { "250000" } else { "2000000" }), os("1")],
            env: vec![],
            prog: "mstress".into(),
        },
        Program {
            name: "sort",
            what: "coreutils sort -k2,2n -k1,1 of a few MB of text (LC_ALL=C)",
            argv: vec![os("sort"), os("-k2,2n"), os("-k1,1"), os("-o"), dir.join("sorted.txt").into(), lines.into()],
            env: vec![("LC_ALL", "C")],
            prog: "sort".into(),
        },
        Program {
            name: "python-dict",
            what: "cabi's dict.py (dicts, lists, strings, json) with PYTHONMALLOC=malloc, so every object goes through malloc",
            argv: vec![os(&python), programs.join("dict.py").into(), os(if quick { "100000" } else { "400000" })],
            env: vec![("PYTHONMALLOC", "malloc"), ("PYTHONHASHSEED", "0")],
            prog: py_name,
        },
        Program {
            name: "gcc",
            what: "gcc -O2 -c of a generated C file of many small functions (800, 3000 with --full); cc1's figures",
            argv: vec![os("gcc"), os("-O2"), os("-c"), big_c.into(), os("-o"), dir.join("big.o").into()],
            env: vec![],
            prog: "cc1".into(),
        },
    ])
}

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// `struct rusage` on 64-bit Linux.
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut Rusage) -> i32;
    fn getrusage(who: i32, rusage: *mut Rusage) -> i32;
}

fn zero_rusage() -> Rusage {
    Rusage { utime: Timeval { sec: 0, usec: 0 }, stime: Timeval { sec: 0, usec: 0 }, maxrss: 0, rest: [0; 13] }
}

struct Sample {
    wall_s: f64,
    cpu_s: f64,
    maxrss_kib: u64,
}

fn command(p: &Program, l: &Lib) -> Command {
    let mut c = Command::new(&p.argv[0]);
    c.args(&p.argv[1..]).stdin(Stdio::null()).stdout(Stdio::null());
    for &(k, v) in &p.env {
        c.env(k, v);
    }
    match &l.path {
        Some(path) => c.env("LD_PRELOAD", path),
        None => c.env_remove("LD_PRELOAD"),
    };
    c
}

/// Run `p` under `l`: wall time, CPU time, peak RSS. `stats` asks hakmem to
/// append its statistics line there.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives the rusage
fn run(p: &Program, l: &Lib, stats: Option<&Path>) -> Result<Sample, String> {
    let mut c = command(p, l);
    if let Some(s) = stats {
        c.env("HAKMEM_STATS", s);
    }
    let start = Instant::now();
    let child = c.spawn().map_err(|e| format!("{}: {e}", p.name))?;
    let mut status = 0;
    let mut ru = zero_rusage();
    // SAFETY: waits for our own child, writing into our locals; the child is
    // reaped here, so `child` is never waited for again.
    let pid = unsafe { wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall_s = start.elapsed().as_secs_f64();
    if pid != child.id() as i32 {
        return Err(format!("{}: wait4 failed", p.name));
    }
    if status & 0x7f != 0 || (status >> 8) & 0xff != 0 {
        return Err(format!("{} under {} failed (wait status {status:#x})", p.name, l.name));
    }
    let t = |tv: &Timeval| tv.sec as f64 + tv.usec as f64 / 1e6;
    Ok(Sample { wall_s, cpu_s: t(&ru.utime) + t(&ru.stime), maxrss_kib: ru.maxrss.max(0) as u64 })
}

/// Check that `malloc` in a program run under each library resolves to it.
fn verify(dir: &Path, libs: &[Lib]) -> Result<(), String> {
    let probe = dir.join("probe");
    let src = workspace_root().join("os-linux/cabi/tests/programs/probe.c");
    cc(&["-O2".as_ref(), src.as_os_str(), "-o".as_ref(), probe.as_os_str(), "-ldl".as_ref()])?;
    for l in libs {
        let p = Program { name: "probe", what: "", argv: vec![probe.clone().into()], env: vec![], prog: String::new() };
        let out = command(&p, l).stdout(Stdio::piped()).output().map_err(|e| format!("probe: {e}"))?;
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = match &l.path {
            Some(path) => fs::canonicalize(&got).ok() == fs::canonicalize(path).ok(),
            None => got.contains("libc.so"),
        };
        if !out.status.success() || !ok {
            return Err(format!("{}: malloc resolves to {got:?}, not the library under test", l.name));
        }
    }
    Ok(())
}

/// This process's peak RSS, after resetting it to the current RSS where the
/// kernel allows (`clear_refs` 5).
fn own_floor_kib() -> u64 {
    let _ = fs::write("/proc/self/clear_refs", "5");
    let mut ru = zero_rusage();
    // SAFETY: fills our local; RUSAGE_SELF = 0.
    unsafe { getrusage(0, &mut ru) };
    ru.maxrss.max(0) as u64
}

/// Run every workload `runs` times under every library (after one warm-up
/// run each, which for hakmem must print its stats line), printing a table
/// per workload.
pub fn run_preload(libs: &[Lib], skipped: Vec<String>, runs: usize, quick: bool) -> Result<PreloadResults, String> {
    let dir = std::env::temp_dir().join(format!("hakmem-bench-preload.{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(&dir, libs, skipped, runs, quick);
    let _ = fs::remove_dir_all(&dir);
    result
}

fn run_in(dir: &Path, libs: &[Lib], skipped: Vec<String>, runs: usize, quick: bool) -> Result<PreloadResults, String> {
    let programs = prepare(dir, quick)?;
    verify(dir, libs)?;
    for s in &skipped {
        println!("note: {s}; skipped");
    }
    let floor_kib = own_floor_kib();
    println!(
        "hakmem-bench --preload: {runs} runs per (workload, allocator) after a warm-up run, allocators in rotating order; \
         medians; ratio = allocator ÷ hakmem (above 1: slower / more memory); harness RSS floor {:.1} MiB",
        floor_kib as f64 / 1024.0
    );
    for l in libs {
        println!(
            "  {:<9} {}",
            l.name,
            l.path.as_ref().map_or("(nothing preloaded)".into(), |p| p.display().to_string())
        );
    }
    let mut cells = Vec::new();
    for p in &programs {
        for l in libs {
            let stats = dir.join("stats.txt");
            let _ = fs::remove_file(&stats);
            run(p, l, (l.name == "hakmem").then_some(stats.as_path()))?;
            if l.name == "hakmem" {
                let text = fs::read_to_string(&stats).unwrap_or_default();
                let want = format!(" prog={} heaps=", p.prog);
                if !text.lines().any(|x| x.starts_with("hakmem: pid=") && x.contains(&want)) {
                    return Err(format!(
                        "{}: no HAKMEM_STATS line from {}: was hakmem in use?\n{text}",
                        p.name, p.prog
                    ));
                }
            }
        }
        let n = libs.len();
        let mut samples: Vec<Vec<Sample>> = (0..n).map(|_| Vec::new()).collect();
        for r in 0..runs {
            for j in 0..n {
                let i = (r + j) % n;
                samples[i].push(run(p, &libs[i], None)?);
            }
        }
        let figures: Vec<PreloadFigure> = libs
            .iter()
            .zip(&samples)
            .map(|(l, s)| {
                let wall: Vec<f64> = s.iter().map(|x| x.wall_s).collect();
                PreloadFigure {
                    alloc: l.name.into(),
                    wall_s: median(&wall),
                    wall_min_s: wall.iter().copied().fold(f64::INFINITY, f64::min),
                    wall_max_s: wall.iter().copied().fold(0.0, f64::max),
                    cpu_s: median(&s.iter().map(|x| x.cpu_s).collect::<Vec<_>>()),
                    maxrss_kib: median(&s.iter().map(|x| x.maxrss_kib as f64).collect::<Vec<_>>()) as u64,
                    runs: s.len(),
                }
            })
            .collect();
        let cell = PreloadCell { workload: p.name.into(), what: p.what.into(), figures };
        print_cell(&cell);
        cells.push(cell);
    }
    let libs = libs
        .iter()
        .map(|l| (l.name.to_string(), l.path.as_ref().map_or("-".into(), |p| p.display().to_string())))
        .collect();
    Ok(PreloadResults { runs, libs, skipped, floor_kib, cells })
}

fn print_cell(c: &PreloadCell) {
    let h = c.figures.iter().find(|f| f.alloc == "hakmem");
    println!("\n{} — {}", c.workload, c.what);
    println!(
        "  {:<9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>10} {:>7}",
        "alloc", "wall s", "min", "max", "ratio", "cpu s", "peak RSS", "ratio"
    );
    for f in &c.figures {
        let r = |x: f64, y: Option<f64>| y.filter(|&y| y > 0.0).map_or("-".into(), |y| format!("{:.2}x", x / y));
        println!(
            "  {:<9} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>8.3} {:>10} {:>7}",
            f.alloc,
            f.wall_s,
            f.wall_min_s,
            f.wall_max_s,
            r(f.wall_s, h.map(|h| h.wall_s)),
            f.cpu_s,
            crate::suite::mib(f.maxrss_kib),
            r(f.maxrss_kib as f64, h.map(|h| h.maxrss_kib as f64)),
        );
    }
}
