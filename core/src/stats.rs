//! The allocator's own accounting.

/// A snapshot of the allocator's accounting (see `Allocator::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live small segments.
    pub segments: usize,
    /// Of those, segments whose every page is free (kept as a reserve).
    pub empty_segments: usize,
    /// Pages handed to heaps (spans in use or in a heap's span cache).
    pub pages_in_use: usize,
    /// Pages holding heap metadata (kept for good; heaps are recycled).
    pub meta_pages: usize,
    /// Regions of their own holding heap metadata (tiny geometries only).
    pub meta_regions: usize,
    /// Heaps ever created (each thread that allocated needed one at a time).
    pub heaps: usize,
    /// Heaps owning spans whose thread has gone, waiting for adoption.
    pub abandoned_heaps: usize,
    /// Live Large allocations.
    pub large_live: usize,
    /// Bytes of their regions.
    pub large_live_bytes: usize,
    /// Bytes of freed Large regions kept for reuse.
    pub large_cached_bytes: usize,
    /// Bytes reserved from the source and not released.
    pub bytes_reserved: usize,
}
