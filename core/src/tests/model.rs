//! Shadow-model property test: random alloc / realloc / free sequences over
//! a source that tracks every region, checking each block is in bounds,
//! aligned, disjoint from every other live block, keeps its contents, and
//! that everything comes back at the end.

use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;
use crate::testing::TestGeo;
use crate::{Geo, Server};

struct Live {
    ptr: *mut u8,
    len: usize,
    align: usize,
    seed: u8,
}

struct Model<'a, G: Geometry> {
    a: &'a Allocator<TestSource, G>,
    heap: std::boxed::Box<LocalHeap>,
    live: BTreeMap<usize, Live>,
    keys: Vec<usize>,
    rng: Rng,
}

impl<G: Geometry> Model<'_, G> {
    fn size(&mut self) -> usize {
        match self.rng.below(100) {
            0..=59 => self.rng.below(1025) as usize,
            60..=89 => 1024 + self.rng.below(Geo::<G>::MID_MAX as u64 - 1023) as usize,
            90..=97 => self.rng.below(4 * Geo::<G>::SEGMENT_SIZE as u64) as usize,
            _ => 0,
        }
    }

    fn align(&mut self) -> usize {
        match self.rng.below(20) {
            0..=11 => 8,
            12..=15 => 16,
            16..=18 => 1 << self.rng.below(13),
            _ => Geo::<G>::SEGMENT_SIZE << self.rng.below(2),
        }
    }

    /// Check `[p, p + len)` against the source and every live block.
    fn admit(&mut self, p: *mut u8, len: usize, align: usize) {
        assert!(!p.is_null());
        assert_eq!(p.addr() % align, 0, "{p:p} not aligned to {align}");
        let n = len.max(1);
        assert!(self.a.source().contains(p.addr(), n), "{p:p}+{n} outside every region");
        // SAFETY: a live block of ours.
        let usable = unsafe { self.a.usable_size(p) }.unwrap();
        assert!(usable >= len, "usable {usable} < {len}");
        if let Some((&q, l)) = self.live.range(..p.addr() + n).next_back() {
            assert!(q + l.len.max(1) <= p.addr(), "{p:p}+{n} overlaps {q:#x}+{}", l.len);
        }
    }

    fn alloc(&mut self) {
        let (len, align) = (self.size(), self.align());
        let p = self.a.alloc(&mut self.heap, layout(len, align));
        self.admit(p, len, align);
        let seed = self.rng.next() as u8;
        fill(p, len, seed);
        self.live.insert(p.addr(), Live { ptr: p, len, align, seed });
        self.keys.push(p.addr());
    }

    fn pick(&mut self) -> Option<(usize, usize)> {
        if self.keys.is_empty() {
            return None;
        }
        let i = self.rng.below(self.keys.len() as u64) as usize;
        Some((i, self.keys[i]))
    }

    fn free(&mut self) {
        let Some((i, k)) = self.pick() else { return };
        self.keys.swap_remove(i);
        let l = self.live.remove(&k).unwrap();
        let p = l.ptr;
        check(p, l.len, l.seed);
        // SAFETY: a live block of ours, freed once.
        unsafe { self.a.free(&mut self.heap, p) }.unwrap();
    }

    fn realloc(&mut self) {
        let Some((i, k)) = self.pick() else { return };
        let l = self.live.remove(&k).unwrap();
        let p = l.ptr;
        let new_len = self.size();
        // SAFETY: a live block of ours.
        let q = unsafe { self.a.realloc(&mut self.heap, p, l.len, l.align, new_len) }.unwrap();
        assert!(!q.is_null());
        check(q, l.len.min(new_len), l.seed);
        self.admit(q, new_len, l.align);
        fill(q, new_len, l.seed);
        self.live.insert(q.addr(), Live { ptr: q, len: new_len, align: l.align, seed: l.seed });
        self.keys[i] = q.addr();
    }

    fn run(&mut self, steps: usize) {
        for step in 0..steps {
            match self.rng.below(100) {
                0..=49 => self.alloc(),
                50..=84 => self.free(),
                85..=97 => self.realloc(),
                _ => {
                    // A thread leaves and another adopts its heap.
                    self.a.detach(&mut self.heap);
                    if step % 2 == 0 {
                        self.a.collect(None);
                    }
                }
            }
        }
        while !self.keys.is_empty() {
            self.free();
        }
        self.a.detach(&mut self.heap);
    }
}

fn model<G: Geometry>(page: usize, seeds: core::ops::Range<u64>, steps: usize) {
    for seed in seeds {
        let a = new_alloc::<G>(page);
        let mut m = Model { a: &a, heap: heap(), live: BTreeMap::new(), keys: Vec::new(), rng: Rng(seed * 7919 + 1) };
        m.run(steps);
        assert_all_returned(&a);
    }
}

#[test]
fn shadow_model_test_geometry() {
    model::<TestGeo>(4096, 0..8, steps(4000));
}

#[test]
#[cfg_attr(miri, ignore = "2 MiB segments are slow under Miri; TestGeo covers the same code")]
fn shadow_model_server_geometry() {
    model::<Server>(4096, 100..104, 3000);
}

#[test]
fn shadow_model_tiny_geometry() {
    model::<crate::testing::TinyGeo>(256, 200..204, steps(3000));
}
