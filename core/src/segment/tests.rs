use super::*;
use crate::class::{FIRST_MID, MID_MAX, NUM_TINY};

type L = Geo<Server>;
type S = Geo<Small>;

#[test]
fn server_layout() {
    assert_eq!(L::SEGMENT_SIZE, 2 << 20);
    assert_eq!(L::PAGE_SIZE, 64 << 10);
    assert_eq!(L::PAGES, 32);
    const { assert!(L::PARTIAL_FIRST) };
    assert_eq!(L::FIRST_PAGE, 0);
    // Hardened builds add a 4 KiB guard page after the metadata.
    assert_eq!(L::HEADER_SIZE, if cfg!(feature = "secure") { 8192 } else { 4096 });
    assert_eq!(L::MAX_SPAN, 16);
    assert_eq!(L::MID_MAX, MID_MAX);
    // Every Tiny class is one page and may use page 0.
    for c in 1..=NUM_TINY {
        assert_eq!(L::SPAN[c], 1);
        assert!(L::FIRST_PAGE_OK & (1 << c) != 0);
    }
    assert_eq!(L::SPAN[crate::class::NUM_CLASSES - 1], 16);
    let () = L::CHECK;
}

#[test]
fn small_layout_fits_a_64k_heap() {
    let () = S::CHECK;
    assert_eq!(S::SEGMENT_SIZE, 32 << 10);
    const { assert!(S::HEADER_SIZE >= S::PAGE_SIZE) };
    const { assert!(S::MID_MAX >= 8 << 10) };
    assert!(S::SPAN[FIRST_MID] > 0);
}

/// Every block of every page of a segment finds its own descriptor, and the
/// descriptor finds the segment.
#[test]
fn descriptor_lookup_for_every_block() {
    let seg = core::ptr::without_provenance_mut::<SegmentHeader>(0x7f00_0000_0000);
    // Under Miri, a sample of the blocks (a prime stride, so every offset
    // pattern within a page still comes up); natively, all of them.
    let stride = if cfg!(miri) { 37 } else { 1 };
    for idx in 0..L::PAGES {
        let (area, len) = L::span_area(seg, idx, 1);
        for c in [1usize, 3, NUM_TINY, FIRST_MID] {
            let bs = crate::class::size_of_class(c);
            let mut off = 0;
            while off + bs <= len {
                let p = area.wrapping_add(off);
                assert_eq!(L::desc_of(p), L::desc_at(seg, idx), "page {idx} class {c} offset {off}");
                assert_eq!(L::segment_of(p), seg);
                assert_eq!(L::desc_index(L::desc_of(p)), idx);
                off += bs * stride;
            }
        }
    }
}
