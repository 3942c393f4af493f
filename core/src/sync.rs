//! The one place the core takes its atomics, cells, locks and spin-waits from.
//!
//! Under the private cfg `hakmem_loom` every item here is loom's instrumented
//! twin, so the loom models in `core/tests/loom.rs` explore the interleavings
//! of the real core code. Otherwise they are the plain `core` items (and a
//! `spin` mutex), at zero cost.

#[cfg(not(hakmem_loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
#[cfg(hakmem_loom)]
pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// A cell whose accesses are serialised by a protocol stated where it is
/// declared (a lock, or ownership of the page or heap it sits in), not by the
/// type system. Under loom the accesses are tracked, so a model reports any
/// two of them that are not ordered by a happens-before edge.
pub(crate) struct Guarded<T> {
    #[cfg(not(hakmem_loom))]
    cell: core::cell::UnsafeCell<T>,
    #[cfg(hakmem_loom)]
    cell: loom::cell::UnsafeCell<T>,
}

impl<T> Guarded<T> {
    #[cfg(not(hakmem_loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self { cell: core::cell::UnsafeCell::new(value) }
    }
    #[cfg(hakmem_loom)]
    #[track_caller]
    pub(crate) fn new(value: T) -> Self {
        Self { cell: loom::cell::UnsafeCell::new(value) }
    }

    /// Run `f` with exclusive access to the value.
    ///
    /// # Safety
    /// The caller holds whatever the declaration says serialises this cell,
    /// so no other access to it runs at the same time, and `f` does not reach
    /// this cell again.
    #[inline(always)]
    #[cfg_attr(hakmem_loom, track_caller)] // loom then names the caller's line
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(not(hakmem_loom))]
        {
            // SAFETY: exclusive access is the caller's promise.
            f(unsafe { &mut *self.cell.get() })
        }
        #[cfg(hakmem_loom)]
        {
            // SAFETY: exclusive access is the caller's promise.
            self.cell.with_mut(|p| f(unsafe { &mut *p }))
        }
    }
}

impl<T> Guarded<T> {
    /// A raw pointer for reading the value, for a reader that can show no
    /// write runs (see the caller's `SAFETY`). Under loom only the read that
    /// hands out the pointer is tracked: use it for values written once
    /// before the allocator is shared.
    #[inline(always)]
    pub(crate) fn as_const_ptr(&self) -> *const T {
        #[cfg(not(hakmem_loom))]
        {
            self.cell.get()
        }
        #[cfg(hakmem_loom)]
        {
            self.cell.with(|p| p)
        }
    }
}

impl<T: Copy> Guarded<T> {
    /// Read the value.
    ///
    /// # Safety
    /// As for [`Guarded::with_mut`]: no write to this cell runs concurrently.
    #[inline(always)]
    #[cfg_attr(hakmem_loom, track_caller)] // loom then names the caller's line
    pub(crate) unsafe fn get(&self) -> T {
        #[cfg(not(hakmem_loom))]
        {
            // SAFETY: no concurrent writer, by the caller's promise.
            unsafe { *self.cell.get() }
        }
        #[cfg(hakmem_loom)]
        {
            // SAFETY: no concurrent writer, by the caller's promise.
            self.cell.with(|p| unsafe { *p })
        }
    }

    /// Write the value.
    ///
    /// # Safety
    /// As for [`Guarded::with_mut`].
    #[inline(always)]
    #[cfg_attr(hakmem_loom, track_caller)] // loom then names the caller's line
    pub(crate) unsafe fn set(&self, value: T) {
        // SAFETY: forwarded from the caller.
        unsafe { self.with_mut(|v| *v = value) }
    }
}

// SAFETY: a `Guarded` hands out access only through `unsafe` methods whose
// callers promise the serialisation its declaration states; with that, sharing
// it between threads is sound for any `T: Send`.
unsafe impl<T: Send> Sync for Guarded<T> {}
// SAFETY: moving the cell moves the `T`.
unsafe impl<T: Send> Send for Guarded<T> {}

/// A mutual-exclusion lock for the cold side (page pool, heap pool, Large
/// cache). Never taken on a fast path.
pub(crate) struct Mutex<T> {
    #[cfg(not(hakmem_loom))]
    inner: spin::mutex::SpinMutex<T>,
    #[cfg(hakmem_loom)]
    inner: loom::sync::Mutex<T>,
}

#[cfg(not(hakmem_loom))]
pub(crate) type MutexGuard<'a, T> = spin::mutex::SpinMutexGuard<'a, T>;
#[cfg(hakmem_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    #[cfg(not(hakmem_loom))]
    pub(crate) const fn new(value: T) -> Self {
        Self { inner: spin::mutex::SpinMutex::new(value) }
    }
    #[cfg(hakmem_loom)]
    pub(crate) fn new(value: T) -> Self {
        Self { inner: loom::sync::Mutex::new(value) }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(hakmem_loom))]
        {
            self.inner.lock()
        }
        #[cfg(hakmem_loom)]
        {
            self.inner.lock().unwrap()
        }
    }

    /// Release the lock held by a guard that was forgotten (`fork` support:
    /// the child process unlocks what the parent locked before forking).
    ///
    /// # Safety
    /// The lock is held, by a guard that was leaked, and nothing else will use
    /// that guard.
    #[cfg(not(hakmem_loom))]
    pub(crate) unsafe fn force_unlock(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.force_unlock() }
    }
}

/// Whether the deliberate bug named by the `loom-bug-*` feature `$name` is
/// injected. Only loom builds (`--cfg hakmem_loom`) ever inject one, so a
/// plain build with every feature on is still correct; the loom models must
/// catch each one (`docs/VERIFICATION.md`, `core/loom.sh --bugs`).
macro_rules! loom_bug {
    ($name:literal) => {
        cfg!(all(hakmem_loom, feature = $name))
    };
}
pub(crate) use loom_bug;

/// Declare a function `const` except under loom, whose primitives cannot be
/// built in a const context.
macro_rules! const_unless_loom {
    ($(#[$m:meta])* $vis:vis fn $name:ident $($rest:tt)*) => {
        #[cfg(not(hakmem_loom))]
        $(#[$m])* $vis const fn $name $($rest)*
        #[cfg(hakmem_loom)]
        $(#[$m])* $vis fn $name $($rest)*
    };
}
pub(crate) use const_unless_loom;
