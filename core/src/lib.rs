//! The `no_std` core of the hakmem allocator.
//!
//! # Glossary
//!
//! - **OS page** — the source's granularity (`PageSource::page_size`, 4 KiB on
//!   Linux). Only purging and region sizes speak of it.
//! - **page** — a fixed slice of a segment (`Geometry::PAGE_SHIFT`; 64 KiB on
//!   the server geometry) with a descriptor ([`PageDesc`](segment)) in the
//!   segment header.
//! - **span** — one or more consecutive pages serving one size class; its
//!   first page's descriptor (the *head*) holds its free list and counts.
//! - **segment** — a region of `2^SEGMENT_SHIFT` bytes aligned to its size
//!   (2 MiB on the server geometry): header, descriptors, pages. The seed
//!   calls it a SuperSlab. `ptr & !SEGMENT_MASK` finds it.
//! - **Tiny / Mid / Large** — blocks up to 1 KiB; up to 128 KiB (or what the
//!   geometry allows); anything bigger, which gets a region of its own.
//! - **owner** — the [`Heap`](heap::Heap) a span belongs to; only it touches
//!   the span's free list and counts.
//! - **local free / remote free** — a free by the owner's holder, straight
//!   into its bins or span; a free by anyone else, pushed with one CAS onto the
//!   owner's transfer list for the class, which the owner drains in batches.
//! - **bin** — per-class state of a [`LocalHeap`]: for Tiny, a free list of
//!   blocks handed out of the *current page* (plus an optional magazine); for
//!   Mid, a ring and a LIFO.
//! - **current page** — the span a Tiny bin takes its blocks from (the seed's
//!   TinyHeap `current_page`); local frees of its blocks go straight back to
//!   the bin.
//! - **delta** — blocks a heap holds in its bins count as in use by their
//!   spans; span counts are exact once those are returned.
//! - **flush** — returning a bin's blocks to their spans: at a threshold (a
//!   full magazine or LIFO), on a page switch (the bin is empty then), and at
//!   thread exit ([`Allocator::detach`]).
//! - **abandoned heap** — a heap whose thread has gone but whose spans still
//!   hold live blocks; remote frees keep reaching it, other threads collect
//!   it, and a new thread adopts it.
//! - **pool** — the cold side: free pages of all segments, behind a lock.
//!
//! See `docs/DESIGN.md` for the layout and the paths, and `docs/INVARIANTS.md`.

#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alloc;
mod block;
mod check;
pub mod class;
mod config;
mod heap;
mod pool;
mod segment;
mod source;
mod stats;
mod sync;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use crate::alloc::{Allocator, Fault, FaultKind};
pub use crate::config::{ALL_TINY, Config, ConfigError, MAX_SAMPLE_SHIFT, RING_MAX, SWITCHES, parse_u64};
pub use crate::heap::LocalHeap;
pub use crate::segment::{Geo, Geometry, Server, Small};
pub use crate::source::{PageSource, Purged, Reservation};
pub use crate::stats::{ClassStats, Stats};

#[cfg(test)]
extern crate std;
