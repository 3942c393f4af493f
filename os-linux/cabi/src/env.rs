//! `HAKMEM_*` settings, read from the environment without allocating.
//!
//! - `HAKMEM_STATS=1` — at exit, write one line of allocator statistics to
//!   standard error (`hakmem: pid=… prog=… heaps=… segments=…`). The tests
//!   use it as the proof that hakmem, not the C library, served the program.
//!   `HAKMEM_STATS=/absolute/path` appends the line to that file instead
//!   (programs such as coreutils close standard error before they exit).
//! - `HAKMEM_STRICT=1` — `free` of a pointer hakmem never handed out aborts
//!   with a message instead of being ignored.
//!
//! A value is "on" unless it is empty, `0`, `no`, `off` or `false`.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// What the environment asked for.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Settings {
    /// `HAKMEM_STATS`: print statistics at exit.
    pub stats: bool,
    /// `HAKMEM_STATS=/path`: the file to append them to (NUL-terminated), or
    /// standard error.
    pub stats_path: Option<&'static CStr>,
    /// `HAKMEM_STRICT`: abort on a free of a foreign pointer.
    pub strict: bool,
}

const LOADED: u8 = 1 << 7;
const STATS: u8 = 1 << 0;
const STRICT: u8 = 1 << 1;

/// The settings, once read (`LOADED` set), as bits.
static SETTINGS: AtomicU8 = AtomicU8::new(0);
/// Set when `SETTINGS` is being written (by one thread, once).
static LOADING: AtomicBool = AtomicBool::new(false);

/// The `HAKMEM_STATS` path, NUL-terminated; written once, before `LOADED` is
/// published.
struct PathBuf(UnsafeCell<[u8; PATH_MAX]>);
// SAFETY: written by the one thread that wins `LOADING`, before the Release
// store of `LOADED`; read only after an Acquire load sees `LOADED`.
unsafe impl Sync for PathBuf {}
const PATH_MAX: usize = 256;
static PATH: PathBuf = PathBuf(UnsafeCell::new([0; PATH_MAX]));
const HAS_PATH: u8 = 1 << 2;

unsafe extern "C" {
    /// The C library's environment (null until the C library has set it up).
    static environ: *const *const c_char;
}

/// The settings. Reads the environment the first time it is available (the
/// C library may call `malloc` before it has set `environ` up; until then the
/// defaults apply and nothing is cached). `getenv` does not allocate.
pub(crate) fn settings() -> Settings {
    let mut v = SETTINGS.load(Ordering::Acquire);
    if v & LOADED == 0 {
        v = load();
    }
    Settings {
        stats: v & STATS != 0,
        strict: v & STRICT != 0,
        stats_path: (v & HAS_PATH != 0).then(|| {
            // SAFETY: `HAS_PATH` is published (Release) after the buffer was
            // written, and the buffer is never written again.
            let buf = unsafe { &*PATH.0.get() };
            // The buffer always ends with a NUL.
            CStr::from_bytes_until_nul(buf).unwrap_or_default()
        }),
    }
}

#[cold]
fn load() -> u8 {
    // SAFETY: reading the pointer value of a C global; a race with a
    // concurrent `setenv` is the C library's own, documented, hazard.
    let env = unsafe { (&raw const environ).read_volatile() };
    if env.is_null() || LOADING.swap(true, Ordering::Acquire) {
        // Not yet available, or another thread is reading it right now:
        // the defaults, this once.
        return 0;
    }
    let mut v = LOADED;
    if let Some(s) = var(c"HAKMEM_STATS").filter(|s| on(s)) {
        v |= STATS;
        if s.first() == Some(&b'/') && s.len() < PATH_MAX {
            // SAFETY: we won `LOADING`; nobody reads `PATH` before `LOADED`.
            let buf = unsafe { &mut *PATH.0.get() };
            buf[..s.len()].copy_from_slice(s);
            buf[s.len()] = 0;
            v |= HAS_PATH;
        }
    }
    if var(c"HAKMEM_STRICT").is_some_and(on) {
        v |= STRICT;
    }
    SETTINGS.store(v, Ordering::Release);
    v
}

/// The value of an environment variable, if set.
fn var(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; `getenv` returns null or a
    // NUL-terminated string that stays valid until the environment changes,
    // and we use it at once.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    if v.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { CStr::from_ptr(v) }.to_bytes())
}

fn on(v: &[u8]) -> bool {
    !matches!(v, b"" | b"0" | b"no" | b"off" | b"false")
}
