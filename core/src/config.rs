//! Run-time configuration: one plain-data [`Config`], validated once.
//!
//! Every knob is read when a heap is attached (into the heap's own bins) or on
//! a slow path; nothing on a fast path tests a configuration flag.

use crate::class::NUM_TINY;

/// Capacity of a Mid bin's ring (compile-time bound of `Config::mid_ring`).
pub const RING_MAX: usize = 16;

/// The allocator's tunables. Build one with [`Config::DEFAULT`] and struct
/// update syntax, then [`Config::validate`] it (the allocator does so once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// TinyHeap front on (`true`) or every Tiny class on the magazine path.
    pub tiny_heap: bool,
    /// Which Tiny classes use TinyHeap (bit `c - 1` for class `c`); the others
    /// use the magazine. Ignored when `tiny_heap` is off.
    pub tiny_heap_classes: u32,
    /// Blocks a Tiny magazine holds before it flushes half to their pages.
    pub tiny_mag_cap: u16,
    /// Blocks a Mid bin keeps in its ring (at most [`RING_MAX`]).
    pub mid_ring: u8,
    /// Blocks a Mid bin keeps on its LIFO behind the ring.
    pub mid_lifo_max: u16,
    /// Upper bound, in bytes, on what one Mid bin caches (ring + LIFO); caps
    /// the counts above for the large classes.
    pub mid_bin_bytes: u32,
    /// When a Mid LIFO overflows, `len / ring_return_div` blocks go back to
    /// their pages (at least one).
    pub ring_return_div: u8,
    /// Remote frees an allocation slow path processes at most per call; the
    /// rest wait on the heap's pending list for the next one.
    pub drain_budget: u16,
    /// Empty spans a heap keeps for reuse before returning them to the pool.
    pub heap_page_cache: u8,
    /// Empty segments the pool keeps instead of releasing them.
    pub segment_reserve: u8,
    /// Bytes of freed Large regions kept for reuse.
    pub large_cache_bytes: usize,
    /// Free pages are purged once free this long (milliseconds; 0: at once).
    pub purge_delay_ms: u32,
}

impl Config {
    /// The defaults, chosen by measurement (see `docs/BENCHMARKS.md`).
    pub const DEFAULT: Config = Config {
        tiny_heap: true,
        tiny_heap_classes: (1 << NUM_TINY) - 1,
        tiny_mag_cap: 256,
        mid_ring: 16,
        mid_lifo_max: 256,
        mid_bin_bytes: 512 * 1024,
        ring_return_div: 2,
        drain_budget: 1024,
        heap_page_cache: 4,
        segment_reserve: 1,
        large_cache_bytes: 64 << 20,
        purge_delay_ms: 10,
    };

    /// Check every field against its range.
    pub const fn validate(self) -> Result<Config, ConfigError> {
        if self.tiny_heap_classes >> NUM_TINY != 0 {
            return Err(ConfigError("tiny_heap_classes names a class above the Tiny tier"));
        }
        if self.mid_ring as usize > RING_MAX {
            return Err(ConfigError("mid_ring is above RING_MAX (16)"));
        }
        if self.ring_return_div == 0 {
            return Err(ConfigError("ring_return_div must be at least 1"));
        }
        if self.drain_budget == 0 {
            return Err(ConfigError("drain_budget must be at least 1"));
        }
        Ok(self)
    }

    /// Whether Tiny class `c` uses the TinyHeap front.
    pub const fn is_tiny_heap_class(&self, c: usize) -> bool {
        self.tiny_heap && c >= 1 && c <= NUM_TINY && self.tiny_heap_classes & (1 << (c - 1)) != 0
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A field of a [`Config`] out of range; the message names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}
