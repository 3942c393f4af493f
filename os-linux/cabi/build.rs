//! Link flags of `libhakmem.so`.

fn main() {
    // Force the `thread_local!` fallback of `tls.rs` (for measurements).
    println!("cargo::rustc-check-cfg=cfg(hakmem_tls_generic)");
    // `-lhakmem` records this name as the dependency.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhakmem.so");
    // Never unload: blocks handed out stay reachable after a `dlclose`, and
    // the allocator's statics and thread-exit destructor must outlive them.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
