//! `layers STATE N`: the storage mechanisms' own part of a create, timed
//! without a container: take the limits, prepare the layer, make it ready
//! for a start (mount, dirs), then release it; for each mechanism that
//! works on STATE's filesystem (project_quota needs it mounted prjquota).

use super::{ms, pct};
use hydra_agent::config::{StorageConfig, StorageMechanism};
use hydra_agent::disk::Disks;
use hydra_agent::model::Limits;
use std::path::Path;
use std::time::Instant;

pub fn layers(state: &Path, n: usize) {
    println!("| {n} layers | mechanism | create part p50 ms | p99 ms | release p50 ms |");
    println!("|---|---|---|---|---|");
    for m in [StorageMechanism::ProjectQuota, StorageMechanism::Image] {
        let cfg = StorageConfig {
            mechanism: m,
            prepared_images: 0,
            ..Default::default()
        };
        let containers = state.join("bench-layers");
        std::fs::create_dir_all(&containers).unwrap();
        let disks = Disks::new(&cfg, state, &containers);
        let name = disks.mechanism().as_str();
        if name == "none" {
            println!("| | {m:?} | not available here | | |");
            continue;
        }
        let (mut made, mut gone) = (Vec::new(), Vec::new());
        for i in 0..n + 5 {
            let dir = containers.join(format!("c{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let t0 = Instant::now();
            let mut d = disks.limits_for(&Limits::default()).unwrap().unwrap();
            disks.prepare(&dir, &mut d).unwrap();
            disks.before_start(&dir, &d).unwrap();
            let t1 = Instant::now();
            disks.release(&dir, true);
            let t2 = Instant::now();
            std::fs::remove_dir_all(&dir).unwrap();
            if i >= 5 {
                made.push(ms(t1 - t0));
                gone.push(ms(t2 - t1));
            }
        }
        let (p50, p99, r50) = (
            pct(&mut made.clone(), 0.5),
            pct(&mut made, 0.99),
            pct(&mut gone, 0.5),
        );
        println!("| | {name} | {p50:.2} | {p99:.2} | {r50:.2} |");
        let _ = std::fs::remove_dir_all(&containers);
    }
}
