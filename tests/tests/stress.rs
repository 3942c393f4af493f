//! Multi-thread stress through `HakMem` with cross-thread frees and real
//! thread exits; at the end hakmem's own accounting shows every page back.
//!
//! One test function on purpose: the leak check needs no other test of this
//! binary to hold hakmem blocks while it runs.

use std::alloc::GlobalAlloc;
use std::sync::mpsc;
use std::thread;

use hakmem::HakMem;
use hakmem_tests::{Block, Rng, check, fill, layout};

static H: HakMem = HakMem::new();

fn alloc_block(rng: &mut Rng, seed: u64) -> Block {
    let len = rng.size();
    // SAFETY: non-zero size.
    let ptr = unsafe { H.alloc(layout(len, 8)) };
    assert!(!ptr.is_null());
    // SAFETY: `len` bytes are ours.
    unsafe { fill(ptr, len, seed) };
    Block { ptr, len, seed }
}

fn free_block(b: Block) {
    // SAFETY: a live block we own, with its pattern intact.
    unsafe {
        check(b.ptr, b.len, b.seed);
        H.dealloc(b.ptr, layout(b.len, 8));
    }
}

/// One thread allocates, another frees everything.
fn producer_consumer(n: usize) {
    let (tx, rx) = mpsc::sync_channel::<Block>(256);
    let p = thread::spawn(move || {
        let mut rng = Rng(11);
        for i in 0..n {
            tx.send(alloc_block(&mut rng, i as u64)).unwrap();
        }
    });
    let c = thread::spawn(move || {
        for b in rx {
            free_block(b);
        }
    });
    p.join().unwrap();
    c.join().unwrap();
}

/// Blocks go round a ring of threads; each frees what it receives.
fn ring(threads: usize, per: usize) {
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..threads {
        let (tx, rx) = mpsc::channel::<Block>();
        txs.push(tx);
        rxs.push(rx);
    }
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let tx = txs[(t + 1) % threads].clone();
            thread::spawn(move || {
                let mut rng = Rng(t as u64 + 100);
                for i in 0..per {
                    tx.send(alloc_block(&mut rng, (t * per + i) as u64)).unwrap();
                    while let Ok(b) = rx.try_recv() {
                        free_block(b);
                    }
                }
                drop(tx);
                // Blocks still arriving are freed by a thread whose own
                // blocks are being freed by its neighbour.
                for b in rx {
                    free_block(b);
                }
            })
        })
        .collect();
    drop(txs);
    for h in handles {
        h.join().unwrap();
    }
}

/// Threads created and joined in waves; each leaves its blocks to the next
/// wave, which frees them (frees into abandoned heaps) and leaves its own.
fn waves(waves: usize, threads: usize, per: usize) {
    let mut carried: Vec<Block> = Vec::new();
    for w in 0..waves {
        let chunk = carried.len().div_ceil(threads).max(1);
        let mut inherited: Vec<Vec<Block>> = Vec::new();
        while !carried.is_empty() {
            let n = chunk.min(carried.len());
            inherited.push(carried.drain(..n).collect());
        }
        inherited.resize_with(threads, Vec::new);
        let handles: Vec<_> = inherited
            .into_iter()
            .enumerate()
            .map(|(t, old)| {
                thread::spawn(move || {
                    let mut rng = Rng((w * threads + t) as u64 + 7);
                    for b in old {
                        free_block(b);
                    }
                    let mut mine = Vec::new();
                    for i in 0..per {
                        mine.push(alloc_block(&mut rng, i as u64));
                        if i % 3 == 0 {
                            free_block(mine.swap_remove(rng.below(mine.len())));
                        }
                    }
                    mine
                })
            })
            .collect();
        for h in handles {
            carried.extend(h.join().unwrap());
        }
    }
    for b in carried {
        free_block(b);
    }
}

#[test]
fn cross_thread_stress_returns_every_page() {
    producer_consumer(100_000);
    ring(6, 20_000);
    waves(8, 4, 5_000);
    // The main thread allocated nothing of its own but freed carried blocks;
    // flush it, collect abandoned heaps' remote frees, then check.
    hakmem::flush_thread();
    hakmem::collect();
    let s = hakmem::stats();
    assert_eq!(s.pages_in_use, 0, "pages leaked: {s:?}");
    assert_eq!(s.large_live, 0, "Large blocks leaked: {s:?}");
    assert_eq!(s.abandoned_heaps, 0, "{s:?}");
    assert!(s.heaps >= 1);
}
