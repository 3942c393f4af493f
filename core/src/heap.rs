//! Heaps: the per-thread (or per-CPU) side of the allocator.
//!
//! Two objects make a heap:
//!
//! - [`LocalHeap`] — the bins the fast paths use: for each Tiny class a free
//!   list plus its current page (and, for magazine classes, a magazine); for
//!   each Mid class a ring and a LIFO. It is plain data, held `&mut` by one
//!   thread at a time, and the adapter decides where it lives (a thread-local,
//!   a per-CPU slot, a lock).
//! - [`Heap`] — the heap's identity and everything other threads may touch:
//!   the per-class transfer lists that remote frees push onto, and the owner's
//!   page lists. It lives in metadata memory and is never freed, so a remote
//!   free can always reach it, even after its thread has exited; a new thread
//!   adopts it from the abandoned list.
//!
//! Every span's descriptor names its owning `Heap`; a free whose heap is not
//! that owner is *remote*.

use core::ptr;

use crate::block::{self, Block};
use crate::class::{FIRST_MID, NUM_CLASSES, NUM_MID, NUM_TINY};
use crate::config::{Config, RING_MAX};
use crate::segment::PageDesc;
use crate::stats::Counters;
use crate::sync::{AtomicPtr, AtomicUsize, Guarded, Ordering, loom_bug};

/// Success ordering of the remote push: `Release` (the loom bug
/// `loom-bug-relaxed-push` weakens it, and the models must notice).
const PUSH_ORDER: Ordering = if loom_bug!("loom-bug-relaxed-push") { Ordering::Relaxed } else { Ordering::Release };

/// Bits in a word of the remote mask.
const WORD: usize = usize::BITS as usize;
/// Words of the remote mask: one bit per class (two words on 32-bit targets,
/// which have no 64-bit atomics).
const MASK_WORDS: usize = NUM_CLASSES.div_ceil(WORD);

/// A heap's identity and shared state. See the module docs.
pub struct Heap {
    /// Remote frees of class `c` waiting for the owner: a Treiber stack that
    /// any thread pushes onto with one CAS (`Release`, publishing the block's
    /// link and whatever the freeing thread wrote into the block) and only the
    /// owner empties, all at once, with a `swap` (`Acquire`). Because nodes
    /// are only ever taken all together, a push cannot suffer ABA: its link is
    /// always the head it replaced.
    pub(crate) remote: [AtomicPtr<Block>; NUM_CLASSES],
    /// Bit `c` is set by the push that makes `remote[c]` non-empty. The owner
    /// clears the word with a swap and then empties the named lists.
    /// Invariant: `remote[c]` is non-empty only if bit `c` is set or the owner
    /// is between its swap of the mask and its swap of `remote[c]`.
    pub(crate) remote_mask: [AtomicUsize; MASK_WORDS],
    /// State only the heap's holder touches: its thread, or whoever popped it
    /// from the heap pool's abandoned list.
    pub(crate) owned: Guarded<HeapOwned>,
    /// Link on the heap pool's lists (heap pool lock).
    pub(crate) pool_next: Guarded<*mut Heap>,
    /// Whether the heap sits on the abandoned list (heap pool lock).
    pub(crate) abandoned: Guarded<bool>,
    /// Link on the heap pool's list of every heap ever made (set once, under
    /// the heap pool lock), so statistics can visit them all.
    pub(crate) all_next: Guarded<*mut Heap>,
    /// Operation counters, written by the holder.
    pub(crate) counters: Counters,
}

/// The owner-only part of a [`Heap`].
pub(crate) struct HeapOwned {
    /// Spans of class `c` with free blocks that are not a current page,
    /// doubly linked through their descriptors.
    pub partial: [*mut PageDesc; NUM_CLASSES],
    /// The span a Mid class refills its ring from.
    pub mid_current: [*mut PageDesc; NUM_CLASSES],
    /// Remote frees taken from `remote[c]` and not yet processed (the rest of
    /// a drain that ran out of budget).
    pub pending: [*mut Block; NUM_CLASSES],
    /// Bit `c` set iff `pending[c]` is non-empty.
    pub pending_mask: u64,
    /// Empty spans kept for reuse, linked through `next`.
    pub cache: *mut PageDesc,
    pub cache_len: u32,
    /// Spans the heap owns (current, partial or full; not cached).
    pub spans: usize,
    /// Count changes per site (checking builds with delta debugging).
    pub deltas: [u64; crate::segment::site::COUNT],
}

impl Heap {
    pub(crate) fn new() -> Heap {
        Heap {
            remote: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            remote_mask: core::array::from_fn(|_| AtomicUsize::new(0)),
            owned: Guarded::new(HeapOwned {
                partial: [ptr::null_mut(); NUM_CLASSES],
                mid_current: [ptr::null_mut(); NUM_CLASSES],
                pending: [ptr::null_mut(); NUM_CLASSES],
                pending_mask: 0,
                cache: ptr::null_mut(),
                cache_len: 0,
                spans: 0,
                deltas: [0; crate::segment::site::COUNT],
            }),
            pool_next: Guarded::new(ptr::null_mut()),
            abandoned: Guarded::new(false),
            all_next: Guarded::new(ptr::null_mut()),
            counters: Counters::new(),
        }
    }

    /// Push a block of class `class` freed by a thread that does not own it.
    ///
    /// # Safety
    /// `b` is a live block of class `class` in a span this heap owns, and the
    /// caller gives it up: nothing touches it after this call.
    #[inline]
    pub(crate) unsafe fn push_remote(&self, class: usize, b: *mut Block) {
        let list = &self.remote[class];
        // Relaxed: the value only seeds the CAS, which re-checks it.
        let mut head = list.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller gave us `b`; no one else reads it until the
            // CAS below publishes it.
            unsafe { block::set_next(b, head) };
            // Release: the owner's Acquire swap must see the link just written
            // and every write the program made to the block before freeing it.
            let pushed = if loom_bug!("loom-bug-racy-push") {
                // Injected bug: a plain store where the CAS is needed, so a
                // push racing with this one is lost.
                list.store(b, PUSH_ORDER);
                Ok(head)
            } else {
                list.compare_exchange_weak(head, b, PUSH_ORDER, Ordering::Relaxed)
            };
            match pushed {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        if head.is_null() {
            // We made the list non-empty: flag it. Release pairs with the
            // owner's Acquire swap of the mask; the data itself is ordered by
            // the list's own Release/Acquire pair, so this only has to become
            // visible, which any ordering guarantees eventually.
            self.remote_mask[class / WORD].fetch_or(1 << (class % WORD), Ordering::Release);
        }
    }

    /// Take every remote free of class `class` (owner only).
    #[inline]
    pub(crate) fn take_remote(&self, class: usize) -> *mut Block {
        // Acquire: pairs with the Release CAS of every push taken here.
        self.remote[class].swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// The classes flagged as having remote frees, clearing the flags.
    #[inline]
    pub(crate) fn take_remote_mask(&self) -> u64 {
        let mut m = 0u64;
        for (i, w) in self.remote_mask.iter().enumerate() {
            // Cheap Relaxed peek first: the common answer is "none", and a
            // read-modify-write would take the line exclusive for nothing.
            if w.load(Ordering::Relaxed) != 0 {
                // Acquire: pairs with the Release of the push that set the bit.
                m |= (w.swap(0, Ordering::Acquire) as u64) << (i * WORD);
            }
        }
        m
    }

    /// Raise the flags of `mask` again (a drain that ran out of budget).
    #[inline]
    pub(crate) fn reflag_remote(&self, mask: u64) {
        for (i, w) in self.remote_mask.iter().enumerate() {
            let bits = (mask >> (i * WORD)) as usize;
            if bits != 0 {
                // Relaxed: the lists' own Release/Acquire order their
                // contents; the flag only has to become visible.
                w.fetch_or(bits, Ordering::Relaxed);
            }
        }
    }

    /// Whether any remote free is flagged (a hint; exact only to the owner).
    #[inline]
    pub(crate) fn has_remote(&self) -> bool {
        self.remote_mask.iter().any(|w| w.load(Ordering::Relaxed) != 0)
    }
}

/// A Tiny bin: the current page's blocks handed to this thread, plus (for
/// magazine classes) blocks of other pages freed by this thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TinyBin {
    /// Blocks ready to hand out. All of them count as in use by their spans.
    pub free: *mut Block,
    /// The current page: local frees of its blocks go straight to `free`.
    pub page: *mut PageDesc,
    /// Start and length of the current page's area (0 bytes when there is
    /// none, or the class has no hot front), so a free that knows its size
    /// recognises one of the page's blocks without reading any descriptor.
    pub page_base: usize,
    pub page_len: usize,
    /// Magazine: local frees of other pages' blocks, when `mag_cap > 0`.
    pub mag: *mut Block,
    pub mag_len: u32,
    /// 0 for TinyHeap classes (frees to other pages go to their page).
    pub mag_cap: u32,
}

/// A Mid bin: a ring of blocks and a LIFO behind it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct MidBin {
    pub len: u32,
    pub cap: u32,
    pub lifo_len: u32,
    pub lifo_cap: u32,
    pub lifo: *mut Block,
    pub ring: [*mut Block; RING_MAX],
}

/// The fast-path state of one thread (or CPU). See the module docs.
///
/// A `LocalHeap` starts *detached*: every bin is empty and its identity
/// matches no page, so its first allocation takes the slow path, which
/// attaches it to a [`Heap`]. It is plain data: moving it, or using it from
/// another thread, is fine as long as one thread at a time holds it.
#[repr(C)]
pub struct LocalHeap {
    /// The attached heap, or a dangling sentinel that no descriptor names.
    pub(crate) id: *mut Heap,
    /// Indexed by class; `tiny[0]` (class 0, zero sizes) is always empty.
    pub(crate) tiny: [TinyBin; NUM_TINY + 1],
    /// Indexed by `class - FIRST_MID`.
    pub(crate) mid: [MidBin; NUM_MID],
    /// Tiny fast-path operations left until the next counter sample.
    pub(crate) tiny_tick: u32,
    /// Mid fast-path operations left until the next counter sample.
    pub(crate) mid_tick: u32,
    /// `2^tiny_sample_shift`, reloaded into `tiny_tick` at each sample.
    pub(crate) tiny_period: u32,
    /// `2^mid_sample_shift`.
    pub(crate) mid_period: u32,
}

// SAFETY: a `LocalHeap` holds raw pointers into allocator memory that is
// shared by design; nothing in it is tied to the thread that made it. Moving
// it to another thread is sound because it is used by one holder at a time.
unsafe impl Send for LocalHeap {}

const EMPTY_TINY: TinyBin = TinyBin {
    free: ptr::null_mut(),
    page: ptr::null_mut(),
    page_base: 0,
    page_len: 0,
    mag: ptr::null_mut(),
    mag_len: 0,
    mag_cap: 0,
};
const EMPTY_MID: MidBin =
    MidBin { len: 0, cap: 0, lifo_len: 0, lifo_cap: 0, lifo: ptr::null_mut(), ring: [ptr::null_mut(); RING_MAX] };

impl LocalHeap {
    /// A detached heap.
    pub const fn new() -> LocalHeap {
        LocalHeap {
            id: Self::DETACHED,
            tiny: [EMPTY_TINY; NUM_TINY + 1],
            mid: [EMPTY_MID; NUM_MID],
            tiny_tick: 0,
            mid_tick: 0,
            tiny_period: 0,
            mid_period: 0,
        }
    }

    /// The identity of a detached heap: non-null (so it never equals the null
    /// owner of free and Large pages) and never the address of a real `Heap`.
    const DETACHED: *mut Heap = ptr::dangling_mut::<Heap>();

    /// Whether the heap is attached to a [`Heap`].
    #[inline]
    pub fn is_attached(&self) -> bool {
        self.id != Self::DETACHED
    }

    /// Set the bins' capacities from `config` (on attach).
    pub(crate) fn configure(&mut self, config: &Config) {
        for c in 1..=NUM_TINY {
            self.tiny[c].mag_cap = match (config.is_tiny_heap_class(c), config.meta_safe) {
                (true, _) => 0,
                (false, true) => config.tiny_mag_cap as u32,
                // No threshold flush: the magazine never fills.
                (false, false) => u32::MAX,
            };
        }
        for (i, bin) in self.mid.iter_mut().enumerate() {
            let size = crate::class::size_of_class(FIRST_MID + i);
            let total = (config.mid_bin_bytes as usize / size).max(1);
            let ring = (config.mid_ring as usize).min(total);
            bin.cap = ring as u32;
            bin.lifo_cap =
                if config.meta_safe { (config.mid_lifo_max as usize).min(total - ring) as u32 } else { u32::MAX };
        }
        self.tiny_period = 1 << config.tiny_sample_shift;
        self.mid_period = 1 << config.mid_sample_shift;
        self.tiny_tick = self.tiny_period;
        self.mid_tick = self.mid_period;
    }
}

impl Default for LocalHeap {
    fn default() -> Self {
        Self::new()
    }
}
