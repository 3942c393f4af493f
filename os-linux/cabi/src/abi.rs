//! The C allocation functions.
//!
//! Choices, all glibc's unless said otherwise:
//!
//! - **Alignment.** `malloc(n)` is aligned to 16 for `n > 8` and to 8 for
//!   `n ≤ 8`: exactly C's guarantee (aligned for any object of fundamental
//!   alignment that fits in `n` bytes; `max_align_t` is 16 on x86-64 and
//!   AArch64). glibc aligns even 1-byte blocks to 16; jemalloc, tcmalloc and
//!   mimalloc, like us, give 8-byte blocks for `n ≤ 8`.
//! - **Zero sizes.** `malloc(0)`, `calloc(0, n)`, `posix_memalign(p, a, 0)`
//!   and friends return a unique pointer, not null.
//! - `free(NULL)` does nothing; `realloc(NULL, n)` is `malloc(n)`;
//!   `realloc(p, 0)` with `p` non-null frees `p` and returns null (glibc's
//!   choice; C23 leaves it undefined). `reallocarray` is `realloc` after its
//!   overflow check.
//! - **Errors.** Null with `errno = ENOMEM` when memory is exhausted or a size
//!   overflows (`calloc`, `reallocarray`, `pvalloc`, sizes above
//!   `PTRDIFF_MAX`); the old block is untouched when `realloc` fails.
//!   `posix_memalign` returns `EINVAL` unless the alignment is a power of two
//!   and a multiple of `sizeof(void *)`, else `ENOMEM` on failure, and leaves
//!   `*memptr` alone on error.
//! - **Alignments that are not powers of two.** `memalign` rounds them up to
//!   one (glibc); `memalign(0, n)` is `malloc(n)`; above `SIZE_MAX / 2 + 1` it
//!   fails with `EINVAL`. `aligned_alloc` fails with `EINVAL` for 0 and
//!   non-powers of two (glibc 2.38's behaviour; 2.36 still rounded up). Any
//!   requested alignment below the `malloc` alignment gets the `malloc`
//!   alignment.
//! - `valloc(n)` is `memalign(page, n)`; `pvalloc(n)` rounds `n` up to whole
//!   pages, at least one.
//! - `malloc_usable_size(NULL)` is 0.
//! - C23's `free_sized` and `free_aligned_sized` are `free` (glibc has them
//!   from 2.39; a program calling them must not reach glibc's `free` with
//!   our blocks). glibc's `malloc_trim` returns memory to the system; the
//!   other glibc extensions (`mallinfo`, `malloc_stats`, `mallopt`, …) are
//!   not replaced and report on glibc's unused heap.

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr;

use crate::{alloc, export, fault, thread};

/// The alignment `malloc(size)` guarantees (see the module docs).
#[inline(always)]
pub(crate) const fn malloc_align(size: usize) -> usize {
    if size <= 8 { 8 } else { 16 }
}

#[inline(always)]
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: `__errno_location` returns this thread's `errno`.
    unsafe { *libc::__errno_location() = e };
}

/// This thread's `errno` (for the tests and the fuzz body).
#[cfg(any(test, feature = "prefix"))]
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location` returns this thread's `errno`.
    unsafe { *libc::__errno_location() }
}

#[cold]
fn enomem() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// Allocate `layout` on this thread's heap (or the shared heap). Null and
/// `errno = ENOMEM` when memory is exhausted.
#[inline(always)]
pub(crate) fn allocate(layout: Layout) -> *mut c_void {
    let s = crate::tls::get();
    if s > thread::LAST_STATE {
        // SAFETY: as in `thread::heap`: the slot holds this thread's heap.
        let h = unsafe { &mut *(s as *mut hakmem_core::LocalHeap) };
        let p = alloc().alloc_fast(h, layout);
        if !p.is_null() {
            return p.cast();
        }
    }
    allocate_slow(layout)
}

#[cold]
#[inline(never)]
fn allocate_slow(layout: Layout) -> *mut c_void {
    let p = match thread::heap() {
        Some(h) => alloc().alloc_slow(h, layout),
        None => alloc().alloc_shared(layout),
    };
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// Allocate `layout` zeroed.
fn allocate_zeroed(layout: Layout) -> *mut c_void {
    let p = match thread::heap() {
        Some(h) => alloc().alloc_zeroed(h, layout),
        None => {
            let p = alloc().alloc_shared(layout);
            if !p.is_null() {
                // SAFETY: a fresh block of at least `layout.size()` bytes.
                unsafe { p.write_bytes(0, layout.size()) };
            }
            p
        }
    };
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// The layout of `malloc(size)`, or `None` above `PTRDIFF_MAX`.
#[inline(always)]
fn malloc_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size, malloc_align(size)).ok()
}

/// Allocate `size` bytes aligned to `align`, at least the `malloc`
/// alignment. Null and `ENOMEM` if `align` is not a power of two.
#[inline]
pub(crate) fn allocate_aligned(size: usize, align: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return enomem();
    }
    match Layout::from_size_align(size, align.max(malloc_align(size))) {
        Ok(l) => allocate(l),
        Err(_) => enomem(),
    }
}

/// Free `p` (non-null).
///
/// # Safety
/// `p` is a live block of this allocator, or not ours at all (then it is
/// ignored, see `fault.rs`).
#[inline(always)]
pub(crate) unsafe fn deallocate(p: *mut c_void) {
    let s = crate::tls::get();
    let r = if s > thread::LAST_STATE {
        // SAFETY: the slot holds this thread's heap; `p` is the caller's.
        unsafe { alloc().free(&mut *(s as *mut hakmem_core::LocalHeap), p.cast()) }
    } else {
        // A thread without a heap (it never allocated, or it is exiting)
        // frees remotely; setting a heap up just to free is not worth it.
        // SAFETY: forwarded from the caller.
        unsafe { alloc().free_detached(p.cast()) }
    };
    if let Err(f) = r {
        fault::on_free(f)
    }
}

export!(
    "malloc",
    "hakmem_malloc",
    /// C `malloc`.
    ///
    /// # Safety
    /// None beyond C's rules for the returned block.
    pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
        match malloc_layout(size) {
            Some(l) => allocate(l),
            None => enomem(),
        }
    }
);

export!(
    "free",
    "hakmem_free",
    /// C `free`.
    ///
    /// # Safety
    /// `p` is null or a live block from this library's functions.
    pub unsafe extern "C" fn free(p: *mut c_void) {
        if !p.is_null() {
            // SAFETY: the caller's promise.
            unsafe { deallocate(p) }
        }
    }
);

export!(
    "free_sized",
    "hakmem_free_sized",
    /// C23 `free_sized`: `free`; the size is not needed.
    ///
    /// # Safety
    /// As for `free`.
    pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
        // SAFETY: forwarded.
        unsafe { free(p) }
    }
);

export!(
    "free_aligned_sized",
    "hakmem_free_aligned_sized",
    /// C23 `free_aligned_sized`: `free`; alignment and size are not needed.
    ///
    /// # Safety
    /// As for `free`.
    pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
        // SAFETY: forwarded.
        unsafe { free(p) }
    }
);

export!(
    "calloc",
    "hakmem_calloc",
    /// C `calloc`: null and `ENOMEM` when `n * size` overflows.
    ///
    /// # Safety
    /// None beyond C's rules for the returned block.
    pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
        match n.checked_mul(size).and_then(malloc_layout) {
            Some(l) => allocate_zeroed(l),
            None => enomem(),
        }
    }
);

export!(
    "realloc",
    "hakmem_realloc",
    /// C `realloc` (see the module docs for null and zero).
    ///
    /// # Safety
    /// `p` is null or a live block from this library's functions.
    pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: forwarded.
        unsafe { reallocate(p, size) }
    }
);

/// # Safety
/// As for `realloc`.
unsafe fn reallocate(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: no precondition.
        return unsafe { malloc(size) };
    }
    if size == 0 {
        // SAFETY: the caller's block.
        unsafe { deallocate(p) };
        return ptr::null_mut();
    }
    let Some(layout) = malloc_layout(size) else {
        return enomem();
    };
    let p = p.cast::<u8>();
    // SAFETY: the caller's block; a foreign pointer is reported, not read.
    let old = match unsafe { alloc().usable_size(p) } {
        Ok(n) => n,
        Err(f) => fault::fatal_in("realloc", f),
    };
    let q = match thread::heap() {
        // SAFETY: a live block of ours with `old` usable bytes.
        Some(h) => match unsafe { alloc().realloc(h, p, old, layout.align(), size) } {
            Ok(q) => q,
            Err(f) => fault::fatal_in("realloc", f),
        },
        None => {
            let q = alloc().alloc_shared(layout);
            if !q.is_null() {
                // SAFETY: both blocks are live and distinct; `p` has `old`
                // bytes. Then `p` is given up.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, old.min(size));
                    if let Err(f) = alloc().free_detached(p) {
                        fault::fatal_in("realloc", f)
                    }
                }
            }
            q
        }
    };
    if q.is_null() {
        return enomem();
    }
    q.cast()
}

export!(
    "reallocarray",
    "hakmem_reallocarray",
    /// `reallocarray`: `realloc(p, n * size)`, or null and `ENOMEM` (with `p`
    /// untouched) when the product overflows.
    ///
    /// # Safety
    /// As for `realloc`.
    pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
        match n.checked_mul(size) {
            // SAFETY: forwarded.
            Some(total) => unsafe { reallocate(p, total) },
            None => enomem(),
        }
    }
);

export!(
    "posix_memalign",
    "hakmem_posix_memalign",
    /// POSIX `posix_memalign`: 0, `EINVAL` or `ENOMEM`.
    ///
    /// # Safety
    /// `memptr` is valid for a pointer write.
    pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
        if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
            return libc::EINVAL;
        }
        let p = allocate_aligned(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller's promise.
        unsafe { memptr.write(p) };
        0
    }
);

export!(
    "aligned_alloc",
    "hakmem_aligned_alloc",
    /// C11 `aligned_alloc`: null and `EINVAL` unless `align` is a power of
    /// two; any size is accepted (C17).
    ///
    /// # Safety
    /// None beyond C's rules for the returned block.
    pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        if !align.is_power_of_two() {
            set_errno(libc::EINVAL);
            return ptr::null_mut();
        }
        allocate_aligned(size, align)
    }
);

/// `memalign`'s rules (see the module docs).
fn memalign_impl(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    allocate_aligned(size, align.next_power_of_two())
}

export!(
    "memalign",
    "hakmem_memalign",
    /// The obsolete `memalign`.
    ///
    /// # Safety
    /// None beyond C's rules for the returned block.
    pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
        memalign_impl(align, size)
    }
);

export!(
    "valloc",
    "hakmem_valloc",
    /// The obsolete `valloc`: page-aligned.
    ///
    /// # Safety
    /// None beyond C's rules for the returned block.
    pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
        memalign_impl(rustix::param::page_size(), size)
    }
);

export!(
    "pvalloc",
    "hakmem_pvalloc",
    /// The obsolete `pvalloc`: page-aligned, size rounded up to whole pages
    /// (at least one).
    ///
    /// # Safety
    /// None beyond C's rules for the returned block.
    pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
        let ps = rustix::param::page_size();
        match size.max(1).checked_next_multiple_of(ps) {
            Some(n) => memalign_impl(ps, n),
            None => enomem(),
        }
    }
);

export!(
    "malloc_usable_size",
    "hakmem_malloc_usable_size",
    /// glibc's `malloc_usable_size`: the bytes usable in the block, at least
    /// what was asked for; 0 for null.
    ///
    /// # Safety
    /// `p` is null or a live block from this library's functions.
    pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
        if p.is_null() {
            return 0;
        }
        // SAFETY: the caller's block; a foreign pointer is reported, not read.
        match unsafe { alloc().usable_size(p.cast()) } {
            Ok(n) => n,
            Err(f) => fault::fatal_in("malloc_usable_size", f),
        }
    }
);

export!(
    "malloc_trim",
    "hakmem_malloc_trim",
    /// glibc's `malloc_trim`: return what can be returned to the system now
    /// (this thread's pending remote frees and cached spans, exited threads'
    /// spans, empty segments, cached Large regions). `pad` is ignored.
    /// Returns 1 if memory was released, else 0.
    ///
    /// # Safety
    /// No precondition.
    pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
        let before = alloc().stats().bytes_reserved;
        alloc().collect(thread::heap());
        c_int::from(alloc().stats().bytes_reserved < before)
    }
);
