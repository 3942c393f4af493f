//! Run-time configuration: one plain-data [`Config`], validated once.
//!
//! Every knob is read when a heap is attached (into the heap's own bins) or on
//! a slow path; nothing on a fast path tests a configuration flag. An adapter
//! builds a `Config` at compile time (bare metal) or from `HAKMEM_*`
//! environment variables through [`Config::set`], which parses without
//! allocating (Linux).

use crate::class::{CLASS_SIZE, NUM_TINY};

/// Capacity of a Mid bin's ring (compile-time bound of `Config::mid_ring`).
pub const RING_MAX: usize = 16;

/// Largest sampling shift: counters are sampled at least once every 2^24 operations.
pub const MAX_SAMPLE_SHIFT: u8 = 24;

/// All Tiny classes, as a class mask (bit `c - 1` for class `c`).
pub const ALL_TINY: u32 = (1 << NUM_TINY) - 1;

/// The allocator's tunables. Build one with [`Config::DEFAULT`] and struct
/// update syntax (or [`Config::set`]), then [`Config::validate`] it (the
/// allocator does so once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// TinyHeap front on (`true`) or every Tiny class on the magazine path.
    pub tiny_heap: bool,
    /// Which Tiny classes use TinyHeap (bit `c - 1` for class `c`); the others
    /// use the magazine. Ignored when `tiny_heap` is off.
    pub tiny_heap_classes: u32,
    /// Tiny classes with the straight-line hot front: a sized free of a block
    /// in its bin's current page goes back without touching any descriptor.
    pub tiny_hot_classes: u32,
    /// Metadata mode. `true` (SAFE): magazines and LIFOs flush a share back to
    /// their spans at their caps, so span counts stay close to exact and empty
    /// pages return promptly. `false`: no threshold flush; cached blocks go
    /// back only at a page switch or thread exit.
    pub meta_safe: bool,
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
    /// Free memory may stay resident (waiting for its delay) up to
    /// `max(purge_dirty_min, in-use / 4)` bytes; beyond that the oldest is
    /// purged at once, so a large release returns memory as it happens.
    pub purge_dirty_min: usize,
    /// Tiny fast-path operations are counted once every `2^tiny_sample_shift`.
    pub tiny_sample_shift: u8,
    /// Mid fast-path operations are counted once every `2^mid_sample_shift`.
    pub mid_sample_shift: u8,
    /// Per-CPU heap slots an adapter tries (its own first) before it falls
    /// back to the shared heap (bare metal).
    pub trylock_probes: u8,
    /// Checking builds: fail fast on a bad block when taking blocks from a span.
    pub debug_pop: bool,
    /// Checking builds: stamp on each span the site that last changed its counts.
    pub delta_trace: bool,
    /// Checking builds: keep a summary of count changes per site, for an
    /// adapter to print at exit.
    pub delta_debug: bool,
}

impl Config {
    /// The defaults, chosen by measurement (see `docs/BENCHMARKS.md`).
    pub const DEFAULT: Config = Config {
        tiny_heap: true,
        tiny_heap_classes: ALL_TINY,
        tiny_hot_classes: ALL_TINY,
        meta_safe: true,
        tiny_mag_cap: 256,
        mid_ring: 16,
        mid_lifo_max: 256,
        mid_bin_bytes: 128 * 1024,
        ring_return_div: 2,
        drain_budget: 1024,
        heap_page_cache: 4,
        segment_reserve: 1,
        large_cache_bytes: 64 << 20,
        purge_delay_ms: 10,
        purge_dirty_min: 1 << 20,
        tiny_sample_shift: 8,
        mid_sample_shift: 8,
        trylock_probes: 1,
        debug_pop: false,
        delta_trace: false,
        delta_debug: false,
    };

    /// Check every field against its range.
    pub const fn validate(self) -> Result<Config, ConfigError> {
        if self.tiny_heap_classes & !ALL_TINY != 0 || self.tiny_hot_classes & !ALL_TINY != 0 {
            return Err(ConfigError::Range("a class mask names a class above the Tiny tier (max 0xffffff)"));
        }
        if self.mid_ring as usize > RING_MAX {
            return Err(ConfigError::Range("mid_ring is above RING_MAX (16)"));
        }
        if self.ring_return_div == 0 {
            return Err(ConfigError::Range("ring_return_div must be at least 1"));
        }
        if self.drain_budget == 0 {
            return Err(ConfigError::Range("drain_budget must be at least 1"));
        }
        if self.tiny_mag_cap == 0 {
            return Err(ConfigError::Range("tiny_mag_cap must be at least 1"));
        }
        if self.tiny_sample_shift > MAX_SAMPLE_SHIFT || self.mid_sample_shift > MAX_SAMPLE_SHIFT {
            return Err(ConfigError::Range("a sample shift is above 24"));
        }
        Ok(self)
    }

    /// Whether Tiny class `c` uses the TinyHeap front.
    pub const fn is_tiny_heap_class(&self, c: usize) -> bool {
        self.tiny_heap && c >= 1 && c <= NUM_TINY && self.tiny_heap_classes & (1 << (c - 1)) != 0
    }

    /// Whether Tiny class `c` has the straight-line hot front.
    pub const fn is_hot_class(&self, c: usize) -> bool {
        c >= 1 && c <= NUM_TINY && self.tiny_hot_classes & (1 << (c - 1)) != 0
    }

    /// Set the field an environment variable names, from its value. `name`
    /// is the full variable name (`HAKMEM_...`). Parses without allocating;
    /// leaves `self` unchanged on error. Adapter-level switches (statistics
    /// output, the purge mode) are not known here and come back as
    /// [`ConfigError::Unknown`] for the adapter to handle.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let mut c = *self;
        let v = value.trim();
        match name {
            "HAKMEM_TINY_HEAP_BOX" => c.tiny_heap = parse_bool(v)?,
            "HAKMEM_TINY_HEAP_CLASSES" => c.tiny_heap_classes = parse_u64(v, ALL_TINY as u64)? as u32,
            "HAKMEM_TINY_HOT_CLASSES" => c.tiny_hot_classes = parse_u64(v, ALL_TINY as u64)? as u32,
            "HAKMEM_TINY_C6_HOT" => {
                let m = seed_c6_classes();
                c.tiny_hot_classes = if parse_bool(v)? { c.tiny_hot_classes | m } else { c.tiny_hot_classes & !m };
            }
            "HAKMEM_TINY_C6_META_MODE" => c.meta_safe = parse_u64(v, 1)? == 1,
            "HAKMEM_TINY_MAG_CAP" => c.tiny_mag_cap = parse_u64(v, u16::MAX as u64)?.max(1) as u16,
            "HAKMEM_TINY_COUNT_SAMPLE" => c.tiny_sample_shift = parse_u64(v, MAX_SAMPLE_SHIFT as u64)? as u8,
            "HAKMEM_POOL_COUNT_SAMPLE" => c.mid_sample_shift = parse_u64(v, MAX_SAMPLE_SHIFT as u64)? as u8,
            "HAKMEM_POOL_TLS_RING" => c.mid_ring = parse_u64(v, RING_MAX as u64)? as u8,
            "HAKMEM_TLS_LO_MAX" => c.mid_lifo_max = parse_u64(v, u16::MAX as u64)? as u16,
            "HAKMEM_MID_BIN_BYTES" => c.mid_bin_bytes = parse_u64(v, u32::MAX as u64)? as u32,
            "HAKMEM_RING_RETURN_DIV" => c.ring_return_div = parse_u64(v, u8::MAX as u64)?.max(1) as u8,
            "HAKMEM_DRAIN_BUDGET" => c.drain_budget = parse_u64(v, u16::MAX as u64)?.max(1) as u16,
            "HAKMEM_HEAP_PAGE_CACHE" => c.heap_page_cache = parse_u64(v, u8::MAX as u64)? as u8,
            "HAKMEM_SEGMENT_RESERVE" => c.segment_reserve = parse_u64(v, u8::MAX as u64)? as u8,
            "HAKMEM_LARGE_CACHE_BYTES" => c.large_cache_bytes = parse_u64(v, isize::MAX as u64)? as usize,
            "HAKMEM_PURGE_DELAY_MS" => c.purge_delay_ms = parse_u64(v, u32::MAX as u64)? as u32,
            "HAKMEM_PURGE_DIRTY_MIN" => c.purge_dirty_min = parse_u64(v, isize::MAX as u64)? as usize,
            "HAKMEM_TRYLOCK_PROBES" => c.trylock_probes = parse_u64(v, u8::MAX as u64)? as u8,
            "HAKMEM_TINY_C6_DEBUG_POP" => c.debug_pop = parse_bool(v)?,
            "HAKMEM_TINY_C6_DELTA_TRACE" => c.delta_trace = parse_bool(v)?,
            "HAKMEM_TINY_C6_DELTA_DEBUG" => c.delta_debug = parse_bool(v)?,
            "HAKMEM_HDR_LIGHT" => {
                parse_u64(v, 2)?;
                return Err(ConfigError::NoEffect("hakmem's Mid blocks carry no header, so there is no header mode"));
            }
            _ => return Err(ConfigError::Unknown),
        }
        let c = c.validate()?;
        if (name.starts_with("HAKMEM_TINY_C6_DEBUG") || name.starts_with("HAKMEM_TINY_C6_DELTA"))
            && !crate::check::DEBUG_SWITCHES
        {
            return Err(ConfigError::NoEffect("debug switches need a build with the check-invariants feature"));
        }
        *self = c;
        Ok(())
    }
}

/// The switches [`Config::set`] knows: name, default, range, what it trades.
/// The README's table is checked against this list by a test.
pub const SWITCHES: &[(&str, &str, &str, &str)] = &[
    (
        "HAKMEM_TINY_HEAP_BOX",
        "1",
        "0, 1",
        "TinyHeap front (current page per class) on, or every Tiny class on the magazine",
    ),
    (
        "HAKMEM_TINY_HEAP_CLASSES",
        "0xffffff",
        "24-bit mask",
        "Tiny classes on TinyHeap (bit c-1 = class c); the others cache other pages' frees in a magazine",
    ),
    (
        "HAKMEM_TINY_C6_HOT",
        "1",
        "0, 1",
        "straight-line sized free for the seed's C6 range (257-512 B classes); 0 sends them through the descriptor",
    ),
    ("HAKMEM_TINY_HOT_CLASSES", "0xffffff", "24-bit mask", "the same, for any Tiny class"),
    (
        "HAKMEM_TINY_C6_META_MODE",
        "1",
        "0, 1",
        "1 SAFE: caches flush a share at their caps (exact counts, prompt page return); 0: flush only at page switch or exit",
    ),
    ("HAKMEM_TINY_MAG_CAP", "256", "1-65535", "magazine size before it flushes half: fewer flushes vs cached memory"),
    ("HAKMEM_TINY_COUNT_SAMPLE", "8", "0-24", "Tiny fast-path counters sampled once per 2^N operations"),
    ("HAKMEM_POOL_COUNT_SAMPLE", "8", "0-24", "Mid fast-path counters sampled once per 2^N operations"),
    ("HAKMEM_POOL_TLS_RING", "16", "0-16", "Mid ring slots per class: frees that never touch the block"),
    ("HAKMEM_TLS_LO_MAX", "256", "0-65535", "Mid LIFO cap behind the ring: fewer span visits vs cached memory"),
    ("HAKMEM_MID_BIN_BYTES", "131072", "0-4G", "bytes one Mid bin may cache (caps ring+LIFO for big classes)"),
    ("HAKMEM_RING_RETURN_DIV", "2", "1-255", "share of a full LIFO (len/N) flushed back to its spans"),
    ("HAKMEM_DRAIN_BUDGET", "1024", "1-65535", "remote frees processed per slow path: latency vs backlog"),
    ("HAKMEM_HEAP_PAGE_CACHE", "4", "0-255", "empty spans a heap keeps: fewer pool visits vs idle memory"),
    ("HAKMEM_SEGMENT_RESERVE", "1", "0-255", "empty segments kept: fewer mmap calls vs idle address space"),
    ("HAKMEM_LARGE_CACHE_BYTES", "67108864", "bytes", "freed Large regions kept for reuse: fewer faults vs memory"),
    ("HAKMEM_PURGE_DELAY_MS", "10", "0-4294967295", "how long free pages stay resident before they are purged"),
    (
        "HAKMEM_PURGE_DIRTY_MIN",
        "1048576",
        "bytes",
        "free memory kept resident beyond the delay rule: max(this, in-use/4); less holds less after a peak, more refaults less",
    ),
    ("HAKMEM_TRYLOCK_PROBES", "1", "0-255", "bare metal: per-CPU heaps tried before the shared heap"),
    ("HAKMEM_HDR_LIGHT", "-", "0, 1, 2", "accepted with a warning: Mid blocks carry no header"),
    ("HAKMEM_TINY_C6_DEBUG_POP", "0", "0, 1", "check-invariants builds: validate blocks taken from a span, fail fast"),
    ("HAKMEM_TINY_C6_DELTA_TRACE", "0", "0, 1", "check-invariants builds: stamp the last count-changing site on spans"),
    ("HAKMEM_TINY_C6_DELTA_DEBUG", "0", "0, 1", "check-invariants builds: summary of count changes per site at exit"),
];

/// The seed's class C6 (257-512 B) as a mask of our Tiny classes.
fn seed_c6_classes() -> u32 {
    let mut m = 0;
    for (i, &size) in CLASS_SIZE[1..=NUM_TINY].iter().enumerate() {
        if size > 256 && size <= 512 {
            m |= 1 << i;
        }
    }
    m
}

fn parse_bool(v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "on" | "true" | "yes" => Ok(true),
        "0" | "off" | "false" | "no" => Ok(false),
        _ => Err(ConfigError::Value("expected 0 or 1")),
    }
}

/// Decimal or `0x` hex, with an optional `k`/`m`/`g` (×1024) suffix, at most `max`.
pub fn parse_u64(v: &str, max: u64) -> Result<u64, ConfigError> {
    let (digits, mul) = match v.as_bytes().last() {
        Some(b'k' | b'K') => (&v[..v.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&v[..v.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    let n = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        digits.parse::<u64>()
    }
    .map_err(|_| ConfigError::Value("not a number"))?;
    let n = n.checked_mul(mul).ok_or(ConfigError::Value("out of range"))?;
    if n > max {
        return Err(ConfigError::Value("out of range"));
    }
    Ok(n)
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a configuration value was refused; the allocator keeps the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a switch [`Config::set`] knows.
    Unknown,
    /// The value does not parse or is out of the switch's range.
    Value(&'static str),
    /// The configuration as a whole is inconsistent.
    Range(&'static str),
    /// Known, parsed, but it has no effect in this build or design.
    NoEffect(&'static str),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::Unknown => f.write_str("unknown switch"),
            ConfigError::Value(m) | ConfigError::Range(m) | ConfigError::NoEffect(m) => f.write_str(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_switch_is_known() {
        for &(name, default, _, _) in SWITCHES {
            let mut c = Config::DEFAULT;
            let r = c.set(name, if default == "-" { "0" } else { default });
            assert!(!matches!(r, Err(ConfigError::Unknown | ConfigError::Value(_))), "{name}: {r:?}");
            if r.is_ok() {
                assert_eq!(c, Config::DEFAULT, "{name}={default} is not the default");
            }
        }
    }

    #[test]
    fn values_parse_and_bad_ones_leave_the_default() {
        let mut c = Config::DEFAULT;
        c.set("HAKMEM_TINY_HEAP_CLASSES", "0x40").unwrap();
        assert_eq!(c.tiny_heap_classes, 0x40);
        c.set("HAKMEM_LARGE_CACHE_BYTES", "16M").unwrap();
        assert_eq!(c.large_cache_bytes, 16 << 20);
        let before = c;
        assert_eq!(c.set("HAKMEM_POOL_TLS_RING", "17"), Err(ConfigError::Value("out of range")));
        assert_eq!(c.set("HAKMEM_TINY_HEAP_BOX", "maybe"), Err(ConfigError::Value("expected 0 or 1")));
        assert_eq!(c.set("HAKMEM_TINY_HEAP_CLASSES", "0x1000000"), Err(ConfigError::Value("out of range")));
        assert_eq!(c.set("HAKMEM_NOPE", "1"), Err(ConfigError::Unknown));
        assert!(matches!(c.set("HAKMEM_HDR_LIGHT", "1"), Err(ConfigError::NoEffect(_))));
        assert_eq!(c, before);
        c.set("HAKMEM_TINY_C6_HOT", "0").unwrap();
        assert_eq!(c.tiny_hot_classes & seed_c6_classes(), 0);
        assert_eq!(seed_c6_classes().count_ones(), 4);
    }
}
