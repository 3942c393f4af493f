//! Bad pointers, and the exit statistics line.
//!
//! A pointer the core reports as [`FaultKind::NotOurs`] was never handed out
//! by hakmem: memory of another allocator (a library `dlopen`ed with hakmem
//! reached through it, a program that interposes only some of the malloc
//! functions), or a program bug (freeing a stack or static address).
//!
//! - `free` of such a pointer does nothing to it (the core decides "not ours"
//!   from its own region registry, without reading the pointer), counts it,
//!   and warns once on standard error; `HAKMEM_STRICT=1` makes it fatal.
//!   Forwarding it to the C library's `free` is not done: we cannot tell a
//!   glibc block from a wild pointer, and glibc's `free` on a wild pointer
//!   corrupts or aborts.
//! - `realloc` and `malloc_usable_size` of such a pointer abort with a
//!   message: they cannot be served without knowing the block's size, and a
//!   made-up answer (null, 0) would send the program down a wrong path.
//!
//! Every other fault (a double free, a pointer into the middle of a block or
//! into metadata) is fatal: the program has corrupted its own state.

use core::ffi::{CStr, c_char, c_int};
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hakmem_core::{Fault, FaultKind};

/// Frees of foreign pointers, ignored.
static FOREIGN: AtomicUsize = AtomicUsize::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// A fixed buffer that formats without allocating; output past its end is
/// cut off.
pub(crate) struct Buf {
    b: [u8; 256],
    n: usize,
}

impl Buf {
    pub(crate) const fn new() -> Buf {
        Buf { b: [0; 256], n: 0 }
    }

    /// Write the buffer to standard error with one `write` call (so lines of
    /// concurrent processes do not interleave).
    pub(crate) fn emit(&self) {
        self.emit_to(libc::STDERR_FILENO);
    }

    fn emit_to(&self, fd: c_int) {
        // SAFETY: writes our buffer's initialised bytes.
        let _ = unsafe { libc::write(fd, self.b.as_ptr().cast(), self.n) };
    }
}

impl core::fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s.as_bytes()[..k]);
        self.n += k;
        Ok(())
    }
}

/// Report a fault and abort.
#[cold]
#[inline(never)]
pub(crate) fn fatal(f: Fault) -> ! {
    let mut b = Buf::new();
    let _ = writeln!(b, "hakmem: fatal: {f}");
    b.emit();
    std::process::abort()
}

/// Report a fault of `op` that cannot be served without the block
/// (`realloc`, `malloc_usable_size`) and abort.
#[cold]
#[inline(never)]
pub(crate) fn fatal_in(op: &str, f: Fault) -> ! {
    let mut b = Buf::new();
    let _ = match f.kind {
        FaultKind::NotOurs => writeln!(b, "hakmem: fatal: {op} of a pointer hakmem never returned: {:#x}", f.addr),
        _ => writeln!(b, "hakmem: fatal: in {op}: {f}"),
    };
    b.emit();
    std::process::abort()
}

/// A fault in `free`: ignore a foreign pointer (see the module docs), abort
/// on anything else.
#[cold]
#[inline(never)]
pub(crate) fn on_free(f: Fault) {
    if f.kind != FaultKind::NotOurs || crate::env::settings().strict {
        fatal(f)
    }
    FOREIGN.fetch_add(1, Ordering::Relaxed);
    if !WARNED.swap(true, Ordering::Relaxed) {
        let mut b = Buf::new();
        let _ = writeln!(
            b,
            "hakmem: warning: free of a pointer hakmem never returned ({:#x}) ignored; \
             later ones are counted (HAKMEM_STRICT=1 makes this fatal)",
            f.addr
        );
        b.emit();
    }
}

/// Frees of foreign pointers ignored so far.
pub(crate) fn foreign_frees() -> usize {
    FOREIGN.load(Ordering::Relaxed)
}

/// The `HAKMEM_STATS` line, from a `.fini_array` entry: it runs at `exit`
/// (after `atexit` handlers, in reverse load order) without any
/// registration that could allocate, and not on `_exit`.
extern "C" fn at_exit() {
    let s = crate::env::settings();
    if s.stats {
        print_stats(s.stats_path);
    }
}

#[used]
#[unsafe(link_section = ".fini_array")]
static AT_EXIT: extern "C" fn() = at_exit;

unsafe extern "C" {
    /// glibc's name of the program (`basename(argv[0])`).
    static program_invocation_short_name: *const c_char;
}

/// Write one line of statistics to standard error or append it to `path`.
/// The `hakmem: pid=` prefix is the marker the tests look for.
pub(crate) fn print_stats(path: Option<&CStr>) {
    let s = crate::alloc().stats();
    // SAFETY: glibc sets the name before any code runs and never frees it.
    let name = unsafe { (&raw const program_invocation_short_name).read() };
    let name = if name.is_null() {
        c"?"
    } else {
        // SAFETY: a NUL-terminated string.
        unsafe { CStr::from_ptr(name) }
    };
    let mut b = Buf::new();
    let _ = writeln!(
        b,
        "hakmem: pid={} prog={} heaps={} abandoned={} segments={} pages_in_use={} \
         large_live={} bytes_reserved={} foreign_frees={}",
        rustix::process::getpid().as_raw_nonzero(),
        name.to_str().unwrap_or("?"),
        s.heaps,
        s.abandoned_heaps,
        s.segments,
        s.pages_in_use,
        s.large_live,
        s.bytes_reserved,
        foreign_frees()
    );
    match path {
        None => b.emit(),
        Some(p) => {
            let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
            // SAFETY: a NUL-terminated path; the mode argument is an int.
            let fd = unsafe { libc::open(p.as_ptr(), flags, 0o644 as libc::c_uint) };
            if fd >= 0 {
                b.emit_to(fd);
                // SAFETY: the descriptor we just opened.
                unsafe { libc::close(fd) };
            }
        }
    }
}
