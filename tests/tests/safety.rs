//! The Rust adapter's answers to bad input (docs/SAFETY.md): a fail-fast
//! abort with a message naming the fault and the address, or null. Each
//! abort case runs this binary again as a child, which must die with the
//! expected message on standard error.

use std::alloc::GlobalAlloc;
use std::process::Command;

use hakmem::HakMem;
use hakmem_tests::layout;

static H: HakMem = HakMem::new();

/// What a child does, by `HAKMEM_SAFETY_CASE`. Every case that returns was
/// not stopped: the parent sees a clean exit and fails.
#[test]
fn child() {
    let Ok(case) = std::env::var("HAKMEM_SAFETY_CASE") else { return };
    // SAFETY: each case breaks the allocator's contract on purpose; the
    // allocator must stop the process before anything is corrupted.
    unsafe {
        match case.as_str() {
            "foreign" => {
                let mut x = [0u64; 4];
                H.dealloc(x.as_mut_ptr().cast(), layout(32, 8));
            }
            "interior-realloc" => {
                let p = H.alloc(layout(100, 8));
                H.realloc(p.add(8), layout(92, 8), 200);
            }
            "interior-mid" => {
                let p = H.alloc(layout(3000, 8));
                H.dealloc(p.add(1000), layout(2000, 8));
            }
            "double-free-large" => {
                let p = H.alloc(layout(300_000, 8));
                H.dealloc(p, layout(300_000, 8));
                H.dealloc(p, layout(300_000, 8));
            }
            "realloc-freed-large" => {
                let p = H.alloc(layout(300_000, 8));
                H.dealloc(p, layout(300_000, 8));
                H.realloc(p, layout(300_000, 8), 10);
            }
            "double-free-tiny" => {
                // Detected in checking builds only (in the default build the
                // block's page is live and the second free is not noticed).
                let p = H.alloc(layout(48, 8));
                let q = H.alloc(layout(48, 8));
                H.dealloc(p, layout(48, 8));
                H.dealloc(q, layout(48, 8));
                H.dealloc(p, layout(48, 8));
            }
            "write-after-free" => {
                let l = layout(48, 8);
                let ptrs: Vec<_> = (0..16).map(|_| H.alloc(l)).collect();
                for &p in &ptrs {
                    H.dealloc(p, l);
                }
                // The last freed block heads the bin: overwrite its link
                // with a pointer outside the heap, then allocate.
                let outside = Box::into_raw(Box::new([0u64; 8]));
                ptrs[15].cast::<usize>().write(outside.addr());
                for _ in 0..32 {
                    H.alloc(l);
                }
            }
            "guard-page" => {
                // Hardened builds: the 4 KiB after a segment's metadata is
                // inaccessible; a write there (an underflow of page 0's first
                // block) faults.
                let p = H.alloc(layout(16, 8));
                let seg = p.addr() & !((2 << 20) - 1);
                std::ptr::with_exposed_provenance_mut::<u8>(seg + 4096 + 8).write_volatile(1);
            }
            other => panic!("unknown case {other}"),
        }
    }
    println!("not stopped");
}

/// Run `case` in a child: it must fail, and its standard error must hold
/// every string of `want`.
fn dies_with(case: &str, want: &[&str]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("HAKMEM_SAFETY_CASE", case)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && !stdout.contains("not stopped"), "{case}: not stopped: {stdout} {err}");
    for w in want {
        assert!(err.contains(w), "{case}: stderr lacks {w:?}: {err}");
    }
}

#[test]
fn free_of_a_foreign_pointer_aborts() {
    dies_with("foreign", &["hakmem: fatal: free of a pointer hakmem never returned: 0x"]);
}

#[test]
fn realloc_of_an_interior_pointer_aborts() {
    dies_with("interior-realloc", &["hakmem: fatal: free of a pointer that is not the start of a hakmem block: 0x"]);
}

#[test]
fn free_of_an_interior_pointer_aborts() {
    dies_with("interior-mid", &["hakmem: fatal: free of a pointer that is not the start of a hakmem block: 0x"]);
}

#[test]
fn double_free_of_a_large_block_aborts() {
    dies_with("double-free-large", &["hakmem: fatal: ", ": 0x"]);
}

#[test]
fn realloc_of_a_freed_block_aborts() {
    dies_with("realloc-freed-large", &["hakmem: fatal: ", ": 0x"]);
}

#[test]
fn a_write_after_free_is_stopped_before_the_link_is_followed() {
    dies_with("write-after-free", &["hakmem: fatal: corrupted free list", "span 0x", "class "]);
}

#[cfg(feature = "check")]
#[test]
fn checking_build_aborts_on_a_double_free_in_a_live_page() {
    dies_with("double-free-tiny", &["hakmem: fatal: double free", ": 0x"]);
}

#[cfg(feature = "secure")]
#[test]
fn hardened_build_has_a_guard_page_after_the_metadata() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("HAKMEM_SAFETY_CASE", "guard-page")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(11), "the write into the guard did not fault: {out:?}");
}

/// Impossible requests are null (or `Err` through `std`), never an abort.
#[test]
fn impossible_requests_are_null() {
    let huge = isize::MAX as usize;
    for (size, align) in [(huge - 4096, 8), (huge / 2, 1 << 20), (1 << 62, 1), (16, 1 << 47)] {
        let Ok(l) = std::alloc::Layout::from_size_align(size, align) else { continue };
        // SAFETY: non-zero size.
        assert!(unsafe { H.alloc(l) }.is_null(), "({size}, {align})");
        // SAFETY: non-zero size.
        assert!(unsafe { H.alloc_zeroed(l) }.is_null(), "zeroed ({size}, {align})");
    }
    // SAFETY: non-zero size.
    let p = unsafe { H.alloc(layout(64, 8)) };
    // SAFETY: a live block; a realloc that cannot be served is null and
    // leaves the block as it was.
    unsafe {
        p.write(7);
        assert!(H.realloc(p, layout(64, 8), huge - 100).is_null());
        assert_eq!(p.read(), 7);
        H.dealloc(p, layout(64, 8));
    }
}
