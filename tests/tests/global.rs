//! hakmem as this test binary's `#[global_allocator]`: the standard library,
//! the test harness and every collection run on it.

use std::collections::{BTreeMap, HashMap};
use std::thread;

#[global_allocator]
static GLOBAL: hakmem::HakMem = hakmem::HakMem::new();

#[test]
fn collections_on_many_threads() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut m: HashMap<String, Vec<usize>> = HashMap::new();
                let mut b = BTreeMap::new();
                for i in 0..50_000usize {
                    m.entry(format!("k{}", (i * 7919 + t) % 5000)).or_default().push(i);
                    b.insert(i, vec![t as u8; i % 300]);
                    if i % 3 == 0 {
                        b.remove(&(i / 2));
                    }
                }
                (m, b)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        let (m, b) = h.join().unwrap();
        total += m.values().map(Vec::len).sum::<usize>();
        assert!(b.values().all(|v| v.iter().all(|&x| x == v.first().copied().unwrap_or(0))));
    }
    assert_eq!(total, 4 * 50_000);
    // The memory really is hakmem's.
    let s = hakmem::stats();
    assert!(s.pages_in_use > 0, "{s:?}");
    let v: Box<[u8]> = vec![1u8; 100].into_boxed_slice();
    // SAFETY: a live block of the global allocator, which is hakmem.
    assert_eq!(unsafe { hakmem::usable_size(v.as_ptr().cast_mut()) }, 112);
}

#[test]
fn strings_grow_and_shrink() {
    let mut s = String::new();
    for i in 0..200_000 {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    s.truncate(10);
    s.shrink_to_fit();
    assert_eq!(s, "abcdefghij");
    let big = vec![7u64; 1 << 20];
    assert!(big.iter().all(|&x| x == 7));
}
