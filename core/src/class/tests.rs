use super::*;

#[test]
fn sizes_increase_and_have_the_documented_shape() {
    for c in 2..NUM_CLASSES {
        assert!(CLASS_SIZE[c] > CLASS_SIZE[c - 1], "class {c}");
    }
    assert_eq!(&CLASS_SIZE[1..9], &[8, 16, 24, 32, 40, 48, 56, 64]);
    assert_eq!(&CLASS_SIZE[9..13], &[80, 96, 112, 128]);
}

/// Every size from 0 to the largest class, at every alignment a class can
/// serve, round-trips: the class holds the size, is the smallest that does,
/// and its blocks are aligned.
#[test]
#[cfg_attr(miri, ignore = "safe arithmetic over every size: nothing for Miri to check, hours under it")]
fn every_size_round_trips() {
    let mut align = 1;
    while align <= MID_MAX {
        for size in 0..=MID_MAX {
            let Some(c) = class_of(size, align) else {
                assert!(round_up(size, align).unwrap() > MID_MAX);
                continue;
            };
            let rounded = round_up(size, align).unwrap();
            if size == 0 {
                assert_eq!(c, 0);
                continue;
            }
            let bs = size_of_class(c);
            assert!(bs >= size, "size {size} align {align} class {c}");
            assert!(size_of_class(c - 1) < rounded, "size {size} align {align}: class {c} not the smallest");
            assert!(natural_align(c) >= align, "size {size} align {align}: class {c} blocks not aligned");
            assert_eq!(bs % align, 0);
        }
        align *= 2;
    }
}

#[test]
#[cfg_attr(miri, ignore = "safe arithmetic over every size: nothing for Miri to check, hours under it")]
fn fragmentation_is_as_documented() {
    let mut worst_small = 0.0f64;
    let mut worst_above_64 = 0.0f64;
    for size in 1..=MID_MAX {
        let c = class_of(size, 1).unwrap();
        let waste = (size_of_class(c) - size) as f64 / size_of_class(c) as f64;
        if size > 64 {
            worst_above_64 = worst_above_64.max(waste);
        } else if size > 8 {
            worst_small = worst_small.max(waste);
        }
    }
    assert!((worst_small - 7.0 / 16.0).abs() < 1e-9, "{worst_small}");
    assert!(worst_above_64 < 0.20, "{worst_above_64}");
}

#[test]
fn large_requests_have_no_class() {
    assert_eq!(class_of(MID_MAX + 1, 1), None);
    assert_eq!(class_of(usize::MAX, 1), None);
    assert_eq!(class_of(MID_MAX, 2 * MID_MAX), None);
}

/// `block_index` is the quotient for multiples of the block size and larger
/// than any block count otherwise.
#[test]
fn block_index_is_exact() {
    for c in 1..NUM_CLASSES {
        let bs = size_of_class(c);
        let max_count = usize::MAX / bs;
        let step = if bs > 4096 { 7 } else { 1 };
        for off in (0..64 * bs).step_by(step) {
            let q = block_index(off, c);
            if off % bs == 0 {
                assert_eq!(q, off / bs, "class {c} off {off}");
            } else {
                assert!(q > max_count, "class {c} off {off}: {q}");
            }
        }
        // Far and negative offsets (a pointer below the area) are never blocks.
        for off in [usize::MAX, usize::MAX - 7, 1 << 40, (1 << 40) + 8] {
            assert!(off % bs == 0 || block_index(off, c) > max_count);
        }
    }
}
