//! The prefixed ABI (`hakmem_malloc`, …) in an ordinary test binary whose own
//! allocator is glibc's: every function and corner, compared with glibc
//! where glibc defines the behaviour.

use core::ffi::c_void;
use core::ptr;
use std::process::Command;

use crate::abi::*;
use crate::cxx::*;

fn aligned(p: *mut c_void, a: usize) -> bool {
    p.addr().is_multiple_of(a)
}

/// Fill `n` bytes at `p` with a pattern derived from `seed`, and check it.
unsafe fn fill(p: *mut c_void, n: usize, seed: u8) {
    let p = p.cast::<u8>();
    for i in 0..n {
        // SAFETY: the caller's block has `n` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
    }
}

unsafe fn check(p: *mut c_void, n: usize, seed: u8) -> bool {
    let p = p.cast::<u8>();
    // SAFETY: the caller's block has `n` bytes.
    (0..n).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
}

const SIZES: &[usize] = &[
    0,
    1,
    7,
    8,
    9,
    15,
    16,
    17,
    24,
    31,
    32,
    33,
    48,
    63,
    64,
    65,
    100,
    127,
    128,
    129,
    255,
    256,
    257,
    511,
    512,
    513,
    1000,
    1023,
    1024,
    1025,
    1280,
    2047,
    2048,
    4095,
    4096,
    4097,
    8191,
    8192,
    16384,
    65535,
    65536,
    65537,
    131071,
    131072,
    131073,
    262144,
    1 << 20,
    (1 << 21) - 1,
    1 << 21,
    (1 << 21) + 1,
    5 << 20,
];

#[test]
fn malloc_sizes_alignment_and_usable_size() {
    for &n in SIZES {
        // SAFETY: plain C calls on our own blocks.
        unsafe {
            let p = hakmem_malloc_(n);
            assert!(!p.is_null(), "malloc({n})");
            let want = if n <= 8 { 8 } else { 16 };
            assert!(aligned(p, want), "malloc({n}) = {p:p} not {want}-aligned");
            let u = malloc_usable_size(p);
            assert!(u >= n.max(1), "usable {u} < {n}");
            fill(p, u, n as u8);
            assert!(check(p, u, n as u8));
            free(p);
        }
    }
}

// Local alias so the test reads like C.
unsafe fn hakmem_malloc_(n: usize) -> *mut c_void {
    // SAFETY: no precondition.
    unsafe { malloc(n) }
}

#[test]
fn malloc_zero_is_unique() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        let a = malloc(0);
        let b = malloc(0);
        assert!(!a.is_null() && !b.is_null() && a != b);
        assert!(malloc_usable_size(a) >= 1);
        free(a);
        free(b);
        // glibc does the same.
        let g = glibc::malloc(0);
        assert!(!g.is_null());
        libc::free(g);
    }
}

#[test]
fn huge_sizes_fail_with_enomem() {
    for n in
        [usize::MAX, usize::MAX - 15, usize::MAX / 2, isize::MAX as usize, isize::MAX as usize - 4096, 1 << 62, 1 << 50]
    {
        // SAFETY: plain C calls.
        unsafe {
            set_errno(0);
            assert!(malloc(n).is_null(), "malloc({n:#x})");
            assert_eq!(errno(), libc::ENOMEM, "malloc({n:#x})");
            // glibc agrees.
            let g = glibc::malloc(n);
            assert!(g.is_null(), "glibc malloc({n:#x})");
            set_errno(0);
            assert!(calloc(1, n).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            let mut out = ptr::dangling_mut::<c_void>();
            assert_eq!(posix_memalign(&mut out, 64, n), libc::ENOMEM);
            assert_eq!(out, ptr::dangling_mut(), "memptr changed on failure");
            set_errno(0);
            assert!(aligned_alloc(4096, n).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            set_errno(0);
            assert!(memalign(1 << 21, n).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            set_errno(0);
            assert!(valloc(n).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            set_errno(0);
            assert!(pvalloc(n).is_null());
            assert_eq!(errno(), libc::ENOMEM);
        }
    }
}

#[test]
fn errno_untouched_on_success() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        set_errno(1234);
        let p = malloc(100);
        let q = calloc(10, 10);
        let r = realloc(p, 5000);
        let s = memalign(64, 10);
        free(r);
        free(q);
        free(s);
        free(ptr::null_mut());
        assert_eq!(errno(), 1234);
    }
}

#[test]
fn calloc_zeroes_and_checks_overflow() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        // Dirty blocks of every size, free them, then calloc must zero reuse.
        for &n in SIZES {
            let p = malloc(n);
            let u = malloc_usable_size(p);
            p.cast::<u8>().write_bytes(0xa5, u);
            free(p);
            let q = calloc(1, n);
            assert!(!q.is_null());
            assert!(aligned(q, if n <= 8 { 8 } else { 16 }));
            let s = core::slice::from_raw_parts(q.cast::<u8>(), n);
            assert!(s.iter().all(|&b| b == 0), "calloc(1, {n}) not zeroed");
            free(q);
        }
        for (n, m) in
            [(usize::MAX, 2), (2, usize::MAX), (1 << 32, 1 << 32), (usize::MAX / 2 + 1, 2), (3, usize::MAX / 3 + 1)]
        {
            set_errno(0);
            assert!(calloc(n, m).is_null(), "calloc({n:#x}, {m:#x})");
            assert_eq!(errno(), libc::ENOMEM);
            assert!(glibc::calloc(n, m).is_null(), "glibc calloc({n:#x}, {m:#x})");
        }
        let a = calloc(0, 10);
        let b = calloc(10, 0);
        let c = calloc(0, 0);
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        free(a);
        free(b);
        free(c);
        // An array calloc: 1000 x 24 bytes.
        let p = calloc(1000, 24);
        let s = core::slice::from_raw_parts(p.cast::<u8>(), 24000);
        assert!(s.iter().all(|&b| b == 0));
        free(p);
    }
}

#[test]
fn realloc_keeps_contents_across_tiers() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        let mut p = realloc(ptr::null_mut(), 5);
        assert!(!p.is_null());
        fill(p, 5, 7);
        let mut have = 5;
        for &n in &[
            8usize,
            16,
            17,
            100,
            1000,
            1024,
            1025,
            5000,
            65536,
            131072,
            131073,
            1 << 20,
            3 << 20,
            10 << 20,
            1 << 20,
            100_000,
            3000,
            64,
            9,
            1,
        ] {
            let q = realloc(p, n);
            assert!(!q.is_null(), "realloc to {n}");
            assert!(aligned(q, if n <= 8 { 8 } else { 16 }));
            let keep = have.min(n);
            assert!(check(q, keep, 7), "contents lost growing/shrinking to {n}");
            fill(q, n, 7);
            have = n;
            p = q;
        }
        free(p);
    }
}

#[test]
fn realloc_zero_frees_and_null_mallocs() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        let p = malloc(100);
        set_errno(0);
        assert!(realloc(p, 0).is_null(), "realloc(p, 0) returns null (glibc)");
        assert_eq!(errno(), 0);
        let q = realloc(ptr::null_mut(), 0);
        assert!(!q.is_null(), "realloc(NULL, 0) is malloc(0)");
        free(q);
        // glibc does the same.
        let g = glibc::malloc(100);
        assert!(glibc::realloc(g, 0).is_null());
    }
}

#[test]
fn realloc_failure_keeps_the_block() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        for start in [10usize, 2000, 200_000] {
            let p = malloc(start);
            fill(p, start, 3);
            for n in [usize::MAX, isize::MAX as usize, 1 << 62] {
                set_errno(0);
                assert!(realloc(p, n).is_null());
                assert_eq!(errno(), libc::ENOMEM);
                assert!(check(p, start, 3));
            }
            free(p);
        }
    }
}

#[test]
fn reallocarray_checks_overflow() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        let p = reallocarray(ptr::null_mut(), 10, 10);
        assert!(!p.is_null());
        fill(p, 100, 1);
        let q = reallocarray(p, 100, 100);
        assert!(!q.is_null());
        assert!(check(q, 100, 1));
        for (n, m) in [(usize::MAX, 2), (1 << 32, 1 << 32), (2, usize::MAX / 2 + 1)] {
            set_errno(0);
            assert!(reallocarray(q, n, m).is_null());
            assert_eq!(errno(), libc::ENOMEM);
            assert!(check(q, 100, 1), "block changed by a failed reallocarray");
            let g = glibc::malloc(8);
            assert!(glibc::reallocarray(g, n, m).is_null(), "glibc agrees");
            libc::free(g);
        }
        assert!(reallocarray(q, 0, 5).is_null(), "zero size frees, like realloc");
    }
}

const ALIGNS: &[usize] = &[8, 16, 32, 64, 128, 256, 4096, 8192, 65536, 131072, 1 << 20, 1 << 21, 1 << 22, 1 << 24];

#[test]
fn posix_memalign_valid_and_invalid() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        for &a in ALIGNS {
            for n in [0usize, 1, 8, 24, 100, 4096, 100_000, 3 << 20] {
                let mut p = ptr::null_mut();
                assert_eq!(posix_memalign(&mut p, a, n), 0, "align {a} size {n}");
                assert!(!p.is_null() && aligned(p, a), "align {a} size {n}: {p:p}");
                assert!(malloc_usable_size(p) >= n);
                fill(p, n, 9);
                assert!(check(p, n, 9));
                free(p);
            }
        }
        for a in [0usize, 1, 2, 3, 4, 12, 24, 48, 100, 4097, usize::MAX] {
            let mut p = ptr::dangling_mut();
            assert_eq!(posix_memalign(&mut p, a, 16), libc::EINVAL, "align {a}");
            assert_eq!(p, ptr::dangling_mut());
            let mut g = ptr::null_mut();
            assert_eq!(libc::posix_memalign(&mut g, a, 16), libc::EINVAL, "glibc, align {a}");
        }
    }
}

#[test]
fn aligned_alloc_valid_and_invalid() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        for &a in [1usize, 2, 4].iter().chain(ALIGNS) {
            // C17: the size need not be a multiple of the alignment.
            for n in [0usize, 1, 3, 24, 100, 5000, 1 << 21] {
                let p = aligned_alloc(a, n);
                assert!(!p.is_null() && aligned(p, a), "align {a} size {n}");
                assert!(aligned(p, if n <= 8 { 8 } else { 16 }));
                free(p);
            }
        }
        for a in [0usize, 3, 6, 12, 24, 100, 4097, usize::MAX] {
            set_errno(0);
            assert!(aligned_alloc(a, 64).is_null(), "align {a}");
            assert_eq!(errno(), libc::EINVAL);
        }
    }
}

#[test]
fn memalign_rounds_alignment_up() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        for (a, want) in [
            (0usize, 16usize),
            (1, 16),
            (3, 16),
            (8, 16),
            (24, 32),
            (48, 64),
            (100, 128),
            (1000, 1024),
            (4097, 8192),
            (3 << 20, 4 << 20),
        ] {
            let p = memalign(a, 100);
            assert!(!p.is_null() && aligned(p, want), "memalign({a}) = {p:p}");
            free(p);
            let g = libc::memalign(a, 100);
            assert!(!g.is_null() && aligned(g, want), "glibc memalign({a})");
            libc::free(g);
        }
        for a in [usize::MAX / 2 + 2, usize::MAX] {
            set_errno(0);
            assert!(memalign(a, 10).is_null());
            assert_eq!(errno(), libc::EINVAL);
        }
    }
}

#[test]
fn valloc_and_pvalloc() {
    let ps = rustix::param::page_size();
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        for n in [0usize, 1, 100, ps - 1, ps, ps + 1, 1 << 20] {
            let p = valloc(n);
            assert!(!p.is_null() && aligned(p, ps));
            assert!(malloc_usable_size(p) >= n);
            free(p);
            let q = pvalloc(n);
            assert!(!q.is_null() && aligned(q, ps));
            let u = malloc_usable_size(q);
            assert!(u >= n.max(1).next_multiple_of(ps), "pvalloc({n}) usable {u}");
            fill(q, u, 1);
            free(q);
        }
    }
}

#[test]
fn usable_size_of_null_is_zero() {
    // SAFETY: plain C calls.
    unsafe {
        assert_eq!(malloc_usable_size(ptr::null_mut()), 0);
        assert_eq!(libc::malloc_usable_size(ptr::null_mut()), 0);
    }
}

#[test]
fn free_of_a_foreign_pointer_is_ignored() {
    // SAFETY: the glibc block is glibc's; our free must not touch it.
    unsafe {
        let before = crate::fault::foreign_frees();
        let g = glibc::malloc(64).cast::<u8>();
        g.write_bytes(0x5a, 64);
        free(g.cast());
        assert!(crate::fault::foreign_frees() > before);
        let s = core::slice::from_raw_parts(g, 64);
        assert!(s.iter().all(|&b| b == 0x5a));
        // Still glibc's: glibc frees it without complaint.
        libc::free(g.cast());
        let mut local = 0u64;
        free((&raw mut local).cast());
        delete((&raw mut local).cast());
    }
}

#[test]
fn cxx_operators() {
    // SAFETY: plain calls on our own blocks.
    unsafe {
        let p = new(24);
        assert!(aligned(p, 16));
        delete(p);
        let p = new_array(0);
        assert!(!p.is_null());
        delete_array(p);
        let p = new(100);
        delete_sized(p, 100);
        let p = new_array(100);
        delete_array_sized(p, 100);
        for &a in ALIGNS {
            let p = new_aligned(40, a);
            assert!(aligned(p, a));
            delete_aligned(p, a);
            let p = new_array_aligned(40, a);
            assert!(aligned(p, a));
            delete_array_sized_aligned(p, 40, a);
            let p = new_aligned_nothrow(40, a, ptr::null());
            assert!(aligned(p, a));
            delete_aligned_nothrow(p, a, ptr::null());
            let p = new_array_aligned_nothrow(40, a, ptr::null());
            assert!(aligned(p, a));
            delete_array_aligned_nothrow(p, a, ptr::null());
            let p = new_aligned(40, a);
            delete_sized_aligned(p, 40, a);
            let p = new_array_aligned(40, a);
            delete_array_aligned(p, a);
        }
        let p = new_nothrow(10, ptr::null());
        delete_nothrow(p, ptr::null());
        let p = new_array_nothrow(10, ptr::null());
        delete_array_nothrow(p, ptr::null());
        // Failures: the nothrow forms return null.
        assert!(new_nothrow(usize::MAX, ptr::null()).is_null());
        assert!(new_array_nothrow(1 << 62, ptr::null()).is_null());
        assert!(new_aligned_nothrow(usize::MAX / 2, 64, ptr::null()).is_null());
        assert!(new_array_aligned_nothrow(16, 3, ptr::null()).is_null());
        delete(ptr::null_mut());
        delete_array_sized(ptr::null_mut(), 0);
    }
}

#[test]
fn cross_thread_frees_and_thread_exit() {
    use std::sync::mpsc;
    // Blocks allocated on one thread, freed on another (remote frees), by
    // many short-lived threads. Thread exit must hand every heap back for
    // reuse: heaps stay few however many threads come and go.
    for round in 0..50 {
        let (tx, rx) = mpsc::channel::<(usize, usize, u8)>();
        let producer = std::thread::spawn(move || {
            for i in 0..200usize {
                let n = (i * 37 + round) % 3000;
                // SAFETY: our block, handed to the consumer.
                let p = unsafe { malloc(n) };
                // SAFETY: `n` bytes.
                unsafe { fill(p, n, i as u8) };
                tx.send((p.expose_provenance(), n, i as u8)).unwrap();
            }
        });
        let consumer = std::thread::spawn(move || {
            for (a, n, seed) in rx {
                let p = ptr::with_exposed_provenance_mut::<c_void>(a);
                // SAFETY: a live block of ours, given up by the producer.
                unsafe {
                    assert!(check(p, n, seed));
                    free(p);
                }
            }
        });
        producer.join().unwrap();
        consumer.join().unwrap();
    }
    let heaps = crate::alloc().stats().heaps;
    assert!(heaps < 40, "{heaps} heaps carved for a few concurrent threads");
    assert!(crate::thread::key_for_tests().is_some());
}

/// Run this test binary again with `HAKMEM_CABI_CASE=<case>` and return the
/// child's status and standard error.
fn run_case(case: &str, strict: bool) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::child_cases", "--nocapture", "--test-threads=1"])
        .env("HAKMEM_CABI_CASE", case)
        .env("HAKMEM_STRICT", if strict { "1" } else { "0" })
        .output()
        .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The child side of `run_case`: the fault cases must abort; the others
/// return normally on success.
#[test]
fn child_cases() {
    let Ok(case) = std::env::var("HAKMEM_CABI_CASE") else {
        return;
    };
    // SAFETY: deliberately bad calls; each is detected and aborts.
    unsafe {
        match case.as_str() {
            "double-free-large" => {
                let p = malloc(1 << 20);
                free(p);
                free(p);
            }
            "interior-large" => {
                let p = malloc(1 << 20);
                free(p.cast::<u8>().add(64).cast());
            }
            "realloc-foreign" => {
                let mut local = [0u8; 32];
                realloc(local.as_mut_ptr().cast(), 64);
            }
            "usable-foreign" => {
                let g = glibc::malloc(32);
                malloc_usable_size(g);
            }
            "strict-free-foreign" => {
                let g = glibc::malloc(32);
                free(g);
            }
            "new-without-cxx-runtime" => {
                // This Rust test binary has no libstdc++: nothing to throw.
                new(usize::MAX / 2);
            }
            "trim" => {
                let big = malloc(8 << 20);
                big.cast::<u8>().write_bytes(1, 8 << 20);
                free(big);
                assert!(crate::alloc().stats().large_cached_bytes > 0);
                assert_eq!(malloc_trim(0), 1);
                assert_eq!(crate::alloc().stats().large_cached_bytes, 0);
                assert_eq!(malloc_trim(0), 0, "nothing left to return");
                eprintln!("child case trim: ok");
                return;
            }
            _ => panic!("unknown case"),
        }
    }
    eprintln!("case {case} did not abort");
    std::process::exit(3);
}

#[test]
fn faults_abort_with_a_message() {
    use std::os::unix::process::ExitStatusExt;
    for (case, strict, msg) in [
        ("double-free-large", false, "hakmem: fatal: double free"),
        ("interior-large", false, "hakmem: fatal: free of a pointer that is not the start"),
        ("realloc-foreign", false, "hakmem: fatal: realloc of a pointer hakmem never returned"),
        ("usable-foreign", false, "hakmem: fatal: malloc_usable_size of a pointer hakmem never returned"),
        ("strict-free-foreign", true, "hakmem: fatal: free of a pointer hakmem never returned"),
        ("new-without-cxx-runtime", false, "hakmem: fatal: operator new: out of memory, and no C++ runtime"),
    ] {
        let (status, err) = run_case(case, strict);
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{case}: {status:?}\n{err}");
        assert!(err.contains(msg), "{case}: stderr was\n{err}");
    }
}

#[test]
fn free_sized_variants() {
    // SAFETY: plain C calls on our own blocks.
    unsafe {
        let p = malloc(100);
        free_sized(p, 100);
        let q = aligned_alloc(256, 1000);
        free_aligned_sized(q, 256, 1000);
        free_sized(ptr::null_mut(), 0);
        free_aligned_sized(ptr::null_mut(), 64, 0);
    }
}

#[test]
fn malloc_trim_returns_memory() {
    // In a child process: other tests would take from the Large cache.
    let (status, err) = run_case("trim", false);
    assert!(status.success() && err.contains("child case trim: ok"), "{status:?}\n{err}");
}

/// The C library's allocator, called through pointers the optimiser cannot
/// see through: LLVM knows `malloc`'s contract and may fold a direct call whose
/// result is only compared with null (a "successful" `malloc(SIZE_MAX)`).
mod glibc {
    use core::ffi::c_void;
    use core::hint::black_box;

    /// # Safety
    /// As for the C function.
    pub unsafe fn malloc(n: usize) -> *mut c_void {
        let f: unsafe extern "C" fn(usize) -> *mut c_void = black_box(libc::malloc);
        // SAFETY: the caller keeps malloc's contract.
        unsafe { f(n) }
    }
    /// # Safety
    /// As for the C function.
    pub unsafe fn calloc(n: usize, m: usize) -> *mut c_void {
        let f: unsafe extern "C" fn(usize, usize) -> *mut c_void = black_box(libc::calloc);
        // SAFETY: the caller keeps calloc's contract.
        unsafe { f(n, m) }
    }
    /// # Safety
    /// As for the C function.
    pub unsafe fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
        let f: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void = black_box(libc::realloc);
        // SAFETY: the caller keeps realloc's contract.
        unsafe { f(p, n) }
    }
    /// # Safety
    /// As for the C function.
    pub unsafe fn reallocarray(p: *mut c_void, n: usize, m: usize) -> *mut c_void {
        let f: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void = black_box(libc::reallocarray);
        // SAFETY: the caller keeps reallocarray's contract.
        unsafe { f(p, n, m) }
    }
}

/// The C ABI fuzz target's body (`fuzz.rs`) over the committed corpus
/// (`fuzz/corpus/cabi/`) and seeded inputs, as `hakmem-tests` replays the
/// other targets. The Large-leak check is left to the fuzz target: the other
/// tests of this binary allocate meanwhile.
#[test]
fn fuzz_corpus_and_random() {
    hakmem_tests::fuzz::replay("cabi", |data| crate::fuzz::c_abi(data, false), 64);
}
