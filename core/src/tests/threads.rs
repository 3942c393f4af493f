//! Cross-thread frees over the tracking source (small enough for Miri; the
//! long stress runs live in the `hakmem-tests` crate).

use std::sync::mpsc;
use std::thread;
use std::vec::Vec;

use super::*;
use crate::testing::TestGeo;

/// Raw block pointers sent between threads.
struct Ptr(*mut u8, usize, u8);
// SAFETY: a block is owned by whoever holds its `Ptr`.
unsafe impl Send for Ptr {}

/// One thread allocates, another frees everything: all remote frees, then
/// the producer's heap collects them and every page comes back.
#[test]
fn producer_consumer() {
    let a = new_alloc::<TestGeo>(4096);
    let n = steps(20_000);
    thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Ptr>(64);
        let a = &a;
        s.spawn(move || {
            let mut heap = heap();
            let mut rng = Rng(7);
            for i in 0..n {
                let size = [8usize, 24, 100, 700, 2000, 9000, 40000][rng.below(7) as usize];
                let p = a.alloc(&mut heap, layout(size, 8));
                fill(p, size, i as u8);
                tx.send(Ptr(p, size, i as u8)).unwrap();
                if i % 1000 == 999 {
                    // Reuse what the consumer gave back.
                    a.collect(Some(&mut heap));
                }
            }
            drop(tx);
            a.detach(&mut heap);
        });
        s.spawn(move || {
            let mut heap = heap();
            for Ptr(p, size, seed) in rx {
                check(p, size, seed);
                // SAFETY: a live block handed to us.
                unsafe { a.free(&mut heap, p) }.unwrap();
            }
            a.detach(&mut heap);
        });
    });
    assert_all_returned(&a);
}

/// Blocks travel around a ring of threads, each freeing what it receives
/// and allocating anew; threads come and go in waves.
#[test]
fn ring_and_waves() {
    let a = new_alloc::<TestGeo>(4096);
    let per = steps(4000);
    for wave in 0..if cfg!(miri) { 1 } else { 3 } {
        const T: usize = 4;
        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..T {
            let (tx, rx) = mpsc::channel::<Ptr>();
            txs.push(tx);
            rxs.push(rx);
        }
        thread::scope(|s| {
            for (t, rx) in rxs.into_iter().enumerate() {
                let tx = txs[(t + 1) % T].clone();
                let a = &a;
                s.spawn(move || {
                    let mut heap = heap();
                    let mut rng = Rng((wave * T + t) as u64 + 1);
                    for i in 0..per {
                        let size = 1 + rng.below(3000) as usize;
                        let p = a.alloc(&mut heap, layout(size, 8));
                        fill(p, size, i as u8);
                        tx.send(Ptr(p, size, i as u8)).unwrap();
                        while let Ok(Ptr(q, qs, seed)) = rx.try_recv() {
                            check(q, qs, seed);
                            // SAFETY: a live block handed to us.
                            unsafe { a.free(&mut heap, q) }.unwrap();
                        }
                    }
                    drop(tx);
                    // Exit with blocks still travelling: the heap is abandoned
                    // while others free into it.
                    a.detach(&mut heap);
                    for Ptr(q, qs, seed) in rx {
                        check(q, qs, seed);
                        // SAFETY: a live block handed to us; freed without a heap.
                        unsafe { a.free_detached(q) }.unwrap();
                    }
                });
            }
            drop(txs);
        });
    }
    assert_all_returned(&a);
}
