//! The C++ replaceable allocation functions (`operator new` and `operator
//! delete`, Itanium-ABI mangled names for a 64-bit `size_t`).
//!
//! - The throwing `new`s loop as C++ requires: on failure, call the installed
//!   `std::new_handler` and retry; with no handler, throw `std::bad_alloc`.
//!   Both are reached through the C++ runtime the program already has
//!   (`std::get_new_handler` and libstdc++'s `std::__throw_bad_alloc`, looked
//!   up with `dlsym` on that cold path only); without them — a runtime other
//!   than libstdc++ — the process aborts with a message.
//! - The `nothrow` `new`s return null on failure without calling the new
//!   handler (the standard says they behave as if they called the throwing
//!   form and caught `bad_alloc`; we cannot catch a C++ exception from Rust,
//!   and a handler that throws would escape a `noexcept` function).
//! - `new(0)` returns a unique pointer. Every `delete` is `free`; the size and
//!   alignment arguments are not needed.
//!
//! These functions use the `C-unwind` ABI: a new handler may throw, and the
//! exception unwinds through our frame to the caller of `new`.

use core::ffi::{CStr, c_void};

use crate::abi::{allocate_aligned, deallocate, malloc_align};
use crate::export;

type Handler = unsafe extern "C-unwind" fn();

fn lookup(name: &CStr) -> *mut c_void {
    // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the global
    // scope. `dlsym` may allocate, which is fine: we hold nothing.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// The installed new handler, if any.
fn new_handler() -> Option<Handler> {
    let get = lookup(c"_ZSt15get_new_handlerv");
    if get.is_null() {
        return None;
    }
    // SAFETY: `std::get_new_handler()` takes nothing and returns the handler
    // (a function pointer or null).
    let get: unsafe extern "C" fn() -> Option<Handler> = unsafe { core::mem::transmute(get) };
    // SAFETY: calling it has no precondition.
    unsafe { get() }
}

/// Throw `std::bad_alloc`, or abort when the C++ runtime offers no way to.
#[cold]
fn throw_bad_alloc() -> ! {
    let throw = lookup(c"_ZSt17__throw_bad_allocv");
    if !throw.is_null() {
        // SAFETY: libstdc++'s `std::__throw_bad_alloc()` takes nothing and
        // never returns: it throws.
        let throw: unsafe extern "C-unwind" fn() -> ! = unsafe { core::mem::transmute(throw) };
        // SAFETY: as above.
        unsafe { throw() }
    }
    let mut b = crate::fault::Buf::new();
    let _ = core::fmt::Write::write_str(
        &mut b,
        "hakmem: fatal: operator new: out of memory, and no C++ runtime to throw std::bad_alloc\n",
    );
    b.emit();
    std::process::abort()
}

/// The throwing `new`: allocate, or run the new handler and retry, or throw.
fn new_throwing(size: usize, align: usize) -> *mut c_void {
    loop {
        let p = allocate_aligned(size, align);
        if !p.is_null() {
            return p;
        }
        match new_handler() {
            // SAFETY: the program installed it; it may throw, which unwinds
            // through this `C-unwind` frame.
            Some(h) => unsafe { h() },
            None => throw_bad_alloc(),
        }
    }
}

export!(
    "_Znwm",
    "hakmem_new",
    /// `operator new(size_t)`.
    ///
    /// # Safety
    /// None beyond C++'s rules for the returned block.
    pub unsafe extern "C-unwind" fn new(size: usize) -> *mut c_void {
        new_throwing(size, malloc_align(size))
    }
);

export!(
    "_Znam",
    "hakmem_new_array",
    /// `operator new[](size_t)`.
    ///
    /// # Safety
    /// None beyond C++'s rules for the returned block.
    pub unsafe extern "C-unwind" fn new_array(size: usize) -> *mut c_void {
        new_throwing(size, malloc_align(size))
    }
);

export!(
    "_ZnwmRKSt9nothrow_t",
    "hakmem_new_nothrow",
    /// `operator new(size_t, const std::nothrow_t&)`.
    ///
    /// # Safety
    /// None beyond C++'s rules for the returned block.
    pub unsafe extern "C" fn new_nothrow(size: usize, _nt: *const c_void) -> *mut c_void {
        allocate_aligned(size, malloc_align(size))
    }
);

export!(
    "_ZnamRKSt9nothrow_t",
    "hakmem_new_array_nothrow",
    /// `operator new[](size_t, const std::nothrow_t&)`.
    ///
    /// # Safety
    /// None beyond C++'s rules for the returned block.
    pub unsafe extern "C" fn new_array_nothrow(size: usize, _nt: *const c_void) -> *mut c_void {
        allocate_aligned(size, malloc_align(size))
    }
);

export!(
    "_ZnwmSt11align_val_t",
    "hakmem_new_aligned",
    /// `operator new(size_t, std::align_val_t)`.
    ///
    /// # Safety
    /// `align` is a power of two (C++ requires it; others fail as out of memory).
    pub unsafe extern "C-unwind" fn new_aligned(size: usize, align: usize) -> *mut c_void {
        new_throwing(size, align)
    }
);

export!(
    "_ZnamSt11align_val_t",
    "hakmem_new_array_aligned",
    /// `operator new[](size_t, std::align_val_t)`.
    ///
    /// # Safety
    /// As for `new_aligned`.
    pub unsafe extern "C-unwind" fn new_array_aligned(size: usize, align: usize) -> *mut c_void {
        new_throwing(size, align)
    }
);

export!(
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "hakmem_new_aligned_nothrow",
    /// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
    ///
    /// # Safety
    /// As for `new_aligned`.
    pub unsafe extern "C" fn new_aligned_nothrow(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
        allocate_aligned(size, align)
    }
);

export!(
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "hakmem_new_array_aligned_nothrow",
    /// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
    ///
    /// # Safety
    /// As for `new_aligned`.
    pub unsafe extern "C" fn new_array_aligned_nothrow(size: usize, align: usize, _nt: *const c_void) -> *mut c_void {
        allocate_aligned(size, align)
    }
);

/// Every `delete`.
///
/// # Safety
/// `p` is null or a live block from this library.
#[inline(always)]
unsafe fn delete_impl(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: the caller's promise.
        unsafe { deallocate(p) }
    }
}

/// Define `operator delete` variants: all of them free the pointer; the
/// extra arguments (size, alignment, `nothrow`) are not needed.
macro_rules! deletes {
    ($($c:literal, $prefixed:literal, $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        export!(
            $c,
            $prefixed,
            /// An `operator delete` (see the module docs).
            ///
            /// # Safety
            /// `p` is null or a live block from this library.
            pub unsafe extern "C" fn $name(p: *mut c_void, $(_: $ty),*) {
                // SAFETY: the caller's promise.
                unsafe { delete_impl(p) }
            }
        );
    )*};
}

deletes! {
    "_ZdlPv", "hakmem_delete", delete();
    "_ZdaPv", "hakmem_delete_array", delete_array();
    "_ZdlPvm", "hakmem_delete_sized", delete_sized(size: usize);
    "_ZdaPvm", "hakmem_delete_array_sized", delete_array_sized(size: usize);
    "_ZdlPvRKSt9nothrow_t", "hakmem_delete_nothrow", delete_nothrow(nt: *const c_void);
    "_ZdaPvRKSt9nothrow_t", "hakmem_delete_array_nothrow", delete_array_nothrow(nt: *const c_void);
    "_ZdlPvSt11align_val_t", "hakmem_delete_aligned", delete_aligned(align: usize);
    "_ZdaPvSt11align_val_t", "hakmem_delete_array_aligned", delete_array_aligned(align: usize);
    "_ZdlPvmSt11align_val_t", "hakmem_delete_sized_aligned", delete_sized_aligned(size: usize, align: usize);
    "_ZdaPvmSt11align_val_t", "hakmem_delete_array_sized_aligned", delete_array_sized_aligned(size: usize, align: usize);
    "_ZdlPvSt11align_val_tRKSt9nothrow_t", "hakmem_delete_aligned_nothrow", delete_aligned_nothrow(align: usize, nt: *const c_void);
    "_ZdaPvSt11align_val_tRKSt9nothrow_t", "hakmem_delete_array_aligned_nothrow", delete_array_aligned_nothrow(align: usize, nt: *const c_void);
}
