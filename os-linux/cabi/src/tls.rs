//! The one thread-local word the library keeps: this thread's heap pointer,
//! or a small state value (see `thread.rs`).
//!
//! # Why not `thread_local!`
//!
//! In a shared library, Rust's `thread_local!` uses the general-dynamic TLS
//! model: every access calls `__tls_get_addr`. That costs a call on every
//! `malloc` and `free`, and worse, when the library is `dlopen`ed after
//! start-up, glibc allocates the module's TLS block lazily *with `malloc`* on
//! a thread's first access — which would be our own `malloc`, recursing into
//! itself before it has a heap.
//!
//! On x86-64 and AArch64 the slot is therefore declared in assembly in the
//! initial-exec model: one `%fs`-relative load through a GOT entry the loader
//! fills once. The linker marks the library `DF_STATIC_TLS`; glibc places its
//! TLS block in the static TLS area, which is sized at start-up for preloaded
//! and linked libraries, and has a reserve (`glibc.rtld.optional_static_tls`,
//! 512 bytes by default) for libraries `dlopen`ed later. Our block (this word
//! plus the Rust standard library's few thread-locals) fits that reserve, so
//! a late `dlopen` works too; were the reserve exhausted, `dlopen` would fail
//! cleanly with "cannot allocate memory in static TLS block".
//!
//! Other architectures fall back to `thread_local!`, and there the library
//! must be preloaded or linked, not `dlopen`ed (see the README).

#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "aarch64")]
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

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
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
