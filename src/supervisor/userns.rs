//! Host id ranges for containers with `userns: true`: each gets
//! [`USERNS_SIZE`] ids of its own, recorded in its container record (so they
//! survive agent restarts) and never given to another while it exists.

use crate::config::SecurityConfig;
use crate::model::USERNS_SIZE;
use std::collections::BTreeSet;
use std::sync::Mutex;

pub struct UidRanges {
    start: u32,
    count: u32,
    /// First ids of the ranges in use (also ones outside today's settings,
    /// from records made under other settings).
    used: Mutex<BTreeSet<u32>>,
}

impl UidRanges {
    pub fn new(cfg: &SecurityConfig) -> UidRanges {
        UidRanges {
            start: cfg.userns_uid_start,
            count: cfg.userns_ranges,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    /// Takes the lowest free range; None when all are in use.
    pub fn allocate(&self) -> Option<u32> {
        let mut used = self.used.lock().unwrap();
        let base = (0..self.count)
            .map(|i| self.start + i * USERNS_SIZE)
            .find(|&b| !overlaps(&used, b))?;
        used.insert(base);
        Some(base)
    }

    /// Records a range found in a container record.
    pub fn mark(&self, base: u32) {
        self.used.lock().unwrap().insert(base);
    }

    pub fn release(&self, base: u32) {
        self.used.lock().unwrap().remove(&base);
    }
}

fn overlaps(used: &BTreeSet<u32>, b: u32) -> bool {
    let lo = b.saturating_sub(USERNS_SIZE - 1);
    let hi = b.saturating_add(USERNS_SIZE - 1);
    used.range(lo..=hi).next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(count: u32) -> UidRanges {
        UidRanges::new(&SecurityConfig {
            userns_uid_start: 1 << 20,
            userns_ranges: count,
            ..Default::default()
        })
    }

    #[test]
    fn disjoint_until_exhausted_and_reused_after_release() {
        let r = ranges(3);
        let a = r.allocate().unwrap();
        let b = r.allocate().unwrap();
        let c = r.allocate().unwrap();
        assert_eq!(
            (a, b, c),
            (
                1 << 20,
                (1 << 20) + USERNS_SIZE,
                (1 << 20) + 2 * USERNS_SIZE
            )
        );
        assert_eq!(r.allocate(), None);
        r.release(b);
        assert_eq!(r.allocate(), Some(b));
    }

    proptest::proptest! {
        /// Ranges never overlap, a released one is free again, and ranges
        /// marked from records (at any base) are never handed out.
        #[test]
        fn never_overlapping(
            marked in proptest::collection::vec((1u32 << 20)..(1 << 20) + 6 * USERNS_SIZE, 0..3),
            ops in proptest::collection::vec(proptest::option::of(0usize..8), 0..40),
        ) {
            let r = ranges(5);
            let mut held: Vec<u32> = marked.clone();
            for b in &marked {
                r.mark(*b);
            }
            for op in ops {
                match op {
                    None => if let Some(b) = r.allocate() {
                        for h in &held {
                            proptest::prop_assert!(b.abs_diff(*h) >= USERNS_SIZE, "{b} overlaps {h}");
                        }
                        held.push(b);
                    },
                    Some(i) if held.len() > marked.len() => {
                        let k = marked.len() + i % (held.len() - marked.len());
                        r.release(held.remove(k));
                    }
                    Some(_) => {}
                }
            }
        }
    }

    #[test]
    fn a_recorded_range_is_never_given_again_even_unaligned() {
        let r = ranges(3);
        // a record made under other settings, straddling the first two ranges
        r.mark((1 << 20) + 100);
        assert_eq!(r.allocate(), Some((1 << 20) + 2 * USERNS_SIZE));
        assert_eq!(r.allocate(), None);
    }
}
