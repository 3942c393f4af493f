//! hakmem's head-to-head benchmark suite: hakmem, glibc, mimalloc, jemalloc
//! and a speed-of-light floor, in the same process, in interleaved rounds.
//!
//! See `benches/README.md` for how to run it and what each figure means.

#![warn(missing_docs)]

pub mod allocs;
pub mod harness;
pub mod machine;
pub mod memory;
pub mod preload;
pub mod report;
pub mod suite;
pub mod workloads;

/// The program's global allocator: the harness's own, none of those under
/// test (see [`harness`]).
#[global_allocator]
static GLOBAL: harness::HarnessAlloc = harness::HarnessAlloc;

#[cfg(test)]
mod tests;
