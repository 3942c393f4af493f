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
        }
    }
    let md = dir.join("docs/BENCHMARKS.md");
    run(&["report", json.to_str().unwrap(), "--out", md.to_str().unwrap()]);
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("## Machine") && text.contains("benchmarks/large.svg"));
    assert!(dir.join("docs/benchmarks/c6-heavy.svg").exists());
    let _ = std::fs::remove_dir_all(dir);
}
