//! The harness's own tests: every workload runs a round correctly with every
//! allocator, every call reaches the allocator the workload was given, and
//! every name reaches the allocator it names (checked against that
//! allocator's own accounting).

use core::alloc::{GlobalAlloc, Layout};
use std::sync::{Mutex, MutexGuard};

use crate::allocs::{
    AllocKind, Counting, SOL_MAX, WithAlloc, dispatch, glibc_mallinfo, jemalloc_arena_of, mimalloc_owns,
};
use crate::harness;
use crate::suite::{Options, median};
use crate::workloads::{Scale, Workload};

/// The witnesses read process-wide accounting: tests that allocate through
/// the allocators under test take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Counted {
    w: Workload,
    threads: usize,
}

struct Counts {
    ops: u64,
    allocs: u64,
    deallocs: u64,
    reallocs: u64,
}

impl WithAlloc for Counted {
    type Out = Counts;
    fn call<A: GlobalAlloc + Sync>(self, a: &A) -> Counts {
        let c = Counting::new(a);
        let ops = self.w.run(&c, self.threads, Scale::Test);
        Counts { ops, allocs: c.allocs(), deallocs: c.deallocs(), reallocs: c.reallocs() }
    }
}

fn kinds_for(w: Workload, threads: usize) -> Vec<AllocKind> {
    AllocKind::ALL.into_iter().filter(|&k| k != AllocKind::Sol || w.local_only(threads)).collect()
}

/// Each workload, at 1 and 2 threads, with each allocator that can run it:
/// the round completes (blocks are stamped and checked, so an allocator that
/// corrupts a live block fails it), every call the workload reports reached
/// the allocator it was handed, and every block allocated was freed.
#[test]
fn every_workload_runs_with_every_allocator_and_calls_reach_it() {
    let _g = serial();
    for w in Workload::ALL {
        for threads in [1, 2] {
            for k in kinds_for(w, threads) {
                let c = dispatch(k, Counted { w, threads });
                let who = format!("{} t={threads} {}", w.name(), k.name());
                assert!(c.ops > 0, "{who}: no calls");
                assert_eq!(
                    c.allocs + c.deallocs + c.reallocs,
                    c.ops,
                    "{who}: calls counted at the allocator differ from the calls reported"
                );
                assert_eq!(c.allocs, c.deallocs, "{who}: blocks leaked or double-freed");
                if w == Workload::ReallocGrowth {
                    assert!(c.reallocs > c.allocs, "{who}: realloc not exercised");
                } else {
                    assert_eq!(c.reallocs, 0, "{who}");
                }
            }
        }
    }
}

/// The workloads' bookkeeping stays out of their loops: the harness
/// allocator (the program's global one) sees a handful of calls per round, so
/// the figures are the allocator under test's and not the harness's.
#[test]
fn workloads_keep_harness_allocations_out_of_their_loops() {
    let _g = serial();
    for w in Workload::ALL {
        for threads in [1, 2] {
            let before_here = harness::thread_calls();
            let before_all = harness::total_calls();
            let c = dispatch(AllocKind::Hakmem, Counted { w, threads });
            let here = harness::thread_calls() - before_here;
            let all = harness::total_calls() - before_all;
            let spawns = threads > 1 || matches!(w, Workload::Xmalloc | Workload::CacheScratch | Workload::ThreadChurn);
            if !spawns {
                assert!(here <= 16, "{} t={threads}: {here} harness calls on the workload's own thread", w.name());
            }
            if w == Workload::ThreadChurn {
                // Spawning a thread costs the harness a few calls (its
                // handle, closure and result), the same for every allocator;
                // each thread makes 512 allocator calls.
                let spawned = c.ops / 512;
                assert!(all <= 32 * spawned, "thread-churn t={threads}: {all} harness calls for {spawned} threads");
            } else {
                // A fixed allowance per round (slot arrays, thread handles),
                // nothing per allocator call.
                assert!(
                    all <= 64 + c.ops / 50,
                    "{} t={threads}: {all} harness calls for {} allocator calls",
                    w.name(),
                    c.ops
                );
            }
        }
    }
}

const BIG: usize = 2 << 20;
const SMALL: usize = 64;

/// What each allocator's own accounting says about blocks just allocated
/// through a name.
struct Probe;

struct Seen {
    small: *mut u8,
    big: *mut u8,
    hakmem_large_delta: isize,
    glibc_bytes_delta: isize,
    small_in_mimalloc: bool,
    big_in_mimalloc: bool,
}

fn glibc_bytes() -> isize {
    let m = glibc_mallinfo();
    (m.uordblks + m.hblkhd) as isize
}

impl WithAlloc for Probe {
    type Out = Seen;
    fn call<A: GlobalAlloc + Sync>(self, a: &A) -> Seen {
        let hak0 = hakmem::stats().large_live as isize;
        let gl0 = glibc_bytes();
        // SAFETY: non-zero sizes.
        let small = unsafe { a.alloc(Layout::from_size_align(SMALL, 8).unwrap()) };
        // SAFETY: as above.
        let big = unsafe { a.alloc(Layout::from_size_align(BIG, 8).unwrap()) };
        Seen {
            small,
            big,
            hakmem_large_delta: hakmem::stats().large_live as isize - hak0,
            glibc_bytes_delta: glibc_bytes() - gl0,
            small_in_mimalloc: !small.is_null() && mimalloc_owns(small),
            big_in_mimalloc: !big.is_null() && mimalloc_owns(big),
        }
    }
}

struct Free(*mut u8, *mut u8);

impl WithAlloc for Free {
    type Out = ();
    fn call<A: GlobalAlloc + Sync>(self, a: &A) {
        // SAFETY: the blocks `Probe` allocated through the same name.
        unsafe {
            if !self.0.is_null() {
                a.dealloc(self.0, Layout::from_size_align(SMALL, 8).unwrap());
            }
            if !self.1.is_null() {
                a.dealloc(self.1, Layout::from_size_align(BIG, 8).unwrap());
            }
        }
    }
}

/// A name reaches the allocator it names, and no other: each allocator's own
/// accounting (hakmem's stats, glibc's mallinfo2, mimalloc's region map,
/// jemalloc's extent map) sees exactly the blocks allocated through its name.
#[test]
fn names_reach_the_allocator_they_name() {
    let _g = serial();
    for k in AllocKind::ALL {
        let s = dispatch(k, Probe);
        let name = k.name();
        assert!(!s.small.is_null(), "{name}: small block is null");
        if k == AllocKind::Sol {
            assert!(s.big.is_null(), "sol must refuse blocks above {SOL_MAX} B");
        } else {
            assert!(!s.big.is_null(), "{name}: big block is null");
        }
        let is = |x: AllocKind| k == x;
        assert_eq!(s.hakmem_large_delta, isize::from(is(AllocKind::Hakmem)), "{name}: hakmem's Large count");
        // With another malloc preloaded (the CI runs this suite again under
        // libhakmem.so), `System` is not glibc's and glibc counts nothing.
        let glibc_is_system = std::env::var_os("LD_PRELOAD").is_none_or(|v| v.is_empty());
        if !glibc_is_system {
            eprintln!("LD_PRELOAD is set: glibc's accounting is not checked");
        } else if is(AllocKind::System) {
            assert!(
                s.glibc_bytes_delta >= (BIG + SMALL) as isize,
                "system: glibc's accounting grew by only {}",
                s.glibc_bytes_delta
            );
        } else {
            assert!(s.glibc_bytes_delta < BIG as isize, "{name}: glibc's accounting grew by {}", s.glibc_bytes_delta);
        }
        assert_eq!(s.small_in_mimalloc, is(AllocKind::Mimalloc), "{name}: small block in mimalloc's regions");
        if !s.big.is_null() {
            assert_eq!(s.big_in_mimalloc, is(AllocKind::Mimalloc), "{name}: big block in mimalloc's regions");
        }
        if is(AllocKind::Jemalloc) {
            assert!(
                jemalloc_arena_of(s.small).is_some() && jemalloc_arena_of(s.big).is_some(),
                "jemalloc does not know its blocks"
            );
        }
        if is(AllocKind::Hakmem) {
            // SAFETY: a live hakmem block (hakmem aborts on anything else).
            assert!(unsafe { hakmem::usable_size(s.small) } >= SMALL);
        }
        dispatch(k, Free(s.small, s.big));
    }
}

/// The floor is declared only where it is sound: every workload it may run
/// keeps frees on the allocating thread and sizes within its range (debug
/// builds abort on a foreign free, which the first test would hit).
#[test]
fn sol_declarations() {
    for w in Workload::ALL {
        if w.local_only(2) {
            assert!(w.local_only(1), "{}", w.name());
        }
    }
    assert!(!Workload::Xmalloc.local_only(1));
    assert!(!Workload::LarsonTiny.local_only(2));
    assert!(Workload::LarsonTiny.local_only(1));
}

#[test]
fn medians() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(median(&[7.0]), 7.0);
}

/// A whole suite (two workloads, in-process, no child processes) and its
/// report: tables, ratios, JSON round trip, markdown and SVG charts.
#[test]
fn suite_and_report() {
    let _g = serial();
    let opts = Options {
        scale: Scale::Test,
        rounds: 3,
        threads: vec![1, 2],
        workloads: vec![Workload::Mixed, Workload::Xmalloc],
        allocs: AllocKind::ALL.to_vec(),
        isolate: false,
        rss: false,
    };
    let res = crate::suite::run_suite(&opts).expect("suite");
    assert_eq!(res.cells.len(), 4);
    for c in &res.cells {
        let sol = c.results.iter().any(|r| r.alloc == AllocKind::Sol);
        assert_eq!(sol, c.workload == Workload::Mixed, "sol only where it can run");
        for r in &c.results {
            assert_eq!(r.samples.len(), 3);
            assert!(r.min <= r.median && r.median <= r.max && r.min > 0.0);
        }
        let h = c.results.iter().find(|r| r.alloc == AllocKind::Hakmem).unwrap();
        assert_eq!(h.ratio_to_hakmem, Some(1.0));
    }
    let json = serde_json::to_string(&res).unwrap();
    let back: crate::suite::Results = serde_json::from_str(&json).unwrap();
    let dir = std::env::temp_dir().join(format!("hakmem-bench-test-{}", std::process::id()));
    let out = dir.join("BENCHMARKS.md");
    let cg = crate::report::parse_callgrind("# alloc tier per_pair\nhakmem tiny 20.5\nmimalloc tiny 25\n");
    assert_eq!(cg.len(), 2);
    let written = crate::report::write_report(&back, &out, &cg, Some("A note.")).unwrap();
    assert_eq!(written.len(), 3);
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("### mixed") && md.contains("benchmarks/xmalloc.svg"));
    assert!(md.contains("A note.") && md.contains("20.5 vs mimalloc 25.0"));
    let svg = std::fs::read_to_string(dir.join("benchmarks/mixed.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<rect x=").count() - 5, 10, "5 bars per thread count");
    let _ = std::fs::remove_dir_all(dir);
}

/// An allocator that hands every request the same buffer: what a broken
/// allocator returning overlapping blocks looks like.
struct Overlapping;

struct Buf(core::cell::UnsafeCell<[u64; 256]>);
// SAFETY: only the single-threaded test below writes it.
unsafe impl Sync for Buf {}
static OVERLAP_BUF: Buf = Buf(core::cell::UnsafeCell::new([0; 256]));

// SAFETY: deliberately broken (overlapping blocks) but memory-safe for the
// single-threaded test below: every block lies inside the 2 KiB buffer.
unsafe impl GlobalAlloc for Overlapping {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > 2048 {
            return core::ptr::null_mut();
        }
        OVERLAP_BUF.0.get().cast()
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

/// The stamps catch an allocator that hands out overlapping blocks: a broken
/// allocator fails the round instead of winning it.
#[test]
#[should_panic(expected = "heap corruption")]
fn overlapping_blocks_are_caught() {
    // The panic (and its backtrace, when RUST_BACKTRACE is set) allocates
    // through the harness: keep it out of the counting tests' windows.
    let _g = serial();
    Workload::Mixed.run(&Overlapping, 1, Scale::Test);
}
