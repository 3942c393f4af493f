//! `HAKMEM_*` environment handling of the Linux adapter, end to end. The
//! environment is read once per process, so each case runs this binary again
//! as a child with its own variables.

use std::alloc::GlobalAlloc;
use std::process::Command;

use hakmem::HakMem;
use hakmem_tests::layout;

static H: HakMem = HakMem::new();

/// What a child does: Tiny and Mid allocations, all freed locally, then
/// prints the Mid slow-free count on stdout.
#[test]
fn child() {
    if std::env::var_os("HAKMEM_TEST_CHILD").is_none() {
        return;
    }
    let mut ptrs = Vec::new();
    for i in 0..64 {
        let size = if i % 2 == 0 { 48 } else { 2000 };
        // SAFETY: non-zero size.
        ptrs.push((unsafe { H.alloc(layout(size, 8)) }, size));
    }
    for (p, size) in ptrs {
        // SAFETY: live blocks.
        unsafe { H.dealloc(p, layout(size, 8)) };
    }
    let s = hakmem::stats();
    println!("mid-slow-free={}", s.mid().slow_free);
    // An 8 MiB Large block: did its mapping get MADV_HUGEPAGE?
    let big = layout(8 << 20, 8);
    // SAFETY: non-zero size.
    let p = unsafe { H.alloc(big) };
    assert!(!p.is_null());
    println!("hugepage-advice={}", mapping_flags(p.addr()).split_whitespace().any(|f| f == "hg"));
    // SAFETY: the live block just allocated.
    unsafe { H.dealloc(p, big) };
}

/// The `VmFlags` of the mapping holding `addr`, from `/proc/self/smaps`.
fn mapping_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return flags.to_string();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

#[test]
fn hugepage_advice_for_large_regions_only_as_configured() {
    let (out, _) = run(&[]);
    assert!(out.contains("hugepage-advice=true"), "an 8 MiB region is advised by default: {out}");
    let (out, _) = run(&[("HAKMEM_HUGEPAGE_MIN", "0")]);
    assert!(out.contains("hugepage-advice=false"), "0 turns the advice off: {out}");
    let (out, _) = run(&[("HAKMEM_HUGEPAGE_MIN", "16M")]);
    assert!(out.contains("hugepage-advice=false"), "an 8 MiB region is below 16 MiB: {out}");
}

fn run(env: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"]).env("HAKMEM_TEST_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "child failed: {e}");
    (o, e)
}

#[test]
fn unknown_and_bad_switches_warn_once_and_keep_the_default() {
    let (out, err) = run(&[
        ("HAKMEM_BOGUS", "1"),
        ("HAKMEM_POOL_TLS_RING", "99"),
        ("HAKMEM_HDR_LIGHT", "1"),
        ("HAKMEM_TINY_HEAP_BOX", "maybe"),
        ("HAKMEM_STRICT", "0"),
    ]);
    // libhakmem.so's switch is known, not warned about.
    assert!(!err.contains("HAKMEM_STRICT"), "{err}");
    for name in ["HAKMEM_BOGUS=1", "HAKMEM_POOL_TLS_RING=99", "HAKMEM_HDR_LIGHT=1", "HAKMEM_TINY_HEAP_BOX=maybe"] {
        assert_eq!(err.matches(name).count(), 1, "one warning for {name}: {err}");
    }
    assert!(err.contains("unknown switch") && err.contains("out of range") && err.contains("no header"), "{err}");
    // The ring kept its default: Mid frees were absorbed.
    assert!(out.contains("mid-slow-free=0"), "{out}");
}

#[test]
fn ring_and_lifo_switches_reach_the_allocator() {
    let (out, _) = run(&[("HAKMEM_POOL_TLS_RING", "0"), ("HAKMEM_TLS_LO_MAX", "0")]);
    assert!(out.contains("mid-slow-free=32"), "every Mid free went to its span: {out}");
}

#[test]
fn stats_summary_at_exit() {
    let (_, err) = run(&[("HAKMEM_STATS", "1"), ("HAKMEM_TINY_COUNT_SAMPLE", "0"), ("HAKMEM_POOL_COUNT_SAMPLE", "0")]);
    assert!(err.contains("hakmem: reserved"), "{err}");
    assert!(err.contains("hakmem: tiny allocs 32 "), "{err}");
    assert!(err.contains("hakmem: mid  allocs 32 "), "{err}");
}

#[test]
fn log_file_gets_csv_lines() {
    let path = std::env::temp_dir().join(format!("hakmem-log-{}.csv", std::process::id()));
    let _ = std::fs::remove_file(&path);
    run(&[("HAKMEM_LOG_FILE", path.to_str().unwrap()), ("HAKMEM_TINY_COUNT_SAMPLE", "0")]);
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("time_ms,tier,class,size,fast_alloc,fast_free,slow_alloc,slow_free,remote_free"));
    let tiny48 = text.lines().find(|l| l.split(',').nth(1) == Some("tiny") && l.split(',').nth(3) == Some("48"));
    let f: Vec<u64> =
        tiny48.expect("a line for the 48 B class").split(',').skip(4).map(|x| x.parse().unwrap()).collect();
    assert_eq!(f[0] + f[2], 32, "32 allocations of 48 B: {tiny48:?}");
}

/// The README's table names every switch the core knows.
#[test]
fn readme_lists_every_switch() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for &(name, default, _, _) in hakmem_core::SWITCHES {
        assert!(readme.contains(&format!("| `{name}` | {default} |")), "README lacks {name}");
    }
}
