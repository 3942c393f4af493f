//! The command line end to end: the child mode the suite uses for memory and
//! `--isolate`, a small suite with `--json`, and `report`.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_hakmem-bench");

fn run(args: &[&str]) -> String {
    let out = Command::new(EXE).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "hakmem-bench {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn child_mode_reports_calls_time_and_memory() {
    let line = run(&[
        "run",
        "--alloc",
        "mimalloc",
        "--workload",
        "larson-mid",
        "--threads",
        "2",
        "--scale",
        "test",
        "--rounds",
        "2",
    ]);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(v["ops"].as_u64().unwrap() > 0);
    assert_eq!(v["secs"].as_array().unwrap().len(), 2);
    let peak = v["mem"]["peak_kib"].as_u64().unwrap();
    let fin = v["mem"]["final_kib"].as_u64().unwrap();
    // 2 threads x 200 slots of 2-32 KiB are live at once: several MiB.
    assert!(peak > 4096 && fin > 0 && fin <= peak, "peak {peak} final {fin}");

    let idle = run(&["run", "--alloc", "hakmem", "--workload", "idle"]);
    let v: serde_json::Value = serde_json::from_str(idle.trim()).unwrap();
    assert!(v["mem"]["peak_kib"].as_u64().unwrap() < peak);
}

#[test]
fn sol_refuses_workloads_with_remote_frees() {
    let out =
        Command::new(EXE).args(["run", "--alloc", "sol", "--workload", "xmalloc", "--scale", "test"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sol cannot run"));
}

#[test]
fn suite_json_and_report() {
    let dir = std::env::temp_dir().join(format!("hakmem-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let table = run(&[
        "--workloads",
        "c6-heavy,large",
        "--threads",
        "1",
        "--rounds",
        "1",
        "--isolate",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(table.contains("c6-heavy t=1") && table.contains("Summary"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    for c in cells {
        for r in c["results"].as_array().unwrap() {
            assert!(r["mem"]["peak_kib"].as_u64().unwrap() > 0, "{r}");
            // hakmem's memory child counts exactly and completely: every
            // allocation the workload made is in a tier's count.
            if r["alloc"] == "hakmem" {
                let p = &r["paths"];
                assert_eq!(p["tiny_sample_shift"], 0);
                let allocs = |t: &str| p[t]["fast_alloc"].as_u64().unwrap() + p[t]["slow_alloc"].as_u64().unwrap();
                let frees = |t: &str| {
                    ["fast_free", "slow_free", "remote_free"].iter().map(|f| p[t][f].as_u64().unwrap()).sum::<u64>()
                };
                let total = allocs("tiny") + allocs("mid") + p["large_allocs"].as_u64().unwrap();
                assert_eq!(total, c["ops_per_round"].as_u64().unwrap() / 2, "{}", c["workload"]);
                if c["workload"] == "c6-heavy" {
                    assert_eq!(allocs("tiny"), frees("tiny"));
                    assert!(allocs("tiny") > 0 && allocs("mid") == 0);
                }
            }
        }
    }
    let md = dir.join("docs/BENCHMARKS.md");
    run(&["report", json.to_str().unwrap(), "--out", md.to_str().unwrap()]);
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("## Machine") && text.contains("benchmarks/large.svg"));
    assert!(dir.join("docs/benchmarks/c6-heavy.svg").exists());
    let _ = std::fs::remove_dir_all(dir);
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    serde_json::from_str(out.lines().last().unwrap_or("")).unwrap()
}

fn mark<'a>(run: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    run["marks"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("no {name} mark"))
}

/// Each memory workload runs in a child for hakmem and a peer, sampling RSS:
/// the phases are marked in order, the samples are time-ordered, and the
/// peak the workload built (16 MiB in peak-release at this scale) shows.
#[test]
fn memory_children_sample_rss_over_time() {
    for w in ["peak-release", "sawtooth", "producer-consumer", "thread-exit"] {
        for k in ["hakmem", "system"] {
            let r = json(&["memrun", "--alloc", k, "--workload", w, "--scale", "test"]);
            let who = format!("{w} {k}");
            assert!(r["ops"].as_u64().unwrap() > 0, "{who}");
            let (b, f, e) = (mark(&r, "baseline"), mark(&r, "freed"), mark(&r, "end"));
            let t = |m: &serde_json::Value| m["t_ms"].as_f64().unwrap();
            assert!(t(b) < t(f) && t(f) < t(e), "{who}: marks out of order");
            let samples = r["samples"].as_array().unwrap();
            assert!(samples.len() >= 3, "{who}: {} samples", samples.len());
            let ts: Vec<f64> = samples.iter().map(|s| s[0].as_f64().unwrap()).collect();
            assert!(ts.windows(2).all(|p| p[0] <= p[1]), "{who}: samples not in time order");
            let base = r["baseline_kib"].as_u64().unwrap();
            let peak = r["peak_kib"].as_u64().unwrap();
            assert!(peak >= base, "{who}");
            if w == "peak-release" {
                assert!(peak >= base + 12 * 1024, "{who}: peak {peak} KiB over baseline {base} KiB");
                let top = samples.iter().map(|s| s[1].as_u64().unwrap()).max().unwrap();
                assert!(top >= base + 8 * 1024 || mark(&r, "peak")["rss_kib"].as_u64().unwrap() >= base + 12 * 1024);
            }
            // hakmem's own accounting rides along, and only for hakmem.
            assert_eq!(b["hakmem"].is_object(), k == "hakmem", "{who}");
        }
    }
}

/// A freed peak is returned: after peak-release, once hakmem's caches are
/// flushed and collected (the `flush+collect` mark), RSS is back near the
/// baseline, and hakmem's accounting agrees (nothing committed but metadata).
#[test]
fn hakmem_returns_a_freed_peak() {
    let r = json(&["memrun", "--alloc", "hakmem", "--workload", "peak-release", "--scale", "test"]);
    let base = r["baseline_kib"].as_u64().unwrap();
    let after = mark(&r, "flush+collect");
    let rss = after["rss_kib"].as_u64().unwrap();
    assert!(rss <= base + base / 10 + 1024, "RSS {rss} KiB after flush+collect, baseline {base} KiB");
    let committed = after["hakmem"]["committed"].as_u64().unwrap();
    assert!(committed <= 2 << 20, "hakmem still counts {committed} bytes committed");
}

/// A hakmem configuration variant refuses to run without its environment
/// (it would measure plain hakmem under another name); the parent gives it
/// that environment, and with purging off nothing is purged before the
/// diagnostic collect.
#[test]
fn hakmem_variants_run_only_with_their_environment() {
    let out = Command::new(EXE)
        .args(["memrun", "--alloc", "hakmem-nopurge", "--workload", "thread-exit", "--scale", "test"])
        .env_remove("HAKMEM_PURGE_DELAY_MS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a process of its own"));

    let dir = std::env::temp_dir().join(format!("hakmem-bench-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mem = dir.join("mem.json");
    let table = run(&[
        "memory",
        "--scale",
        "test",
        "--reps",
        "1",
        "--workloads",
        "peak-release,thread-exit",
        "--allocs",
        "hakmem,hakmem-nopurge,mimalloc,system,jemalloc",
        "--json",
        mem.to_str().unwrap(),
    ]);
    assert!(table.contains("Memory targets") && table.contains("peak RSS ≤ mimalloc's"), "{table}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mem).unwrap()).unwrap();
    let cells = v["memory"]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    for c in cells {
        assert_eq!(c["summary"].as_array().unwrap().len(), 5);
        for r in c["runs"].as_array().unwrap() {
            if r["alloc"] == "hakmem-nopurge" {
                assert_eq!(mark(r, "end")["hakmem"]["purged"].as_u64(), Some(0), "nopurge purged");
                assert_eq!(r["purge_delay_ms"].as_u64(), Some(u32::MAX as u64));
            }
        }
    }
    // The report takes the memory record next to a suite record.
    let md = dir.join("docs/BENCHMARKS.md");
    let suite = dir.join("suite.json");
    run(&["--workloads", "mixed", "--threads", "1", "--rounds", "1", "--no-rss", "--json", suite.to_str().unwrap()]);
    run(&["report", suite.to_str().unwrap(), mem.to_str().unwrap(), "--out", md.to_str().unwrap()]);
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("## Memory over time") && text.contains("benchmarks/mem-peak-release.svg"));
    let svg = std::fs::read_to_string(dir.join("docs/benchmarks/mem-thread-exit.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 5, "one line per allocator");
    let _ = std::fs::remove_dir_all(dir);
}

/// purge-cost runs both configurations in children and checks that the
/// no-purge one purged nothing (it fails otherwise).
#[test]
fn purge_cost_compares_the_two_configurations() {
    let out = run(&["purge-cost", "--scale", "test", "--rounds", "1", "--workloads", "large", "--threads", "1"]);
    assert!(out.contains("large") && out.contains("purging costs"), "{out}");
}
