//! Start-up configuration from `HAKMEM_*` environment variables, and the
//! statistics outputs, all without allocating (this runs inside the
//! allocator's first slow path).

use core::ffi::{CStr, c_char, c_int};
use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use hakmem_core::{Config, ConfigError};

use crate::mmap::PurgeMode;

// The C library provides these; rustix's own clock and page-size readers go
// through the vDSO and the auxiliary vector, which crash under valgrind (it
// reports a vDSO it does not map), and hakmem programs must run there.
unsafe extern "C" {
    /// The process environment (glibc, and every Unix libc).
    static environ: *const *const c_char;
    fn atexit(f: extern "C" fn()) -> c_int;
    fn clock_gettime(clock: c_int, ts: *mut Timespec) -> c_int;
    fn getpagesize() -> c_int;
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

const CLOCK_MONOTONIC: c_int = 1;

/// The OS page size, read once.
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicU64 = AtomicU64::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p as usize;
    }
    // SAFETY: a libc call with no arguments and no side effects.
    let p = unsafe { getpagesize() }.max(4096) as u64;
    PAGE.store(p, Ordering::Relaxed);
    p as usize
}

/// Adapter-level settings (the rest live in the core's `Config`).
pub(crate) struct Settings {
    pub config: Config,
    pub stats_at_exit: bool,
    pub purge: Option<PurgeMode>,
    pub purge_thread: bool,
    pub log_interval_ms: u64,
    pub huge_min: Option<usize>,
}

/// Writes to standard error through a fixed buffer, without allocating.
pub(crate) struct Stderr {
    buf: [u8; 512],
    len: usize,
}

impl Stderr {
    pub(crate) fn new() -> Stderr {
        Stderr { buf: [0; 512], len: 0 }
    }
    pub(crate) fn flush(&mut self) {
        let mut s = &self.buf[..self.len];
        while !s.is_empty() {
            match rustix::io::write(rustix::stdio::stderr(), s) {
                Ok(0) | Err(_) => break,
                Ok(n) => s = &s[n..],
            }
        }
        self.len = 0;
    }
}

impl fmt::Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

impl Drop for Stderr {
    fn drop(&mut self) {
        self.flush();
    }
}

fn warn(name: &str, value: &str, why: fmt::Arguments<'_>) {
    let mut e = Stderr::new();
    let _ = writeln!(e, "hakmem: warning: {name}={value}: {why}; using the default");
}

/// Read every `HAKMEM_*` variable. Unknown names and bad values get one
/// warning each and leave the default.
pub(crate) fn read() -> Settings {
    let mut st = Settings {
        config: Config::DEFAULT,
        stats_at_exit: false,
        purge: None,
        purge_thread: false,
        log_interval_ms: 1000,
        huge_min: None,
    };
    // SAFETY: `environ` is the libc's NUL-terminated array of NUL-terminated
    // strings; we only read it, before any thread of ours could change it.
    let mut p = unsafe { environ };
    while !p.is_null() {
        // SAFETY: as above.
        let entry = unsafe { *p };
        if entry.is_null() {
            break;
        }
        // SAFETY: a NUL-terminated string of the environment.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        // SAFETY: the next slot exists: the array ends with a null we have not reached.
        p = unsafe { p.add(1) };
        if !bytes.starts_with(b"HAKMEM_") {
            continue;
        }
        let Ok(text) = core::str::from_utf8(bytes) else { continue };
        let Some((name, value)) = text.split_once('=') else { continue };
        apply(&mut st, name, value);
    }
    st
}

fn apply(st: &mut Settings, name: &str, value: &str) {
    let v = value.trim();
    match name {
        "HAKMEM_STATS" => match v {
            "0" | "1" => st.stats_at_exit = v == "1",
            _ => warn(name, value, format_args!("expected 0 or 1")),
        },
        "HAKMEM_LOG_FILE" => open_log(name, value),
        "HAKMEM_PURGE_THREAD" => match v {
            "0" | "1" => st.purge_thread = v == "1",
            _ => warn(name, value, format_args!("expected 0 or 1")),
        },
        "HAKMEM_LOG_INTERVAL_MS" => match v.parse::<u64>() {
            Ok(n) => st.log_interval_ms = n,
            Err(_) => warn(name, value, format_args!("not a number")),
        },
        "HAKMEM_HUGEPAGE_MIN" => match hakmem_core::parse_u64(v, isize::MAX as u64) {
            Ok(n) => st.huge_min = Some(n as usize),
            Err(e) => warn(name, value, format_args!("{e}")),
        },
        // libhakmem.so's switch (foreign frees in the C ABI); known here so
        // that one environment can serve a program with both (the crate's
        // own test suite run under LD_PRELOAD) without a warning.
        "HAKMEM_STRICT" => {}
        "HAKMEM_PURGE_MODE" => match v {
            "dontneed" => st.purge = Some(PurgeMode::DontNeed),
            "free" => st.purge = Some(PurgeMode::Free),
            "off" => st.purge = Some(PurgeMode::Off),
            _ => warn(name, value, format_args!("expected dontneed, free or off")),
        },
        _ => match st.config.set(name, value) {
            Ok(()) => {}
            Err(ConfigError::Unknown) => warn(name, value, format_args!("unknown switch (see the README's table)")),
            Err(ConfigError::NoEffect(why)) => {
                let mut e = Stderr::new();
                let _ = writeln!(e, "hakmem: warning: {name}={value}: {why}");
            }
            Err(e) => warn(name, value, format_args!("{e}")),
        },
    }
}

/// The CSV log: file descriptor (or -1), interval and time of the last line.
static LOG_FD: AtomicI32 = AtomicI32::new(-1);
static LOG_LAST_MS: AtomicU64 = AtomicU64::new(0);
static LOG_BUSY: AtomicBool = AtomicBool::new(false);

fn open_log(name: &str, path: &str) {
    let mut buf = [0u8; 256];
    if path.len() >= buf.len() {
        warn(name, path, format_args!("path too long"));
        return;
    }
    buf[..path.len()].copy_from_slice(path.as_bytes());
    let Ok(c) = CStr::from_bytes_until_nul(&buf) else { return };
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(c, OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND | OFlags::CLOEXEC, Mode::from(0o644)) {
        Ok(fd) => {
            use std::os::fd::IntoRawFd;
            let fd = fd.into_raw_fd();
            LOG_FD.store(fd, Ordering::Relaxed);
            let mut w = FdWriter::new(fd);
            let _ = writeln!(w, "time_ms,tier,class,size,fast_alloc,fast_free,slow_alloc,slow_free,remote_free");
        }
        Err(e) => warn(name, path, format_args!("cannot open: {e}")),
    }
}

/// A buffered writer to a raw file descriptor.
struct FdWriter {
    fd: i32,
    buf: [u8; 1024],
    len: usize,
}

impl FdWriter {
    fn new(fd: i32) -> FdWriter {
        FdWriter { fd, buf: [0; 1024], len: 0 }
    }
    fn flush(&mut self) {
        // SAFETY: the descriptor is ours and stays open for the process.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let mut s = &self.buf[..self.len];
        while !s.is_empty() {
            match rustix::io::write(fd, s) {
                Ok(0) | Err(_) => break,
                Ok(n) => s = &s[n..],
            }
        }
        self.len = 0;
    }
}

impl fmt::Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.len + s.len() > self.buf.len() {
            self.flush();
        }
        let n = s.len().min(self.buf.len());
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl Drop for FdWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Append the CSV lines for one moment: one per class with any activity.
pub(crate) fn log_now(now_ms: u64) {
    let fd = LOG_FD.load(Ordering::Relaxed);
    if fd < 0 || LOG_BUSY.swap(true, Ordering::Acquire) {
        return;
    }
    let s = crate::stats();
    let mut w = FdWriter::new(fd);
    for (c, cs) in s.classes.iter().enumerate() {
        if cs.allocs() + cs.frees() == 0 {
            continue;
        }
        let tier = if hakmem_core::class::is_tiny(c) { "tiny" } else { "mid" };
        let _ = writeln!(
            w,
            "{now_ms},{tier},{c},{},{},{},{},{},{}",
            hakmem_core::class::size_of_class(c),
            cs.fast_alloc,
            cs.fast_free,
            cs.slow_alloc,
            cs.slow_free,
            cs.remote_free
        );
    }
    let _ = writeln!(w, "{now_ms},large,0,0,{},{},0,0,0", s.large_allocs, s.large_frees);
    drop(w);
    LOG_BUSY.store(false, Ordering::Release);
}

/// On a slow path: write the log if its interval has passed.
#[inline]
pub(crate) fn maybe_log(interval_ms: u64) {
    if LOG_FD.load(Ordering::Relaxed) < 0 {
        return;
    }
    let now = now_ms();
    let last = LOG_LAST_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= interval_ms
        && LOG_LAST_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        log_now(now);
    }
}

/// Milliseconds on the monotonic clock.
pub(crate) fn now_ms() -> u64 {
    let mut t = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid `struct timespec` for the call to fill.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

extern "C" fn at_exit() {
    if crate::STATS_AT_EXIT.load(Ordering::Relaxed) {
        let mut e = Stderr::new();
        let _ = write!(e, "{}", crate::stats());
    }
    log_now(now_ms());
}

/// Register the exit hook (statistics summary, last log lines).
pub(crate) fn register_exit() {
    // SAFETY: `at_exit` is a plain `extern "C" fn` that allocates nothing.
    unsafe { atexit(at_exit) };
}
