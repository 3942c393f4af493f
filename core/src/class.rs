//! Size classes: which block size serves a request, by table lookup.
//!
//! Class 0 is reserved: it is the class of a zero-size request, and its bins
//! are always empty, so a zero size falls to the slow path at no cost to the
//! fast one. Classes `1..=NUM_TINY` are the **Tiny** tier (8 B … 1 KiB),
//! classes `FIRST_MID..NUM_CLASSES` the **Mid** tier (1¼ KiB … 128 KiB).
//! Anything larger is **Large** and has no class.
//!
//! The sizes: multiples of 8 up to 64 B, then four classes per doubling
//! (`2^k + j·2^(k-2)`, `j = 1..=4`). Worst-case internal fragmentation, as the
//! share of a block left unused: 7/16 = 44% for a 9 B request in the 16 B class
//! (a share that shrinks to 7/64 = 11% at 57 B), and below 20% for every
//! request above 64 B (`(2^(k-2) - 1) / (2^k + 2^(k-2))`).
//!
//! **Alignment.** A request `(size, align)` maps to the class of
//! `round_up(size, align)`. Every class size is a multiple of the largest
//! power of two not above a quarter of it, and the rounded size is a multiple of
//! `align`; together these make the chosen block size a multiple of `align`
//! (checked exhaustively by the tests), so a block at an offset that is a
//! multiple of its size from a sufficiently aligned span start is aligned.

/// Number of Tiny classes.
pub const NUM_TINY: usize = 24;
/// Number of Mid classes.
pub const NUM_MID: usize = 28;
/// Number of classes, counting the reserved class 0.
pub const NUM_CLASSES: usize = 1 + NUM_TINY + NUM_MID;
/// The first Mid class.
pub const FIRST_MID: usize = 1 + NUM_TINY;
/// Largest Tiny block.
pub const TINY_MAX: usize = 1024;
/// Largest Mid block (a geometry may lower the Mid limit, see `Geo::MID_MAX`).
pub const MID_MAX: usize = 128 * 1024;

const fn build_sizes() -> [u32; NUM_CLASSES] {
    let mut s = [0u32; NUM_CLASSES];
    let mut i = 1;
    while i <= 8 {
        s[i] = 8 * i as u32;
        i += 1;
    }
    let mut base = 64u32;
    while i < NUM_CLASSES {
        let step = base / 4;
        let mut j = 1;
        while j <= 4 && i < NUM_CLASSES {
            s[i] = base + j * step;
            i += 1;
            j += 1;
        }
        base *= 2;
    }
    s
}

/// Block size of each class (`CLASS_SIZE[0] == 0`).
pub static CLASS_SIZE: [u32; NUM_CLASSES] = build_sizes();
const SIZES: [u32; NUM_CLASSES] = build_sizes();

/// Smallest class whose size is at least `size` (size ≤ MID_MAX).
const fn smallest_class_at_least(size: usize) -> u8 {
    let mut c = 1;
    while c < NUM_CLASSES {
        if SIZES[c] as usize >= size {
            return c as u8;
        }
        c += 1;
    }
    panic!("size above the largest class")
}

const TINY_SLOTS: usize = TINY_MAX / 8 + 1;
const fn build_tiny_table() -> [u8; TINY_SLOTS] {
    let mut t = [0u8; TINY_SLOTS];
    let mut i = 1;
    while i < TINY_SLOTS {
        t[i] = smallest_class_at_least(i * 8);
        i += 1;
    }
    t
}

const MID_SLOTS: usize = MID_MAX / 256;
const fn build_mid_table() -> [u8; MID_SLOTS] {
    let mut t = [0u8; MID_SLOTS];
    let mut j = TINY_MAX / 256;
    while j < MID_SLOTS {
        t[j] = smallest_class_at_least((j + 1) * 256);
        j += 1;
    }
    t
}

/// `TINY_TABLE[(s + 7) >> 3]` is the class of a size `s ≤ TINY_MAX`.
static TINY_TABLE: [u8; TINY_SLOTS] = build_tiny_table();
/// `MID_TABLE[(s - 1) >> 8]` is the class of a size `TINY_MAX < s ≤ MID_MAX`.
static MID_TABLE: [u8; MID_SLOTS] = build_mid_table();

static_assertions::const_assert_eq!(SIZES[NUM_TINY] as usize, TINY_MAX);
static_assertions::const_assert_eq!(SIZES[NUM_CLASSES - 1] as usize, MID_MAX);
static_assertions::const_assert_eq!(SIZES[FIRST_MID], 1280);
// Every Mid class is a multiple of the Mid table's 256 B granule.
static_assertions::const_assert!({
    let mut ok = true;
    let mut c = FIRST_MID;
    while c < NUM_CLASSES {
        ok &= SIZES[c].is_multiple_of(256);
        c += 1;
    }
    ok
});
// The remote-free mask has one bit per class.
static_assertions::const_assert!(NUM_CLASSES <= 64);
// Class ids fit the byte the tables and descriptors store.
static_assertions::const_assert!(NUM_CLASSES <= u8::MAX as usize);

/// Class of a rounded size `s` with `s ≤ TINY_MAX` (0 for `s == 0`).
#[inline(always)]
pub fn tiny_class(s: usize) -> usize {
    debug_assert!(s <= TINY_MAX);
    TINY_TABLE[(s + 7) >> 3] as usize
}

/// Class of a rounded size `s` with `TINY_MAX < s ≤ MID_MAX`.
#[inline(always)]
pub fn mid_class(s: usize) -> usize {
    debug_assert!(s > TINY_MAX && s <= MID_MAX);
    MID_TABLE[(s - 1) >> 8] as usize
}

/// Size rounded up to a multiple of `align` (a power of two), or `None` on
/// overflow.
#[inline(always)]
pub const fn round_up(size: usize, align: usize) -> Option<usize> {
    match size.checked_add(align - 1) {
        Some(s) => Some(s & !(align - 1)),
        None => None,
    }
}

/// Class serving `size` bytes at `align` (a power of two), or `None` when the
/// request is Large. Zero sizes map to class 0.
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    let s = round_up(size, align)?;
    if s <= TINY_MAX {
        Some(tiny_class(s))
    } else if s <= MID_MAX {
        Some(mid_class(s))
    } else {
        None
    }
}

/// Block size of class `c`.
#[inline(always)]
pub fn size_of_class(c: usize) -> usize {
    CLASS_SIZE[c] as usize
}

/// The largest power of two dividing the block size of class `c`: blocks of
/// the class are aligned to this when their span start is.
pub const fn natural_align(c: usize) -> usize {
    let s = SIZES[c] as usize;
    s & s.wrapping_neg()
}

/// The inverse of an odd number modulo `2^usize::BITS` (Newton's iteration:
/// each step doubles the bits that are right, from 3 for any odd number).
const fn odd_inverse(odd: usize) -> usize {
    let mut x = odd;
    let mut i = 0;
    while i < 6 {
        x = x.wrapping_mul(2usize.wrapping_sub(odd.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Per class: the inverse of the odd part of the block size, and the
/// power of two of the rest (see [`block_index`]), side by side so one
/// address serves both loads.
#[derive(Clone, Copy)]
struct Div {
    inv: usize,
    shift: u32,
}

const fn build_div() -> [Div; NUM_CLASSES] {
    let mut d = [Div { inv: 0, shift: 0 }; NUM_CLASSES];
    let mut c = 1;
    while c < NUM_CLASSES {
        let s = SIZES[c] as usize;
        let k = s.trailing_zeros();
        d[c] = Div { inv: odd_inverse(s >> k), shift: k };
        c += 1;
    }
    d
}
static DIV: [Div; NUM_CLASSES] = build_div();

/// `off / size_of_class(c)` when `off` is a multiple of the block size, and
/// otherwise a number above `usize::MAX / size_of_class(c)`, larger than any
/// block count. So `block_index(p - area, c) < count` says in one comparison
/// that `p` is the start of one of the first `count` blocks of a span: no
/// division, a multiply and a rotate (the odd part of the size has an inverse
/// modulo `2^BITS`; a multiple of `2^k · odd` times that inverse is the
/// quotient shifted left by `k`, and anything else leaves low bits set, which
/// the rotate moves to the top). `c` is a class other than 0.
#[inline(always)]
pub(crate) fn block_index(off: usize, c: usize) -> usize {
    debug_assert!(c != 0 && c < NUM_CLASSES);
    // SAFETY: `c < NUM_CLASSES`: callers pass the class of an in-use span.
    let d = unsafe { DIV.get_unchecked(c) };
    off.wrapping_mul(d.inv).rotate_right(d.shift)
}

/// Whether `c` is a Tiny class.
#[inline(always)]
pub const fn is_tiny(c: usize) -> bool {
    c <= NUM_TINY
}

#[cfg(test)]
mod tests;
