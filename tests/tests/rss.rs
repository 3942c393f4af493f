//! A freed peak is returned to the OS: resident memory read from
//! `/proc/self/statm` in a child process (this binary run again), so the
//! figures are the allocator's alone.

use std::alloc::GlobalAlloc;
use std::process::Command;
use std::time::Duration;

use hakmem::HakMem;
use hakmem_tests::{Rng, layout};

static H: HakMem = HakMem::new();

fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// Allocate about `total` bytes of mixed sizes across every tier, touch
/// them, and free them all in random order.
fn peak(total: usize, seed: u64) {
    let mut rng = Rng(seed);
    let mut blocks = Vec::new();
    let mut bytes = 0;
    while bytes < total {
        let size = rng.size();
        // SAFETY: non-zero size.
        let p = unsafe { H.alloc(layout(size, 8)) };
        assert!(!p.is_null());
        // SAFETY: ours.
        unsafe { p.write_bytes(1, size) };
        blocks.push((p, size));
        bytes += size;
    }
    while !blocks.is_empty() {
        let (p, size) = blocks.swap_remove(rng.below(blocks.len()));
        // SAFETY: live block.
        unsafe { H.dealloc(p, layout(size, 8)) };
    }
}

/// The child: baseline, a 256 MiB peak in a worker thread that exits, the
/// same peak in the main thread, a wait past the purge delay, then
/// `collect()`; prints the resident KiB at each point.
#[test]
fn child() {
    if std::env::var_os("HAKMEM_TEST_CHILD").is_none() {
        return;
    }
    // Warm up hakmem's own structures so the baseline includes them.
    peak(1 << 20, 1);
    let base = rss_kib();
    std::thread::spawn(|| peak(256 << 20, 3)).join().unwrap();
    let thread = rss_kib();
    let cached = hakmem::stats().large_cached_bytes / 1024;
    peak(256 << 20, 2);
    let main = rss_kib();
    std::thread::sleep(Duration::from_millis(100));
    let idle = rss_kib();
    hakmem::flush_thread();
    hakmem::collect();
    let collected = rss_kib();
    println!("base={base} thread={thread} main={main} idle={idle} collected={collected} cached={cached}");
}

fn run(env: &[(&str, &str)]) -> [usize; 6] {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"]).env("HAKMEM_TEST_CHILD", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.find("base=").map(|i| l[i..].to_string())).expect("figures");
    let line = line.split(" ok").next().unwrap().trim().to_string();
    eprintln!("{env:?}: {line}");
    let v: Vec<usize> = line.split_whitespace().map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3], v[4], v[5]]
}

const MIB: usize = 1024;

#[test]
fn a_freed_peak_is_returned() {
    let [base, thread, main, idle, collected, cached] = run(&[]);
    // A thread that exits gives back all but a few MiB of its 256 MiB peak,
    // besides the Large regions it freed last (cached for reuse, at most
    // HAKMEM_LARGE_CACHE_BYTES, purged once the cache is idle).
    assert!(thread <= base + 8 * MIB + cached, "worker exit: {thread} KiB vs base {base} ({cached} KiB cached)");
    // In a thread that stays, the bulk comes back as it is freed; what stays
    // is bounded by the caches (Large cache, the thread's bins and spans).
    assert!(main <= base + 64 * MIB, "main thread: {main} KiB vs base {base}");
    assert!(idle <= main);
    // collect() returns everything: back to within 10% of the baseline.
    assert!(collected <= base + base / 10, "collect: {collected} KiB vs base {base}");

    // Without the background thread an idle program purges nothing...
    assert_eq!(idle, main, "no purge thread: nothing runs while the program sleeps");
    let idle_alone = idle;
    // ...with it, its expired memory goes too. (How much is left right after
    // the frees depends on how long they took: compare the idle figures.)
    let [base, _, _, idle, collected, _] = run(&[("HAKMEM_PURGE_THREAD", "1")]);
    assert!(idle + 8 * MIB <= idle_alone, "purge thread: idle {idle} KiB vs {idle_alone} without it");
    assert!(idle <= base + 32 * MIB, "purge thread: idle {idle} KiB vs base {base}");
    assert!(collected <= base + base / 10);
}
