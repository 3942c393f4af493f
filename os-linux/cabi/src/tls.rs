//! The one thread-local word the library keeps: this thread's heap pointer,
//! or a small state value (see `thread.rs`).
//!
//! # Why not `thread_local!`
//!
//! In a shared library, Rust's `thread_local!` uses the general-dynamic TLS
//! model: every access calls `__tls_get_addr`, which on the fast paths also
//! forces the caller to save registers. Measured with callgrind on a loop of
//! `malloc`/`free` pairs (x86-64, glibc 2.36): 101 instructions per pair with
//! the initial-exec slot below, 140 with `thread_local!`, 146 for glibc's own
//! allocator.
//!
//! On x86-64 and AArch64 the slot is therefore declared in assembly in the
//! initial-exec model: one thread-pointer-relative load through a GOT entry
//! the loader fills once. The linker marks the library `DF_STATIC_TLS`: its
//! TLS block (this word plus the Rust standard library's few thread-locals,
//! 80 bytes in all) must live in glibc's static TLS area. That area is sized
//! at start-up for preloaded and linked libraries, the cases that matter; a
//! library `dlopen`ed later takes its block from the surplus glibc reserves
//! for that (on glibc 2.36, 21 renamed copies of this library fit), so a
//! late `dlopen` works too unless other libraries have used the surplus up,
//! in which case `dlopen` fails cleanly ("cannot allocate memory in static
//! TLS block") and the tunable `glibc.rtld.optional_static_tls` adds room.
//!
//! Other architectures fall back to `thread_local!`. It works preloaded,
//! linked, and `dlopen`ed (glibc then allocates the TLS block lazily with the
//! C library's `malloc`, as ours is not the global one), at the cost above.
//! The cfg `hakmem_tls_generic` (`RUSTFLAGS=--cfg=hakmem_tls_generic`)
//! selects that fallback everywhere, to measure it.

#[cfg(all(target_arch = "x86_64", not(hakmem_tls_generic)))]
mod imp {
    use core::arch::{asm, global_asm};

    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl hakmem_tls_slot",
        ".hidden hakmem_tls_slot",
        ".type hakmem_tls_slot,@object",
        ".size hakmem_tls_slot,8",
        "hakmem_tls_slot:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub(crate) fn get() -> usize {
        let v: usize;
        // SAFETY: reads this thread's slot: the GOT entry holds the slot's
        // offset from the thread pointer, fixed by the loader before any code
        // of ours runs. The slot is 8 bytes in `.tbss`, so always readable.
        unsafe {
            asm!(
                "mov {v}, qword ptr [rip + hakmem_tls_slot@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{v}]",
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        v
    }

    #[inline(always)]
    pub(crate) fn set(v: usize) {
        // SAFETY: writes this thread's slot, found as in `get`; no other
        // thread can reach it.
        unsafe {
            asm!(
                "mov {t}, qword ptr [rip + hakmem_tls_slot@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(all(target_arch = "aarch64", not(hakmem_tls_generic)))]
mod imp {
    use core::arch::{asm, global_asm};

    global_asm!(
        ".pushsection .tbss,\"awT\",%nobits",
        ".p2align 3",
        ".globl hakmem_tls_slot",
        ".hidden hakmem_tls_slot",
        ".type hakmem_tls_slot,%object",
        ".size hakmem_tls_slot,8",
        "hakmem_tls_slot:",
        ".zero 8",
        ".popsection",
    );

    #[inline(always)]
    pub(crate) fn get() -> usize {
        let v: usize;
        // SAFETY: as on x86-64: the GOT entry holds the slot's offset from
        // the thread pointer (`tpidr_el0`), and the slot is readable.
        unsafe {
            asm!(
                "mrs {tp}, tpidr_el0",
                "adrp {v}, :gottprel:hakmem_tls_slot",
                "ldr {v}, [{v}, #:gottprel_lo12:hakmem_tls_slot]",
                "ldr {v}, [{tp}, {v}]",
                tp = out(reg) _,
                v = out(reg) v,
                options(nostack, readonly, preserves_flags, pure),
            );
        }
        v
    }

    #[inline(always)]
    pub(crate) fn set(v: usize) {
        // SAFETY: as in `get`; the slot is this thread's alone.
        unsafe {
            asm!(
                "mrs {tp}, tpidr_el0",
                "adrp {t}, :gottprel:hakmem_tls_slot",
                "ldr {t}, [{t}, #:gottprel_lo12:hakmem_tls_slot]",
                "str {v}, [{tp}, {t}]",
                tp = out(reg) _,
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(any(not(any(target_arch = "x86_64", target_arch = "aarch64")), hakmem_tls_generic))]
mod imp {
    use core::cell::Cell;

    std::thread_local! {
        // Const-initialised and without a destructor: access never registers
        // anything or allocates once the TLS block exists.
        static SLOT: Cell<usize> = const { Cell::new(0) };
    }

    #[inline(always)]
    pub(crate) fn get() -> usize {
        SLOT.with(Cell::get)
    }

    #[inline(always)]
    pub(crate) fn set(v: usize) {
        SLOT.with(|s| s.set(v))
    }
}

pub(crate) use imp::{get, set};
