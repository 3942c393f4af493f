//! Wall time and peak RSS of C and shell workloads with each allocator
//! preloaded: hakmem (`libhakmem.so`), glibc (nothing preloaded), and
//! Debian's mimalloc, jemalloc and tcmalloc where installed.
//!
//! ```sh
//! cargo build --release -p hakmem-cabi
//! cargo run --release -p hakmem-cabi --example preload_compare -- [--runs N] [workload ...]
//! ```
//!
//! Workloads: `mstress` (a C malloc stress, 2 threads, cross-thread frees,
//! blocks up to 32 KiB), `mstress-large` (the same with one block in 64 from
//! 64 KiB to 1 MiB),
//! `python` (a dict/list-heavy script), `sort` (of a 24 MB file), `gcc`
//! (compiling a 3000-function C file at -O2). Each allocator runs each
//! workload once to warm up, then `N` times (default 5), the allocators taking
//! turns so that drift on a shared machine spreads over all of them. Times
//! are medians of wall time; RSS is the median of `ru_maxrss` from `wait4`
//! (the largest of the process and the children it waited for).
//!
//! Before measuring, a probe program run under each allocator reports which
//! shared object its `malloc` resolves to, and the run stops if that is not
//! the library under test; hakmem's warm-up run must also print its
//! `HAKMEM_STATS` line. So a silent fallback to glibc cannot be measured as
//! hakmem.

use std::ffi::OsString;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Alloc {
    name: &'static str,
    /// The library to preload; `None` for glibc.
    lib: Option<PathBuf>,
}

struct Workload {
    name: &'static str,
    argv: Vec<OsString>,
    /// The program name in hakmem's stats line (for the in-use check).
    prog: String,
}

struct Sample {
    wall: Duration,
    max_rss_kib: i64,
}

fn main() {
    let mut runs = 5usize;
    let mut only: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "-h" | "--help" => {
                println!("preload_compare [--runs N] [mstress|mstress-large|python|sort|gcc ...]");
                return;
            }
            w => only.push(w.to_string()),
        }
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let hakmem =
        std::env::var_os("HAKMEM_LIB").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/libhakmem.so"));
    let hakmem = fs::canonicalize(&hakmem)
        .unwrap_or_else(|_| panic!("{} not found: run `cargo build --release -p hakmem-cabi` first", hakmem.display()));

    let mut allocs = vec![Alloc { name: "glibc", lib: None }, Alloc { name: "hakmem", lib: Some(hakmem) }];
    for (name, file) in
        [("mimalloc", "libmimalloc.so.2"), ("jemalloc", "libjemalloc.so.2"), ("tcmalloc", "libtcmalloc_minimal.so.4")]
    {
        match find_lib(file) {
            Some(lib) => allocs.push(Alloc { name, lib: Some(lib) }),
            None => eprintln!("note: {file} not installed; {name} skipped"),
        }
    }

    let dir = std::env::temp_dir().join(format!("hakmem-compare.{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let programs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let workloads = prepare(&dir, &programs);
    let workloads: Vec<Workload> =
        workloads.into_iter().filter(|w| only.is_empty() || only.iter().any(|o| o == w.name)).collect();

    verify(&dir, &programs, &allocs);

    // A child's `ru_maxrss` is at least this process's peak RSS when it
    // spawned the child (the child starts from our address space, and Linux
    // keeps the larger high-water mark across `exec`). Reset our mark to our
    // current RSS (`clear_refs` 5, Linux ≥ 4.0) and report it: figures near
    // this floor say nothing about the allocator.
    let _ = fs::write("/proc/self/clear_refs", "5");
    // SAFETY: an all-zero `rusage` is valid; getrusage fills it.
    let floor_kib = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss
    };
    let floor = floor_kib as f64 / 1024.0;

    println!("{} runs each (medians); ratios against glibc; provisional on a shared machine", runs);
    println!("RSS floor (this process): {floor:.1} MiB; figures within 10% of it are marked *");
    println!("{:<13} {:<9} {:>9} {:>7} {:>10} {:>7}", "workload", "allocator", "time s", "ratio", "RSS MiB", "ratio");
    for w in &workloads {
        // Warm up (page cache, lazy binding) and check hakmem is in use.
        for a in &allocs {
            let stats = dir.join("stats");
            let _ = fs::remove_file(&stats);
            run(w, a, Some(&stats));
            if a.name == "hakmem" {
                let text = fs::read_to_string(&stats).unwrap_or_default();
                let want = format!(" prog={} heaps=", w.prog);
                assert!(
                    text.lines().any(|l| l.starts_with("hakmem: pid=") && l.contains(&want)),
                    "{}: no hakmem stats line from {}: hakmem not in use?\n{text}",
                    w.name,
                    w.prog
                );
            }
        }
        let mut samples: Vec<Vec<Sample>> = allocs.iter().map(|_| Vec::new()).collect();
        for _ in 0..runs {
            for (i, a) in allocs.iter().enumerate() {
                samples[i].push(run(w, a, None));
            }
        }
        let med: Vec<(f64, f64)> = samples
            .iter_mut()
            .map(|s| {
                let mut t: Vec<f64> = s.iter().map(|x| x.wall.as_secs_f64()).collect();
                let mut r: Vec<f64> = s.iter().map(|x| x.max_rss_kib as f64 / 1024.0).collect();
                (median(&mut t), median(&mut r))
            })
            .collect();
        let (t0, r0) = med[0];
        for (a, (t, r)) in allocs.iter().zip(&med) {
            let mark = if *r <= floor * 1.1 { "*" } else { "" };
            println!("{:<13} {:<9} {:>9.3} {:>7.2} {:>9.1}{mark:1} {:>7.2}", w.name, a.name, t, t / t0, r, r / r0);
        }
        std::io::stdout().flush().unwrap();
    }
    let _ = fs::remove_dir_all(&dir);
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn find_lib(file: &str) -> Option<PathBuf> {
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .iter()
        .map(|d| Path::new(d).join(file))
        .find(|p| p.exists())
}

fn cc(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let mut c = Command::new("cc");
    for a in args {
        c.arg(a);
    }
    let st = c.status().expect("cc");
    assert!(st.success(), "cc failed: {c:?}");
}

/// Build the programs and inputs the workloads need, in `dir`.
fn prepare(dir: &Path, programs: &Path) -> Vec<Workload> {
    let mstress = dir.join("mstress");
    cc(&[&"-O2", &"-pthread", &programs.join("mstress.c"), &"-o", &mstress]);

    // Deterministic inputs (xorshift), written by us rather than preloaded.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Streamed to disk: this process's own memory is the floor of every RSS
    // figure (see `main`), so it must stay small.
    let lines_path = dir.join("lines.txt");
    let mut out = BufWriter::new(fs::File::create(&lines_path).unwrap());
    for _ in 0..1_000_000 {
        let len = 1 + rnd() % 20;
        let word: String = (0..len).map(|_| (b'a' + (rnd() % 8) as u8) as char).collect();
        writeln!(out, "{word} {}", rnd() % 1_000_000_000).unwrap();
    }
    out.flush().unwrap();

    let c_path = dir.join("big.c");
    let mut out = BufWriter::new(fs::File::create(&c_path).unwrap());
    writeln!(out, "#include <stdio.h>").unwrap();
    for i in 0..3000 {
        writeln!(
            out,
            "static int f{i}(int x) {{ int s = 0; for (int j = 0; j < x % {m}; j++) s += j * {i}; return s ^ x; }}",
            m = i + 7
        )
        .unwrap();
    }
    writeln!(out, "int main(void) {{ long t = 0;").unwrap();
    for i in 0..3000 {
        writeln!(out, "  t += f{i}({i});").unwrap();
    }
    writeln!(out, "  printf(\"%ld\\n\", t); return 0; }}").unwrap();
    out.flush().unwrap();

    let python = String::from_utf8(
        Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3").stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let python_name = Path::new(&python).file_name().unwrap().to_string_lossy().into_owned();

    let os = |s: &str| OsString::from(s);
    vec![
        Workload {
            name: "mstress",
            argv: vec![mstress.clone().into(), os("2"), os("4000000"), os("0")],
            prog: "mstress".into(),
        },
        Workload {
            name: "mstress-large",
            argv: vec![mstress.into(), os("2"), os("2000000"), os("1")],
            prog: "mstress".into(),
        },
        Workload {
            name: "python",
            argv: vec![os(&python), programs.join("dict.py").into(), os("600000")],
            prog: python_name,
        },
        Workload {
            name: "sort",
            argv: vec![
                os("sort"),
                os("-k2,2n"),
                os("-k1,1"),
                os("-o"),
                dir.join("sorted.txt").into(),
                lines_path.into(),
            ],
            prog: "sort".into(),
        },
        Workload {
            name: "gcc",
            argv: vec![os("gcc"), os("-O2"), os("-c"), c_path.into(), os("-o"), dir.join("big.o").into()],
            prog: "cc1".into(),
        },
    ]
}

/// Check that each allocator's library is the one serving `malloc`.
fn verify(dir: &Path, programs: &Path, allocs: &[Alloc]) {
    let probe = dir.join("probe");
    cc(&[&"-O2", &programs.join("probe.c"), &"-o", &probe, &"-ldl"]);
    for a in allocs {
        let mut c = Command::new(&probe);
        if let Some(lib) = &a.lib {
            c.env("LD_PRELOAD", lib);
        } else {
            c.env_remove("LD_PRELOAD");
        }
        let out = c.output().expect("probe");
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ok = match &a.lib {
            Some(lib) => fs::canonicalize(&got).ok() == fs::canonicalize(lib).ok(),
            None => got.contains("libc.so"),
        };
        assert!(out.status.success() && ok, "{}: malloc resolves to {got:?}, not the library under test", a.name);
    }
}

/// Run `w` under `a`; wall time and peak RSS.
#[expect(clippy::zombie_processes, reason = "the child is reaped by wait4, which also gives its rusage")]
fn run(w: &Workload, a: &Alloc, stats: Option<&Path>) -> Sample {
    let mut c = Command::new(&w.argv[0]);
    c.args(&w.argv[1..]).env("LC_ALL", "C").env("PYTHONHASHSEED", "0").stdin(Stdio::null()).stdout(Stdio::null());
    match &a.lib {
        Some(lib) => c.env("LD_PRELOAD", lib),
        None => c.env_remove("LD_PRELOAD"),
    };
    if let Some(s) = stats {
        c.env("HAKMEM_STATS", s);
    }
    let start = Instant::now();
    let child = c.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into our locals. The child is
    // reaped here, so `child` is not waited for again.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} under {} failed (status {status:#x})",
        w.name,
        a.name
    );
    Sample { wall, max_rss_kib: ru.ru_maxrss }
}
