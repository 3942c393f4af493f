//! Invariant checkers, compiled in under `debug_assertions` or the
//! `check-invariants` feature and called at operation boundaries. Each
//! returns a [`Report`] naming the broken equation with the offending span's
//! or heap's state; the allocator hands it to `PageSource::fatal`.
//!
//! The equations they check are stated on the structs they govern
//! ([`PageDesc`], [`HeapOwned`]) and in `docs/INVARIANTS.md`.

// A `Report` is a few hundred bytes returned by value: the core cannot box,
// and the checkers run only on slow paths of checking builds.
#![allow(clippy::result_large_err)]

use core::fmt::{self, Write as _};

use crate::block::{self, Block};
use crate::class::{self, NUM_CLASSES};
use crate::heap::{Heap, HeapOwned};
use crate::segment::{PageDesc, PageFlags, info_class, info_head_off, info_kind, kind};
use crate::sync::Ordering;

/// Whether the checkers run.
pub(crate) const ENABLED: bool = cfg!(any(debug_assertions, feature = "check-invariants"));

/// Whether the run-time debug switches (`HAKMEM_TINY_C6_DEBUG_POP`, …) exist.
pub(crate) const DEBUG_SWITCHES: bool = cfg!(feature = "check-invariants");

/// A failed check: a message in a fixed buffer (the core cannot allocate).
pub struct Report {
    buf: [u8; 320],
    len: usize,
}

impl Report {
    pub(crate) fn new(args: fmt::Arguments<'_>) -> Report {
        let mut r = Report { buf: [0; 320], len: 0 };
        let _ = r.write_fmt(args);
        r
    }
}

impl fmt::Write for Report {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<report>"))
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(Report::new(format_args!($($arg)*)));
        }
    };
}

/// A span head's state, for messages.
pub(crate) struct SpanState(pub *mut PageDesc);

impl fmt::Display for SpanState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        // SAFETY: only built for a live span head whose holder is reporting.
        unsafe {
            let inf = (*d).info.load(Ordering::Relaxed);
            write!(
                f,
                "span {d:p}: class {} kind {} owner {:p} free_count {} bump {} capacity {} flags {:?} area {:p} pages {} site {}",
                info_class(inf),
                info_kind(inf),
                (*d).owner.load(Ordering::Relaxed),
                (*d).free_count.get(),
                (*d).bump.get(),
                (*d).capacity.get(),
                (*d).flags.get(),
                (*d).area.get(),
                (*d).span.get(),
                crate::segment::site_of(d),
            )
        }
    }
}

/// Check an owned span head: counts, free list, descriptors.
///
/// # Safety
/// `d` is the head of a span owned by `owner`, whose owned state the caller holds.
pub(crate) unsafe fn span(d: *mut PageDesc, owner: *mut Heap) -> Result<(), Report> {
    // SAFETY: the caller holds the span's owner state.
    unsafe {
        let inf = (*d).info.load(Ordering::Relaxed);
        let c = info_class(inf);
        let (fc, bump, cap) = ((*d).free_count.get(), (*d).bump.get(), (*d).capacity.get());
        let flags = (*d).flags.get();
        let st = SpanState(d);
        ensure!(info_kind(inf) == kind::SMALL && c != 0 && c < NUM_CLASSES, "not an in-use span: {st}");
        ensure!(info_head_off(inf) == 0, "not a span head: {st}");
        ensure!(fc <= bump && bump <= cap, "counts out of order: {st}");
        ensure!(
            !(flags.contains(PageFlags::PARTIAL) && flags.contains(PageFlags::CURRENT)),
            "partial and current: {st}"
        );
        let pages = (*d).span.get() as usize;
        for i in 0..pages {
            let di = d.wrapping_add(i);
            ensure!((*di).owner.load(Ordering::Relaxed) == owner, "page {i} has another owner: {st}");
            let ii = (*di).info.load(Ordering::Relaxed);
            ensure!(
                info_class(ii) == c && info_kind(ii) == kind::SMALL && info_head_off(ii) == i,
                "page {i} descriptor disagrees: {st}"
            );
        }
        let bs = class::size_of_class(c);
        let area = (*d).area.get();
        let mut n = 0u32;
        let mut b: *mut Block = (*d).free.get();
        while !b.is_null() {
            n += 1;
            ensure!(n <= fc, "free list longer than free_count: {st}");
            let off = b.addr().wrapping_sub(area.addr());
            ensure!(
                off < bump as usize * bs && off.is_multiple_of(bs),
                "free-list block {b:p} is outside the span or off a block boundary: {st}"
            );
            b = block::next(b);
        }
        ensure!(n == fc, "free list shorter ({n}) than free_count: {st}");
        Ok(())
    }
}

/// Check a heap's owned lists.
///
/// # Safety
/// `o` is `h`'s owned state, held by the caller.
pub(crate) unsafe fn heap(h: *mut Heap, o: &HeapOwned) -> Result<(), Report> {
    // SAFETY: the caller holds `h`.
    unsafe {
        for c in 0..NUM_CLASSES {
            let mut prev: *mut PageDesc = core::ptr::null_mut();
            let mut d = o.partial[c];
            let mut n = 0;
            while !d.is_null() {
                span(d, h)?;
                let st = SpanState(d);
                let flags = (*d).flags.get();
                ensure!(flags.contains(PageFlags::PARTIAL), "on the partial list without PARTIAL: {st}");
                ensure!((*d).class() == c, "on partial list {c}: {st}");
                ensure!((*d).prev.get() == prev, "broken back link: {st}");
                let has = (*d).free_count.get() > 0 || (*d).bump.get() < (*d).capacity.get();
                ensure!(has, "partial span with nothing to give: {st}");
                prev = d;
                d = (*d).next.get();
                n += 1;
                ensure!(n <= 1 << 20, "partial list of class {c} loops");
            }
        }
        let mut d = o.cache;
        let mut n = 0;
        while !d.is_null() {
            ensure!(
                info_kind((*d).info.load(Ordering::Relaxed)) == kind::CACHED,
                "cached span {d:p} not marked cached"
            );
            n += 1;
            d = (*d).next.get();
        }
        ensure!(n == o.cache_len, "span cache holds {n}, counted {}", o.cache_len);
        for c in 0..NUM_CLASSES {
            ensure!(o.pending[c].is_null() == (o.pending_mask & (1 << c) == 0), "pending mask bit {c} disagrees");
        }
        Ok(())
    }
}

/// Whether every free checks that its block is not free already (a freed
/// block's encoded link marks it; see `block`).
pub(crate) const EXACT_FREE: bool = cfg!(feature = "check-invariants");
