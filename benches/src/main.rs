//! `hakmem-bench`: see `benches/README.md`, or run with `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use hakmem_bench::allocs::{AllocKind, WithAlloc, dispatch};
use hakmem_bench::memory::{self, MemOptions, MemWorkload};
use hakmem_bench::report;
use hakmem_bench::suite::{self, Options, Results};
use hakmem_bench::workloads::{self, FAST_MID, FAST_TINY, NullAlloc, Scale, Workload};

const USAGE: &str = "\
hakmem-bench — hakmem against glibc, mimalloc, jemalloc and a speed-of-light floor

USAGE
  hakmem-bench [--quick | --full] [OPTIONS]     run the suite and print the table (default: --quick)
  hakmem-bench run --alloc A --workload W [--threads T] [--scale quick|full|test] [--rounds N]
                                                run W in this process, print one JSON line
                                                (ops, seconds per round, peak/final RSS)
  hakmem-bench memory [--reps N] [--workloads a,b] [--allocs a,b] [--json FILE]
                                                the memory workloads: RSS over time, one process per run
  hakmem-bench purge-cost [--rounds N] [--workloads a,b] [--threads 1,2] [--json FILE]
                                                hakmem vs hakmem-nopurge on the quick suite (children)
  hakmem-bench --preload [--runs N] [--lib PATH] [--allocs a,b] [--full] [--json FILE]
                                                C, shell and Python programs under LD_PRELOAD: hakmem
                                                (target/release/libhakmem.so), glibc, and Debian's
                                                mimalloc, jemalloc, tcmalloc where installed
  hakmem-bench memrun --alloc A --workload W [--scale quick|test]
                                                one memory run in this process, one JSON line
  hakmem-bench fastpath --alloc A|null --tier tiny|mid --pairs N
                                                N alloc+free pairs (for callgrind; see callgrind.sh)
  hakmem-bench report FILE [FILE...] [--out PATH] [--callgrind FILE] [--notes FILE]
                                                write docs/BENCHMARKS.md and charts from --json files
                                                (the first gives the tables; memory and purge-cost
                                                figures are taken from any)
  hakmem-bench list                             workloads and allocators

SUITE OPTIONS
  --rounds N            timed rounds per cell (default 5 quick, 9 full)
  --threads 1,4         thread counts (default 1 and the number of CPUs)
  --workloads a,b       workloads (default all)
  --allocs a,b          allocators (default hakmem,system,mimalloc,jemalloc,sol)
  --isolate             time each round in a fresh child process (needed for the
                        hakmem-nopurge and hakmem-pt variants, which set hakmem's environment)
  --no-rss              skip the per-cell child processes that measure memory
  --memory, --no-memory also run the memory workloads (default: with --full only)
  --json FILE           write every figure to FILE
";

fn write_json(path: &Option<PathBuf>, res: &Results) -> Result<(), String> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(res).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn parse_allocs(s: &str) -> Result<Vec<AllocKind>, String> {
    parse_list(s, AllocKind::parse)
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    s.split(',').filter(|x| !x.is_empty()).map(|x| f(x).ok_or_else(|| format!("unknown name `{x}`"))).collect()
}

struct Args(std::vec::IntoIter<String>);

impl Args {
    fn value(&mut self, flag: &str) -> Result<String, String> {
        self.0.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number(&mut self, flag: &str) -> Result<usize, String> {
        let v = self.value(flag)?;
        v.parse().map_err(|_| format!("{flag}: `{v}` is not a number"))
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).collect::<Vec<_>>().into_iter();
    let first = args.as_slice().first().cloned();
    let mut rest = || {
        args.next();
        Args(args.clone())
    };
    let result = match first.as_deref() {
        Some("run") => cmd_run(rest()),
        Some("fastpath") => cmd_fastpath(rest()),
        Some("memrun") => cmd_memrun(rest()),
        Some("--preload" | "preload") => cmd_preload(rest()),
        Some("memory") => cmd_memory(rest()),
        Some("purge-cost") => cmd_purge_cost(rest()),
        Some("report") => cmd_report(rest()),
        Some("list") => {
            for w in Workload::ALL {
                println!("{:<15} {}", w.name(), w.describe());
            }
            println!("\nmemory workloads (hakmem-bench memory):");
            for w in MemWorkload::ALL {
                println!("{:<17} {}", w.name(), w.describe());
            }
            println!();
            for k in AllocKind::ALL {
                println!("{}", k.name());
            }
            for k in [AllocKind::HakmemNoPurge, AllocKind::HakmemPurgeThread] {
                println!("{} (child processes only: {:?})", k.name(), k.env());
            }
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => cmd_suite(Args(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hakmem-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_suite(mut a: Args) -> Result<(), String> {
    let mut opts = Options::preset(Scale::Quick);
    let mut rounds = None;
    let mut threads = None;
    let mut workloads = None;
    let mut allocs = None;
    let mut isolate = false;
    let mut rss = true;
    let mut json: Option<PathBuf> = None;
    let mut with_memory = None;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--quick" => opts = Options::preset(Scale::Quick),
            "--full" => opts = Options::preset(Scale::Full),
            "--memory" => with_memory = Some(true),
            "--no-memory" => with_memory = Some(false),
            "--rounds" => rounds = Some(a.number("--rounds")?),
            "--threads" => threads = Some(parse_list(&a.value("--threads")?, |s| s.parse().ok().filter(|&n| n > 0))?),
            "--workloads" | "--workload" => workloads = Some(parse_list(&a.value("--workloads")?, Workload::parse)?),
            "--allocs" | "--alloc" => allocs = Some(parse_allocs(&a.value("--allocs")?)?),
            "--isolate" => isolate = true,
            "--no-rss" => rss = false,
            "--json" => json = Some(a.value("--json")?.into()),
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if let Some(r) = rounds {
        opts.rounds = r.max(1);
    }
    if let Some(t) = threads {
        opts.threads = t;
    }
    if let Some(w) = workloads {
        opts.workloads = w;
    }
    if let Some(k) = allocs {
        opts.allocs = k;
    }
    opts.isolate = isolate;
    opts.rss = rss;
    if cfg!(debug_assertions) {
        eprintln!("hakmem-bench: warning: a debug build; timings mean nothing (use cargo run --release)");
    }
    if cfg!(feature = "secure") {
        eprintln!("hakmem-bench: hakmem is the hardened build (feature secure)");
    }
    let mut results = suite::run_suite(&opts)?;
    if with_memory.unwrap_or(opts.scale == Scale::Full) {
        println!();
        results.memory = Some(memory::run_memory(&MemOptions::preset(opts.scale))?);
    }
    write_json(&json, &results)
}

/// A `Results` holding no speed cells, for `memory` and `purge-cost`.
fn empty_results(mode: &str) -> Results {
    Results {
        mode: mode.into(),
        date: hakmem_bench::machine::now_utc(),
        machine: hakmem_bench::machine::describe(),
        rounds: 0,
        isolate: true,
        elapsed_s: 0.0,
        baseline_rss_kib: None,
        cells: Vec::new(),
        memory: None,
        preload: None,
    }
}

fn cmd_preload(mut a: Args) -> Result<(), String> {
    let mut runs = 3;
    let mut lib = None;
    let mut names = Vec::new();
    let mut json = None;
    let mut quick = true;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--runs" | "--rounds" => runs = a.number("--runs")?.max(1),
            "--lib" => lib = Some(PathBuf::from(a.value("--lib")?)),
            "--allocs" | "--alloc" => names = a.value("--allocs")?.split(',').map(String::from).collect(),
            "--full" => quick = false,
            "--quick" => quick = true,
            "--json" => json = Some(a.value("--json")?.into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let start = std::time::Instant::now();
    let (libs, skipped) = hakmem_bench::preload::libraries(lib, &names)?;
    let pre = hakmem_bench::preload::run_preload(&libs, skipped, runs, quick)?;
    let mut res = empty_results("preload");
    res.elapsed_s = start.elapsed().as_secs_f64();
    eprintln!("preload run took {:.1} s", res.elapsed_s);
    res.preload = Some(pre);
    res.machine.loadavg.push(hakmem_bench::machine::loadavg());
    write_json(&json, &res)
}

fn cmd_memory(mut a: Args) -> Result<(), String> {
    let mut opts = MemOptions::preset(Scale::Quick);
    let mut json = None;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--reps" => opts.reps = a.number("--reps")?.max(1),
            "--workloads" | "--workload" => opts.workloads = parse_list(&a.value("--workloads")?, MemWorkload::parse)?,
            "--allocs" | "--alloc" => opts.allocs = parse_allocs(&a.value("--allocs")?)?,
            "--scale" => {
                let v = a.value("--scale")?;
                opts.scale = Scale::parse(&v).ok_or(format!("unknown scale `{v}`"))?;
            }
            "--json" => json = Some(a.value("--json")?.into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mut res = empty_results("memory");
    let mem = memory::run_memory(&opts)?;
    res.elapsed_s = mem.elapsed_s;
    res.memory = Some(mem);
    res.machine.loadavg.push(hakmem_bench::machine::loadavg());
    write_json(&json, &res)
}

fn cmd_purge_cost(mut a: Args) -> Result<(), String> {
    let mut opts = Options::preset(Scale::Quick);
    let mut json = None;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--rounds" => opts.rounds = a.number("--rounds")?.max(1),
            "--threads" => {
                opts.threads = parse_list(&a.value("--threads")?, |s| s.parse().ok().filter(|&n| n > 0))?;
            }
            "--workloads" | "--workload" => opts.workloads = parse_list(&a.value("--workloads")?, Workload::parse)?,
            "--scale" => {
                let v = a.value("--scale")?;
                opts.scale = Scale::parse(&v).ok_or(format!("unknown scale `{v}`"))?;
            }
            "--json" => json = Some(a.value("--json")?.into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let start = std::time::Instant::now();
    let pc = memory::purge_cost(&opts)?;
    let mut res = empty_results("purge-cost");
    res.elapsed_s = start.elapsed().as_secs_f64();
    res.rounds = opts.rounds;
    res.memory =
        Some(memory::MemoryResults { reps: 0, elapsed_s: res.elapsed_s, cells: Vec::new(), purge_cost: Some(pc) });
    res.machine.loadavg.push(hakmem_bench::machine::loadavg());
    write_json(&json, &res)
}

fn cmd_memrun(mut a: Args) -> Result<(), String> {
    let mut alloc = None;
    let mut workload = None;
    let mut scale = Scale::Quick;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--alloc" => {
                let v = a.value("--alloc")?;
                alloc = Some(AllocKind::parse(&v).ok_or(format!("unknown allocator `{v}`"))?);
            }
            "--workload" => {
                let v = a.value("--workload")?;
                workload = Some(MemWorkload::parse(&v).ok_or(format!("unknown memory workload `{v}`"))?);
            }
            "--scale" => {
                let v = a.value("--scale")?;
                scale = Scale::parse(&v).ok_or(format!("unknown scale `{v}`"))?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let alloc = alloc.ok_or("memrun needs --alloc")?;
    if alloc == AllocKind::Sol {
        return Err("sol cannot run the memory workloads (cross-thread frees, sizes above 64 KiB)".into());
    }
    let run = memory::child(alloc, workload.ok_or("memrun needs --workload")?, scale)?;
    println!("{}", serde_json::to_string(&run).map_err(|e| e.to_string())?);
    Ok(())
}

fn cmd_run(mut a: Args) -> Result<(), String> {
    let mut alloc = None;
    let mut workload = None;
    let mut threads = 1;
    let mut scale = Scale::Quick;
    let mut rounds = 1;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--alloc" => {
                let v = a.value("--alloc")?;
                alloc = Some(AllocKind::parse(&v).ok_or(format!("unknown allocator `{v}`"))?);
            }
            "--workload" => {
                let v = a.value("--workload")?;
                workload = Some(if v == "idle" {
                    None
                } else {
                    Some(Workload::parse(&v).ok_or(format!("unknown workload `{v}`"))?)
                });
            }
            "--threads" => threads = a.number("--threads")?.max(1),
            "--scale" => {
                let v = a.value("--scale")?;
                scale = Scale::parse(&v).ok_or(format!("unknown scale `{v}`"))?;
            }
            "--rounds" => rounds = a.number("--rounds")?.max(1),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let alloc = alloc.ok_or("run needs --alloc")?;
    let workload = workload.ok_or("run needs --workload")?;
    if alloc == AllocKind::Sol && workload.is_some_and(|w| !w.local_only(threads)) {
        return Err(format!(
            "sol cannot run {} at {threads} threads (it has cross-thread frees or sizes above 64 KiB)",
            workload.map_or("", |w| w.name())
        ));
    }
    let rep = suite::child_main(alloc, workload, threads, scale, rounds)?;
    println!("{}", serde_json::to_string(&rep).map_err(|e| e.to_string())?);
    Ok(())
}

struct Pairs {
    size: usize,
    n: usize,
}

impl WithAlloc for Pairs {
    type Out = u64;
    fn call<A: core::alloc::GlobalAlloc + Sync>(self, a: &A) -> u64 {
        workloads::pairs(a, self.size, self.n)
    }
}

fn cmd_fastpath(mut a: Args) -> Result<(), String> {
    let mut alloc: Option<Option<AllocKind>> = None;
    let mut size = FAST_TINY;
    let mut n = 1_000_000;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--alloc" => {
                let v = a.value("--alloc")?;
                alloc = Some(if v == "null" {
                    None
                } else {
                    Some(AllocKind::parse(&v).ok_or(format!("unknown allocator `{v}`"))?)
                });
            }
            "--tier" => {
                size = match a.value("--tier")?.as_str() {
                    "tiny" => FAST_TINY,
                    "mid" => FAST_MID,
                    t => return Err(format!("unknown tier `{t}` (tiny or mid)")),
                }
            }
            "--pairs" => n = a.number("--pairs")?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let calls = match alloc.ok_or("fastpath needs --alloc")? {
        Some(k) => dispatch(k, Pairs { size, n }),
        None => workloads::pairs(&NullAlloc, size, n),
    };
    println!("{calls} calls");
    Ok(())
}

fn cmd_report(mut a: Args) -> Result<(), String> {
    let mut inputs = vec![a.value("report")?];
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = manifest.parent().unwrap_or(manifest).join("docs/BENCHMARKS.md");
    let mut callgrind = Vec::new();
    let mut notes = None;
    while let Some(flag) = a.0.next() {
        match flag.as_str() {
            "--out" => out = a.value("--out")?.into(),
            "--callgrind" => {
                let f = a.value("--callgrind")?;
                let text = std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?;
                callgrind = report::parse_callgrind(&text);
            }
            "--notes" => {
                let f = a.value("--notes")?;
                notes = Some(std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?);
            }
            other if !other.starts_with("--") => inputs.push(other.to_string()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mut res: Option<Results> = None;
    for input in &inputs {
        let text = std::fs::read_to_string(input).map_err(|e| format!("{input}: {e}"))?;
        let r: Results = serde_json::from_str(&text).map_err(|e| format!("{input}: {e}"))?;
        match &mut res {
            None => res = Some(r),
            Some(main) => main.merge(r),
        }
    }
    let res = res.ok_or("report needs a JSON file")?;
    let written = report::write_report(&res, &out, &callgrind, notes.as_deref())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    for f in written {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
