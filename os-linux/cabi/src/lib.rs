//! `libhakmem.so`: the hakmem allocator behind the C allocation ABI, to
//! replace the allocator of any Linux program:
//!
//! ```sh
//! LD_PRELOAD=target/release/libhakmem.so your-program
//! ```
//!
//! It exports `malloc`, `free`, `calloc`, `realloc`, `reallocarray`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`,
//! `malloc_usable_size` and the C++ `operator new`/`delete` family, all served
//! by the process-wide allocator of the `hakmem` crate
//! ([`hakmem_linux::allocator`]). With the `prefix` feature (and in this
//! crate's own tests) every name carries a `hakmem_` prefix instead, so the
//! library can sit next to the C library's allocator.
//!
//! Behaviour where C leaves a choice is glibc's; see `abi.rs` for each
//! function, `thread.rs` for initialisation, thread exit and `fork`, `tls.rs`
//! for the thread-local model, `fault.rs` for bad pointers.

mod abi;
mod cxx;
mod env;
mod fault;
mod thread;
mod tls;

#[cfg(test)]
mod tests;

/// The C ABI fuzz target's body (prefixed builds only: it calls the
/// `hakmem_` functions). 64-bit only: it relies on sizes no address space
/// can hold.
#[cfg(all(any(test, feature = "prefix"), target_pointer_width = "64"))]
pub mod fuzz;

use hakmem_core::{Allocator, Server};
use hakmem_linux::MmapSource;

/// The process-wide allocator (shared with Rust code in the same library
/// that uses `hakmem::HakMem`; there is none).
#[inline(always)]
fn alloc() -> &'static Allocator<MmapSource, Server> {
    hakmem_linux::allocator()
}

/// Export an item under its C name, or under the `hakmem_` name with the
/// `prefix` feature and in tests.
macro_rules! export {
    ($c:literal, $prefixed:literal, $item:item) => {
        #[cfg_attr(not(any(test, feature = "prefix")), unsafe(export_name = $c))]
        #[cfg_attr(any(test, feature = "prefix"), unsafe(export_name = $prefixed))]
        $item
    };
}
pub(crate) use export;
