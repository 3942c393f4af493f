//! [`MmapSource`]: the core's `PageSource` over Linux `mmap`, through rustix's
//! raw system calls (no libc).

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use hakmem_core::{PageSource, Purged, Reservation};
use rustix::mm::{self, Advice, MapFlags, MremapFlags, ProtFlags};

/// Granularity of the region registry and minimum region alignment: the
/// server geometry's segment size.
const GRAN_SHIFT: u32 = 21;
const GRAN: usize = 1 << GRAN_SHIFT;
/// Regions lie below `2^ADDR_BITS`: the user address space of x86-64 with
/// four-level paging, and of AArch64 with 48-bit addresses.
#[cfg(target_arch = "x86_64")]
const ADDR_BITS: u32 = 47;
#[cfg(not(target_arch = "x86_64"))]
const ADDR_BITS: u32 = 48;
const SLOTS: usize = 1 << (ADDR_BITS - GRAN_SHIFT);

/// One byte per 2 MiB of address space: non-zero iff a live region starts
/// there. Zero-initialised `.bss` (64 MiB of address space on x86-64); only
/// the pages holding live entries are ever touched, so it costs a few KiB.
/// A byte, not a bit, so the check on every free is one shift and one load.
static REGISTRY: [AtomicU8; SLOTS] = [const { AtomicU8::new(0) }; SLOTS];

/// Where the next aligned reservation is attempted (see `reserve`).
static HINT: AtomicUsize = AtomicUsize::new(HINT_START);
const HINT_START: usize = 2 << 40; // 2 TiB
const HINT_END: usize = 64 << 40;

#[inline(always)]
fn registry_slot(addr: usize) -> Option<&'static AtomicU8> {
    // The core asks about segment bases, so the alignment test folds away
    // there; the bound check covers addresses above the map.
    if addr & (GRAN - 1) != 0 {
        return None;
    }
    REGISTRY.get(addr >> GRAN_SHIFT)
}

/// What [`MmapSource`] does to purge free pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeMode {
    /// `MADV_DONTNEED`: memory is returned at once and reads back as zero.
    DontNeed,
    /// `MADV_FREE`: the kernel reclaims lazily, under memory pressure.
    Free,
    /// Never purge.
    Off,
}

/// Anonymous private mappings, aligned by reserving at aligned address hints
/// (and trimming an oversized mapping when a hint is taken).
///
/// All `MmapSource`s of a process share one registry of region bases, so
/// [`owns`](PageSource::owns) answers for regions of any of them.
pub struct MmapSource {
    purge: AtomicUsize,
    huge_min: AtomicUsize,
}

impl MmapSource {
    /// Regions of at least this size get `MADV_HUGEPAGE` by default: Large
    /// blocks of 4 MiB and more, which programs fill (one fault per 2 MiB
    /// instead of 512), and never the 2 MiB segments of small blocks, whose
    /// pages are touched sparsely.
    pub const HUGE_MIN_DEFAULT: usize = 4 << 20;

    /// A source that purges with `MADV_DONTNEED` and asks for transparent
    /// huge pages on regions of [`HUGE_MIN_DEFAULT`](Self::HUGE_MIN_DEFAULT) bytes and more.
    pub const fn new() -> MmapSource {
        MmapSource { purge: AtomicUsize::new(0), huge_min: AtomicUsize::new(Self::HUGE_MIN_DEFAULT) }
    }

    /// Ask for transparent huge pages (`MADV_HUGEPAGE`) on regions of at least
    /// `min` bytes; 0 never asks. Whether the kernel obliges depends on
    /// `/sys/kernel/mm/transparent_hugepage/enabled` (`madvise` or `always`).
    pub fn set_huge_min(&self, min: usize) {
        self.huge_min.store(if min == 0 { usize::MAX } else { min }, Ordering::Relaxed);
    }

    /// Choose how free pages are purged.
    pub fn set_purge_mode(&self, mode: PurgeMode) {
        let v = match mode {
            PurgeMode::DontNeed => 0,
            PurgeMode::Free => 1,
            PurgeMode::Off => 2,
        };
        self.purge.store(v, Ordering::Relaxed);
    }

    /// `MADV_HUGEPAGE` on a region of ours of at least the configured size
    /// (a region grown past it too: the advice belongs to the mapping).
    fn advise_huge(&self, base: *mut u8, size: usize) {
        if size >= self.huge_min.load(Ordering::Relaxed) {
            // SAFETY: a mapping of ours; the advice changes how it is backed,
            // not what it holds. Refusal (no THP) is harmless.
            let _ = unsafe { mm::madvise(base.cast(), size, Advice::LinuxHugepage) };
        }
    }

    fn map(hint: usize, size: usize, fixed: bool) -> Option<*mut u8> {
        let flags =
            MapFlags::PRIVATE | MapFlags::NORESERVE | if fixed { MapFlags::FIXED_NOREPLACE } else { MapFlags::empty() };
        // SAFETY: an anonymous mapping; without MAP_FIXED it never replaces
        // an existing mapping (MAP_FIXED_NOREPLACE fails instead).
        let p = unsafe {
            mm::mmap_anonymous(ptr::without_provenance_mut(hint), size, ProtFlags::READ | ProtFlags::WRITE, flags)
        };
        p.ok().map(|p| p.cast::<u8>())
    }

    fn unmap(p: *mut u8, size: usize) {
        if size != 0 {
            // SAFETY: callers pass a range of a mapping of ours that nothing uses.
            let r = unsafe { mm::munmap(p.cast::<c_void>(), size) };
            debug_assert!(r.is_ok());
        }
    }

    /// An anonymous mapping of `size` bytes aligned to `align`, unregistered.
    fn map_aligned(size: usize, align: usize) -> Option<*mut u8> {
        // First try an aligned hint: one system call when the address is free.
        let step = size.checked_next_multiple_of(align)?;
        let hint = HINT.fetch_add(step, Ordering::Relaxed);
        let hint = hint.next_multiple_of(align);
        if hint.checked_add(step).is_some_and(|end| end <= HINT_END) {
            if let Some(p) = Self::map(hint, size, true) {
                if p.addr() % align == 0 {
                    return Some(p);
                }
                Self::unmap(p, size);
            }
        } else {
            // Wrap around; a taken hint only costs the fallback below.
            HINT.store(HINT_START, Ordering::Relaxed);
        }
        // Fallback: over-reserve and trim both ends.
        let over = size.checked_add(align)?;
        let p = Self::map(0, over, false)?;
        let start = p.addr().next_multiple_of(align);
        let head = start - p.addr();
        Self::unmap(p, head);
        let base = p.wrapping_add(head);
        Self::unmap(base.wrapping_add(size), over - head - size);
        Some(base)
    }
}

impl Default for MmapSource {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: regions are fresh anonymous mappings (zeroed, readable, writable,
// disjoint); `owns` reads the registry, which `reserve`/`release`/`resize`
// keep exact for region bases; nothing here allocates.
unsafe impl PageSource for MmapSource {
    fn reserve(&self, size: usize, align: usize) -> Option<Reservation> {
        let align = align.max(GRAN);
        let base = Self::map_aligned(size, align)?;
        let Some(slot) = registry_slot(base.addr()) else {
            Self::unmap(base, size);
            return None;
        };
        slot.store(1, Ordering::Release);
        self.advise_huge(base, size);
        Some(Reservation { base: NonNull::new(base)?, zeroed: true })
    }

    unsafe fn release(&self, base: NonNull<u8>, size: usize) {
        if let Some(slot) = registry_slot(base.as_ptr().addr()) {
            slot.store(0, Ordering::Release);
        }
        Self::unmap(base.as_ptr(), size);
    }

    unsafe fn purge(&self, ptr: NonNull<u8>, len: usize) -> Purged {
        let (advice, result) = match self.purge.load(Ordering::Relaxed) {
            0 => (Advice::LinuxDontNeed, Purged::Zeroed),
            1 => (Advice::LinuxFree, Purged::Lazily),
            _ => return Purged::No,
        };
        // SAFETY: the caller gives a page-aligned range of a live mapping
        // whose contents it no longer needs.
        match unsafe { mm::madvise(ptr.as_ptr().cast(), len, advice) } {
            Ok(()) => result,
            Err(_) => Purged::No,
        }
    }

    unsafe fn resize(
        &self,
        base: NonNull<u8>,
        old_size: usize,
        new_size: usize,
        align: usize,
        may_move: bool,
    ) -> Option<NonNull<u8>> {
        let old = base.as_ptr();
        // In place first: shrinking always works, growing when the addresses
        // after the mapping are free.
        // SAFETY: `old` is a live mapping of `old_size` bytes of ours.
        if unsafe { mm::mremap(old.cast(), old_size, new_size, MremapFlags::empty()) }.is_ok() {
            self.advise_huge(base.as_ptr(), new_size);
            return Some(base);
        }
        if !may_move {
            return None;
        }
        // Move the pages (no copy) onto a fresh aligned reservation.
        let target = Self::map_aligned(new_size, align.max(GRAN))?;
        let new_slot = match registry_slot(target.addr()) {
            Some(s) => s,
            None => {
                Self::unmap(target, new_size);
                return None;
            }
        };
        // The old base stops being ours before its range is unmapped by the
        // move: once it is, another thread may map a region there and mark it
        // ours, and a later clear would disown that region. Nothing else uses
        // the region meanwhile (the caller is resizing it).
        let old_slot = registry_slot(old.addr());
        if let Some(slot) = old_slot {
            slot.store(0, Ordering::Release);
        }
        new_slot.store(1, Ordering::Release);
        // SAFETY: both ranges are mappings of ours; MREMAP_FIXED atomically
        // replaces the reservation at `target` with the moved pages.
        let moved = unsafe { mm::mremap_fixed(old.cast(), old_size, new_size, MremapFlags::MAYMOVE, target.cast()) };
        if moved.is_err() {
            new_slot.store(0, Ordering::Release);
            Self::unmap(target, new_size);
            if let Some(slot) = old_slot {
                slot.store(1, Ordering::Release);
            }
            return None;
        }
        self.advise_huge(target, new_size);
        NonNull::new(target)
    }

    #[inline(always)]
    fn owns(&self, addr: usize) -> bool {
        match registry_slot(addr) {
            // Relaxed: a pointer into a region reaches a freeing thread only
            // through synchronisation that follows the Release that set it.
            Some(slot) => slot.load(Ordering::Relaxed) != 0,
            None => false,
        }
    }

    fn page_size(&self) -> usize {
        crate::env::page_size()
    }

    unsafe fn protect(&self, ptr: NonNull<u8>, len: usize) -> bool {
        // SAFETY: the caller gives a page-aligned range of a live mapping of
        // ours that nothing touches until the mapping is unmapped.
        unsafe { mm::mprotect(ptr.as_ptr().cast(), len, mm::MprotectFlags::empty()) }.is_ok()
    }

    fn entropy(&self) -> u64 {
        // The clock and this frame's address (randomised by ASLR); the
        // kernel's random bytes would need another rustix feature for a
        // value read once.
        let local = 0u8;
        crate::env::now_ms().rotate_left(32)
            ^ (&raw const local).addr() as u64
            ^ (ptr::addr_of!(REGISTRY).addr() as u64) << 7
    }

    fn fatal(&self, msg: core::fmt::Arguments<'_>) -> ! {
        crate::fatal(msg)
    }

    fn now_ms(&self) -> u64 {
        crate::env::now_ms()
    }
}
