//! Segments, pages and their descriptors: the memory layout.
//!
//! ```text
//!  segment (SEGMENT_SIZE, aligned to SEGMENT_SIZE; server: 2 MiB = 32 pages of 64 KiB)
//!  ┌──────────────────────────────┬──────────────┬──────────────┬─────┬──────────────┐
//!  │ header: SegmentHeader        │   page 1     │   page 2     │ ... │   page 31    │
//!  │  + PageDesc[PAGES] (64 B ea.)│              │              │     │              │
//!  │ ├ page 0 area (rest of pg 0)─┤              │              │     │              │
//!  └──────────────────────────────┴──────────────┴──────────────┴─────┴──────────────┘
//!   ptr & !SEGMENT_MASK  → the header      (ptr & SEGMENT_MASK) >> PAGE_SHIFT → descriptor index
//! ```
//!
//! A span of one or more pages serves one size class; its blocks sit back to
//! back from the span's area start and carry no header. Every descriptor of a
//! span repeats the span's owner and class and says how far back its head is,
//! so a free finds everything it needs with one mask, one shift and one load.
//! A Large allocation is a region of its own whose first bytes are a header
//! laid out like a segment's, with every descriptor marked Large.

use core::marker::PhantomData;
use core::mem::size_of;

use crate::block::Block;
use crate::class::{self, CLASS_SIZE, NUM_CLASSES};
use crate::heap::Heap;
use crate::sync::{AtomicPtr, AtomicU32, Guarded, Ordering};

/// The sizes of segments and pages, fixed at compile time.
///
/// `PAGE_SHIFT ≥ 6` and at most 64 pages per segment (`SEGMENT_SHIFT -
/// PAGE_SHIFT ≤ 6`); a segment must hold its header plus at least one page.
pub trait Geometry: 'static + Send + Sync {
    /// log2 of the segment size (also its alignment).
    const SEGMENT_SHIFT: u32;
    /// log2 of the page size.
    const PAGE_SHIFT: u32;
}

/// The Linux/server geometry: 2 MiB segments of 32 × 64 KiB pages.
pub enum Server {}
impl Geometry for Server {
    const SEGMENT_SHIFT: u32 = 21;
    const PAGE_SHIFT: u32 = 16;
}

/// A geometry for microcontrollers: 32 KiB segments of 32 × 1 KiB pages, so a
/// 64 KiB heap holds at least one segment.
pub enum Small {}
impl Geometry for Small {
    const SEGMENT_SHIFT: u32 = 15;
    const PAGE_SHIFT: u32 = 10;
}

/// What a descriptor's page is.
pub(crate) mod kind {
    /// In the pool, free.
    pub const FREE: u32 = 0;
    /// Part of a span serving a size class.
    pub const SMALL: u32 = 1;
    /// Part of a Large region's header.
    pub const LARGE: u32 = 2;
    /// Part of a metadata segment (local heaps).
    pub const META: u32 = 3;
    /// Covered by the segment header.
    pub const HEADER: u32 = 4;
    /// Empty, held in a heap's span cache.
    pub const CACHED: u32 = 5;
}

/// Pack a descriptor's `info` word: class, kind and distance to the span head.
#[inline(always)]
pub(crate) const fn info(class: usize, kind: u32, head_off: usize) -> u32 {
    class as u32 | kind << 8 | (head_off as u32) << 16
}
#[inline(always)]
pub(crate) const fn info_class(info: u32) -> usize {
    (info & 0xff) as usize
}
#[inline(always)]
pub(crate) const fn info_kind(info: u32) -> u32 {
    (info >> 8) & 0xff
}
#[inline(always)]
pub(crate) const fn info_head_off(info: u32) -> usize {
    (info >> 16) as usize
}

bitflags::bitflags! {
    /// State of a span, kept in its head descriptor by its owner.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct PageFlags: u8 {
        /// The span is its owner's current page for its class.
        const CURRENT = 1;
        /// The span is on its owner's partial list.
        const PARTIAL = 2;
        /// Fresh blocks of the span (never handed out) read as zero.
        const ZEROED = 4;
    }
}

/// The descriptor of one page. The head descriptor of a span carries the
/// span's state; the others repeat only `owner` and `info`.
///
/// Invariants (head descriptor of an in-use span, checked by `check::span`):
/// - `free_count == |free|` and `free_count ≤ bump ≤ capacity`;
/// - blocks handed out and not yet back on `free` number `bump - free_count`
///   (blocks sitting in a thread's bins count as handed out: that difference is
///   the *delta* the owner flushes back);
/// - `PARTIAL` ⇔ on the owner's partial list ⇒ not `CURRENT`;
/// - the span is released to the pool only when `free_count == bump`.
#[repr(C, align(64))]
pub(crate) struct PageDesc {
    /// The owning heap, or null when the page is free, cached, Large or
    /// metadata. Written only while no block of the span is live (by the pool
    /// or the owner), so a free of a live block reads a stable value: `Relaxed`
    /// suffices, the block's hand-off to the freeing thread orders it.
    pub owner: AtomicPtr<Heap>,
    /// `info(class, kind, head_off)`; same rule as `owner`.
    pub info: AtomicU32,
    /// Owner-only fields below (the owner of the heap, or whoever holds the
    /// pool lock while the span is free).
    pub flags: Guarded<PageFlags>,
    /// The site that last changed the span's counts (checking builds with
    /// `HAKMEM_TINY_C6_DELTA_TRACE`; see [`site`]).
    pub site: Guarded<u8>,
    /// Blocks freed back to the span, linked through their first word.
    pub free: Guarded<*mut Block>,
    /// Length of `free`.
    pub free_count: Guarded<u32>,
    /// Blocks carved so far from the area (the rest have never been used).
    pub bump: Guarded<u32>,
    /// Blocks the span's area holds.
    pub capacity: Guarded<u32>,
    /// Pages in the span (head only).
    pub span: Guarded<u32>,
    /// First byte of the span's area.
    pub area: Guarded<*mut u8>,
    /// Links on the owner's partial list or the heap's span cache.
    pub next: Guarded<*mut PageDesc>,
    /// Back link on the owner's partial list.
    pub prev: Guarded<*mut PageDesc>,
}

#[cfg(not(hakmem_loom))]
static_assertions::const_assert_eq!(size_of::<PageDesc>(), 64);

impl PageDesc {
    pub(crate) fn new(kind: u32) -> PageDesc {
        PageDesc {
            owner: AtomicPtr::new(core::ptr::null_mut()),
            info: AtomicU32::new(info(0, kind, 0)),
            flags: Guarded::new(PageFlags::empty()),
            site: Guarded::new(site::NONE),
            free: Guarded::new(core::ptr::null_mut()),
            free_count: Guarded::new(0),
            bump: Guarded::new(0),
            capacity: Guarded::new(0),
            span: Guarded::new(0),
            area: Guarded::new(core::ptr::null_mut()),
            next: Guarded::new(core::ptr::null_mut()),
            prev: Guarded::new(core::ptr::null_mut()),
        }
    }

    /// Class of the span this page belongs to (meaningful when SMALL).
    #[inline(always)]
    pub(crate) fn class(&self) -> usize {
        info_class(self.info.load(Ordering::Relaxed))
    }
}

/// Sites that change a span's counts, stamped on the span when delta
/// tracing is on, and counted per heap for the delta summary.
pub(crate) mod site {
    pub const NONE: u8 = 0;
    /// Blocks taken from the span into a bin.
    pub const ALLOC: u8 = 1;
    /// A block given back to the span.
    pub const FREE: u8 = 2;
    /// The span made a bin's current page.
    pub const ATTACH: u8 = 3;
    /// The span left its heap, empty.
    pub const EMPTY: u8 = 4;
    /// A cache flushed at its cap.
    pub const THRESHOLD: u8 = 5;
    /// Number of sites.
    pub const COUNT: usize = 6;
    /// Names, by site.
    pub const NAMES: [&str; COUNT] = ["none", "alloc", "free", "attach", "empty", "threshold"];
}

/// The name of the site last stamped on span `d`.
///
/// # Safety
/// `d` is a live descriptor whose owner is the caller.
pub(crate) unsafe fn site_of(d: *mut PageDesc) -> &'static str {
    // SAFETY: forwarded.
    site::NAMES.get(unsafe { (*d).site.get() } as usize).copied().unwrap_or("?")
}

/// Which segment a header belongs to.
pub(crate) mod seg_kind {
    pub const SMALL: u32 = 0x5e6_0001;
    pub const LARGE: u32 = 0x5e6_0002;
    pub const META: u32 = 0x5e6_0003;
}

/// Mixed into a header's cookie so a stray address rarely passes for a header.
pub(crate) const COOKIE_KEY: usize = 0x9e37_79b9_7f4a_7c15_u64 as usize;

/// The start of a segment (or of a Large region).
#[repr(C)]
pub(crate) struct SegmentHeader {
    /// `address ^ COOKIE_KEY` while the segment is live, 0 once released.
    pub cookie: usize,
    /// One of [`seg_kind`].
    pub kind: u32,
    /// Large: whether the block's bytes are known to read as zero.
    pub zeroed: Guarded<bool>,
    /// Size of the region this header starts.
    pub region_size: Guarded<usize>,
    /// Large: offset of the block from the header.
    pub block_offset: Guarded<usize>,
    /// Large: bytes usable from the block start.
    pub usable: Guarded<usize>,
    /// Small: bit `i` set iff page `i` is free in the pool (pool lock).
    pub free_mask: Guarded<u64>,
    /// Small: links on the pool's list of segments with free pages (pool lock).
    pub next: Guarded<*mut SegmentHeader>,
    pub prev: Guarded<*mut SegmentHeader>,
    /// Small: whether on that list (pool lock).
    pub listed: Guarded<bool>,
    /// Small: free pages whose memory may still be resident (pool lock).
    pub dirty: Guarded<u64>,
    /// Small: free pages known not to be resident: purged, or never touched
    /// since the segment was reserved (pool lock).
    pub clean: Guarded<u64>,
    /// Small: when the oldest dirty page became free, in the source's
    /// milliseconds (pool lock).
    pub dirty_since: Guarded<u64>,
    /// Small: links on the pool's queue of segments with dirty pages, oldest
    /// first (pool lock).
    pub dq_next: Guarded<*mut SegmentHeader>,
    pub dq_prev: Guarded<*mut SegmentHeader>,
    pub in_dq: Guarded<bool>,
}

/// Address arithmetic and per-class spans for a geometry.
pub struct Geo<G>(PhantomData<G>);

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}
const fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

impl<G: Geometry> Geo<G> {
    /// Bytes in a segment; also its alignment.
    pub const SEGMENT_SIZE: usize = 1 << G::SEGMENT_SHIFT;
    /// `addr & SEGMENT_MASK` is the offset in its segment.
    pub const SEGMENT_MASK: usize = Self::SEGMENT_SIZE - 1;
    /// Bytes in a page.
    pub const PAGE_SIZE: usize = 1 << G::PAGE_SHIFT;
    /// Pages in a segment.
    pub const PAGES: usize = 1 << (G::SEGMENT_SHIFT - G::PAGE_SHIFT);
    /// Offset of the descriptor array in a header.
    pub const DESC_OFFSET: usize = (size_of::<SegmentHeader>() + 63) & !63;
    /// Hardened builds on geometries with pages of 16 KiB or more: bytes of
    /// guard between the metadata and the first blocks, which the source
    /// makes inaccessible where it can (`PageSource::protect`). 0 otherwise.
    pub const GUARD_SIZE: usize = if cfg!(feature = "secure") && Self::PAGE_SIZE >= 16 * 1024 { 4096 } else { 0 };
    /// End of the metadata: the guard starts here.
    pub(crate) const META_END: usize = {
        let bytes = Self::DESC_OFFSET + Self::PAGES * size_of::<PageDesc>();
        if Self::GUARD_SIZE == 0 { bytes } else { bytes.next_multiple_of(Self::GUARD_SIZE) }
    };
    const HEADER_BYTES: usize = Self::META_END + Self::GUARD_SIZE;
    /// Bytes of header. Below a page it is a power of two, so page 0's area
    /// starts aligned to it; otherwise it is whole pages.
    pub const HEADER_SIZE: usize = if Self::HEADER_BYTES < Self::PAGE_SIZE {
        Self::HEADER_BYTES.next_power_of_two()
    } else {
        (Self::HEADER_BYTES + Self::PAGE_SIZE - 1) & !(Self::PAGE_SIZE - 1)
    };
    /// First page with usable bytes (page 0 when the header is smaller than a page).
    pub const FIRST_PAGE: usize = Self::HEADER_SIZE / Self::PAGE_SIZE;
    /// Whether the first usable page is shortened by the header.
    pub const PARTIAL_FIRST: bool = Self::HEADER_SIZE < Self::PAGE_SIZE;
    /// First page that is whole.
    pub const FIRST_WHOLE_PAGE: usize = Self::FIRST_PAGE + Self::PARTIAL_FIRST as usize;
    /// Longest span: half a segment, or what is left after the header.
    pub const MAX_SPAN: usize = max(1, min(Self::PAGES / 2, Self::PAGES - Self::FIRST_WHOLE_PAGE));
    /// Bits of every page that can ever be free in the pool.
    pub const ALL_PAGES: u64 = {
        let all = if Self::PAGES == 64 { u64::MAX } else { (1u64 << Self::PAGES) - 1 };
        all & !((1u64 << Self::FIRST_PAGE) - 1)
    };

    /// Pages per span of each class: enough for about eight blocks, at most
    /// `MAX_SPAN`; 0 when not even one block fits (the class is then Large).
    pub const SPAN: [u8; NUM_CLASSES] = {
        let mut s = [0u8; NUM_CLASSES];
        let mut c = 1;
        while c < NUM_CLASSES {
            let size = CLASS_SIZE[c] as usize;
            let want = (8 * size).div_ceil(Self::PAGE_SIZE);
            let pages = max(1, min(want, Self::MAX_SPAN));
            if pages * Self::PAGE_SIZE >= size {
                s[c] = pages as u8;
            }
            c += 1;
        }
        s
    };

    /// Classes whose spans may use the shortened first page: one-page spans
    /// whose blocks need no more alignment than that page's area has.
    pub const FIRST_PAGE_OK: u64 = {
        let mut m = 0u64;
        let mut c = 1;
        while c < NUM_CLASSES {
            if Self::PARTIAL_FIRST
                && Self::SPAN[c] == 1
                && class::natural_align(c) <= Self::HEADER_SIZE
                && Self::PAGE_SIZE - Self::HEADER_SIZE >= CLASS_SIZE[c] as usize
            {
                m |= 1 << c;
            }
            c += 1;
        }
        m
    };

    /// Largest size served by a class in this geometry; above it, Large.
    pub const MID_MAX: usize = {
        let mut c = 1;
        while c < NUM_CLASSES && Self::SPAN[c] != 0 {
            c += 1;
        }
        CLASS_SIZE[c - 1] as usize
    };

    /// Compile-time checks of the geometry, forced by `Allocator::new`.
    pub const CHECK: () = {
        assert!(G::PAGE_SHIFT >= 6, "pages must be at least 64 bytes");
        assert!(G::SEGMENT_SHIFT > G::PAGE_SHIFT);
        assert!(Self::PAGES <= 64, "at most 64 pages per segment");
        assert!(Self::HEADER_SIZE < Self::SEGMENT_SIZE, "the header must leave room for a page");
        assert!(Self::SPAN[1] != 0, "the smallest class must fit a page");
        // Block counts are kept in u32; spans are far smaller than that.
        assert!(Self::MAX_SPAN * Self::PAGE_SIZE / 8 <= u32::MAX as usize);
    };

    /// Header of the segment containing `p`.
    #[inline(always)]
    pub(crate) fn segment_of<T>(p: *mut T) -> *mut SegmentHeader {
        p.cast::<u8>().map_addr(|a| a & !Self::SEGMENT_MASK).cast()
    }

    /// Descriptor of the page containing `p` (no dereference happens here).
    #[inline(always)]
    pub(crate) fn desc_of<T>(p: *mut T) -> *mut PageDesc {
        let p = p.cast::<u8>();
        let idx = (p.addr() & Self::SEGMENT_MASK) >> G::PAGE_SHIFT;
        p.map_addr(|a| a & !Self::SEGMENT_MASK).wrapping_add(Self::DESC_OFFSET + idx * size_of::<PageDesc>()).cast()
    }

    /// Descriptor `idx` of the segment at `seg`.
    #[inline(always)]
    pub(crate) fn desc_at(seg: *mut SegmentHeader, idx: usize) -> *mut PageDesc {
        seg.cast::<u8>().wrapping_add(Self::DESC_OFFSET + idx * size_of::<PageDesc>()).cast()
    }

    /// Index of a descriptor in its segment.
    #[inline(always)]
    pub(crate) fn desc_index(d: *mut PageDesc) -> usize {
        ((d.addr() & Self::SEGMENT_MASK) - Self::DESC_OFFSET) / size_of::<PageDesc>()
    }

    /// Start and length of the area of a span of `pages` pages beginning at
    /// page `idx` of `seg`.
    pub(crate) fn span_area(seg: *mut SegmentHeader, idx: usize, pages: usize) -> (*mut u8, usize) {
        let start = max(idx * Self::PAGE_SIZE, Self::HEADER_SIZE);
        let end = (idx + pages) * Self::PAGE_SIZE;
        (seg.cast::<u8>().wrapping_add(start), end - start)
    }

    /// Write a fresh header and descriptors for a segment of `kind` at `seg`.
    ///
    /// # Safety
    /// `seg` is the writable, segment-aligned start of at least `HEADER_SIZE`
    /// bytes that nothing else uses.
    pub(crate) unsafe fn init_header(seg: *mut SegmentHeader, seg_kind: u32, region_size: usize, page_kind: u32) {
        // SAFETY: the caller gives us the memory; `SegmentHeader` fits in
        // `DESC_OFFSET ≤ HEADER_SIZE` bytes and `seg` is segment aligned.
        unsafe {
            seg.write(SegmentHeader {
                cookie: seg.addr() ^ COOKIE_KEY,
                kind: seg_kind,
                zeroed: Guarded::new(false),
                region_size: Guarded::new(region_size),
                block_offset: Guarded::new(0),
                usable: Guarded::new(0),
                free_mask: Guarded::new(0),
                next: Guarded::new(core::ptr::null_mut()),
                prev: Guarded::new(core::ptr::null_mut()),
                listed: Guarded::new(false),
                dirty: Guarded::new(0),
                clean: Guarded::new(0),
                dirty_since: Guarded::new(0),
                dq_next: Guarded::new(core::ptr::null_mut()),
                dq_prev: Guarded::new(core::ptr::null_mut()),
                in_dq: Guarded::new(false),
            });
            for i in 0..Self::PAGES {
                let k = if i < Self::FIRST_PAGE { kind::HEADER } else { page_kind };
                Self::desc_at(seg, i).write(PageDesc::new(k));
            }
        }
    }

    /// Whether `seg`'s cookie says it is a live header of `seg_kind`.
    ///
    /// # Safety
    /// `seg` points to at least a readable `SegmentHeader`.
    #[inline]
    pub(crate) unsafe fn is_live(seg: *mut SegmentHeader, seg_kind: u32) -> bool {
        // SAFETY: readable by the caller's promise.
        unsafe { (*seg).cookie == seg.addr() ^ COOKIE_KEY && (*seg).kind == seg_kind }
    }
}

#[cfg(test)]
mod tests;
