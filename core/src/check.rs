//! Invariant checkers, compiled in under `debug_assertions` or the
//! `check-invariants` feature and called at operation boundaries. Each
//! panics with the offending span's or heap's state.
//!
//! The equations they check are stated on the structs they govern
//! ([`PageDesc`], [`HeapOwned`]) and in `docs/INVARIANTS.md`.

use crate::block::{self, Block};
use crate::class::{self, NUM_CLASSES};
use crate::heap::{Heap, HeapOwned};
use crate::segment::{Geo, Geometry, PageDesc, PageFlags, info_class, info_head_off, info_kind, kind};
use crate::sync::Ordering;

/// Whether the checkers run.
pub(crate) const ENABLED: bool = cfg!(any(debug_assertions, feature = "check-invariants"));

/// Check an owned span head: counts, free list, descriptors.
///
/// # Safety
/// `d` is the head of a span owned by `owner`, whose owned state the caller holds.
pub(crate) unsafe fn span<G: Geometry>(d: *mut PageDesc, owner: *mut Heap) {
    // SAFETY: the caller holds the span's owner state.
    unsafe {
        let inf = (*d).info.load(Ordering::Relaxed);
        let c = info_class(inf);
        let (fc, bump, cap) = ((*d).free_count.get(), (*d).bump.get(), (*d).capacity.get());
        let flags = (*d).flags.get();
        let state = || {
            alloc_fmt(format_args!(
                "span {d:p}: class {c} kind {} free_count {fc} bump {bump} capacity {cap} flags {flags:?} area {:p} span {}",
                info_kind(inf),
                (*d).area.get(),
                (*d).span.get()
            ))
        };
        assert!(info_kind(inf) == kind::SMALL && c != 0 && c < NUM_CLASSES, "{}", state());
        assert!(info_head_off(inf) == 0, "not a span head: {}", state());
        assert!(fc <= bump && bump <= cap, "counts: {}", state());
        assert!(!(flags.contains(PageFlags::PARTIAL) && flags.contains(PageFlags::CURRENT)), "{}", state());
        let pages = (*d).span.get() as usize;
        for i in 0..pages {
            let di = d.wrapping_add(i);
            assert_eq!((*di).owner.load(Ordering::Relaxed), owner, "page {i} owner: {}", state());
            let ii = (*di).info.load(Ordering::Relaxed);
            assert!(
                info_class(ii) == c && info_kind(ii) == kind::SMALL && info_head_off(ii) == i,
                "page {i}: {}",
                state()
            );
        }
        let bs = class::size_of_class(c);
        let area = (*d).area.get();
        let mut n = 0u32;
        let mut b: *mut Block = (*d).free.get();
        while !b.is_null() {
            n += 1;
            assert!(n <= fc, "free list longer than free_count: {}", state());
            let off = b.addr().wrapping_sub(area.addr());
            assert!(
                off < bump as usize * bs && off.is_multiple_of(bs),
                "free block {b:p} out of the span: {}",
                state()
            );
            b = block::next(b);
        }
        assert_eq!(n, fc, "free list shorter than free_count: {}", state());
        let _ = Geo::<G>::PAGE_SIZE;
    }
}

/// Check a heap's owned lists.
///
/// # Safety
/// `o` is `h`'s owned state, held by the caller.
pub(crate) unsafe fn heap<G: Geometry>(h: *mut Heap, o: &HeapOwned) {
    // SAFETY: the caller holds `h`.
    unsafe {
        for c in 0..NUM_CLASSES {
            let mut prev: *mut PageDesc = core::ptr::null_mut();
            let mut d = o.partial[c];
            let mut n = 0;
            while !d.is_null() {
                span::<G>(d, h);
                let flags = (*d).flags.get();
                assert!(flags.contains(PageFlags::PARTIAL), "span {d:p} on the partial list without PARTIAL");
                assert_eq!((*d).class(), c, "span {d:p} on the wrong partial list");
                assert_eq!((*d).prev.get(), prev, "span {d:p}: broken back link");
                let has = (*d).free_count.get() > 0 || (*d).bump.get() < (*d).capacity.get();
                assert!(has, "span {d:p} on the partial list has nothing to give");
                prev = d;
                d = (*d).next.get();
                n += 1;
                assert!(n <= 1 << 20, "partial list of class {c} loops");
            }
        }
        let mut d = o.cache;
        let mut n = 0;
        while !d.is_null() {
            assert_eq!(info_kind((*d).info.load(Ordering::Relaxed)), kind::CACHED, "cached span {d:p}");
            n += 1;
            d = (*d).next.get();
        }
        assert_eq!(n, o.cache_len, "span cache length");
        for c in 0..NUM_CLASSES {
            assert_eq!(o.pending[c].is_null(), o.pending_mask & (1 << c) == 0, "pending mask bit {c}");
        }
    }
}

/// Format into a fixed buffer (no allocation: the core has none).
fn alloc_fmt(args: core::fmt::Arguments<'_>) -> FmtBuf {
    let mut b = FmtBuf { buf: [0; 256], len: 0 };
    let _ = core::fmt::write(&mut b, args);
    b
}

pub(crate) struct FmtBuf {
    buf: [u8; 256],
    len: usize,
}

impl core::fmt::Write for FmtBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl core::fmt::Display for FmtBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<state>"))
    }
}
