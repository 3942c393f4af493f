//! A real multi-threaded workload with hakmem as the global allocator: worker
//! threads build word-frequency maps over generated text (strings, vectors
//! and hash maps of every size), pass their maps to the main thread, which
//! merges them — so most of the workers' blocks are freed by another thread.
//!
//! `cargo run --release -p hakmem --example wordfreq [threads] [words]`

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem::new();

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn word(rng: &mut Rng) -> String {
    // Zipf-like: short common words, long rare ones.
    let len = 1 + (rng.next() % 6) as usize * (1 + (rng.next() % 4) as usize);
    (0..len).map(|_| (b'a' + (rng.next() % 8) as u8) as char).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let words: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(400_000);
    let (tx, rx) = mpsc::channel::<HashMap<String, Vec<u32>>>();
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t as u64 + 1));
                let mut map: HashMap<String, Vec<u32>> = HashMap::new();
                for i in 0..words {
                    map.entry(word(&mut rng)).or_default().push(i as u32);
                    if i % 50_000 == 49_999 {
                        // Hand a partial map over and start afresh.
                        tx.send(std::mem::take(&mut map)).unwrap();
                    }
                }
                tx.send(map).unwrap();
            })
        })
        .collect();
    drop(tx);
    let mut total: HashMap<String, usize> = HashMap::new();
    for map in rx {
        for (w, positions) in map {
            *total.entry(w).or_default() += positions.len();
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    let counted: usize = total.values().sum();
    assert_eq!(counted, threads * words, "every word counted once");
    let mut top: Vec<_> = total.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("{threads} threads x {words} words: {} distinct, in {:.2?}", top.len(), start.elapsed());
    for (w, n) in top.iter().take(5) {
        println!("  {w:>8} {n}");
    }
    hakmem::flush_thread();
    hakmem::collect();
    let s = hakmem::stats();
    println!(
        "hakmem: {} segments, {} pages in use, {} heaps ({} abandoned), {} KiB reserved",
        s.segments,
        s.pages_in_use,
        s.heaps,
        s.abandoned_heaps,
        s.bytes_reserved / 1024
    );
}
