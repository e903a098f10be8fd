//! `hydractl stats`: one snapshot (totals), or a live view (`--watch`)
//! with rates between samples: CPU %, memory, pids, IO per second.

use super::output::{fmt_bytes, print_json, table};
use crate::api::client::{Client, ClientError};
use crate::cgroup::Stats;
use std::time::{Duration, Instant};

pub async fn stats(
    c: &Client,
    name: &str,
    json: bool,
    watch: bool,
    interval: Duration,
) -> Result<(), ClientError> {
    let mut prev: Option<(Instant, Stats)> = None;
    loop {
        let v = c.stats(name).await?;
        let now = Instant::now();
        if json {
            // one object per line in the live view (NDJSON)
            match watch {
                true => println!("{}", serde_json::to_string(&v).expect("serializes")),
                false => print_json(&v),
            }
        } else if !watch {
            print_totals(&v);
        } else {
            redraw(
                name,
                interval,
                &v,
                prev.as_ref().map(|(t, p)| (now.duration_since(*t), p)),
            );
        }
        if !watch {
            return Ok(());
        }
        prev = Some((now, v));
        tokio::time::sleep(interval).await;
    }
}

/// The one-snapshot table: totals since the container started.
fn print_totals(v: &Stats) {
    table(vec![
        [
            "CPU(s)",
            "THROTTLED",
            "MEMORY",
            "PEAK",
            "LIMIT",
            "PIDS",
            "OOM KILLS",
            "DISK",
            "FILES",
        ]
        .map(String::from)
        .to_vec(),
        vec![
            format!("{:.3}", v.cpu.usage_usec as f64 / 1e6),
            v.cpu.nr_throttled.to_string(),
            v.memory.current.to_string(),
            v.memory.peak.map_or("-".into(), |p| p.to_string()),
            fmt_bytes(v.memory.max),
            pids(v),
            v.memory.oom_kill.to_string(),
            disk(v),
            files(v),
        ],
    ]);
}

/// `used/limit` of the writable layer; `-` when it is not limited.
fn disk(v: &Stats) -> String {
    v.disk.as_ref().map_or("-".into(), |d| {
        format!("{}/{}", human(d.used as f64), human(d.limit as f64))
    })
}

fn files(v: &Stats) -> String {
    v.disk.as_ref().map_or("-".into(), |d| {
        format!("{}/{}", d.inodes_used, d.inodes_limit)
    })
}

/// One frame of the live view: the screen cleared and the table redrawn,
/// rates over the time since `prev` (the last sample), zero for the first.
fn redraw(name: &str, interval: Duration, v: &Stats, prev: Option<(Duration, &Stats)>) {
    let rate = |f: &dyn Fn(&Stats) -> u64| match prev {
        Some((elapsed, p)) => {
            let dt = elapsed.as_secs_f64().max(1e-3);
            f(v).saturating_sub(f(p)) as f64 / dt
        }
        None => 0.0,
    };
    let cpu_pct = rate(&|s| s.cpu.usage_usec) / 1e4;
    let rd = rate(&|s| s.io.iter().map(|d| d.rbytes).sum());
    let wr = rate(&|s| s.io.iter().map(|d| d.wbytes).sum());
    // clear the screen and redraw
    print!("\x1b[H\x1b[2J");
    println!(
        "{name}  (every {:.1}s, Ctrl-C to stop)\n",
        interval.as_secs_f64()
    );
    table(vec![
        [
            "CPU %",
            "MEMORY",
            "LIMIT",
            "PIDS",
            "READ/s",
            "WRITE/s",
            "THROTTLED",
            "OOM KILLS",
        ]
        .map(String::from)
        .to_vec(),
        vec![
            format!("{cpu_pct:.1}"),
            human(v.memory.current as f64),
            v.memory.max.map_or("-".into(), |m| human(m as f64)),
            pids(v),
            human(rd),
            human(wr),
            v.cpu.nr_throttled.to_string(),
            v.memory.oom_kill.to_string(),
        ],
    ]);
}

fn pids(v: &Stats) -> String {
    format!(
        "{}/{}",
        v.pids.current,
        v.pids.max.map_or("max".into(), |m| m.to_string())
    )
}

/// Bytes, rounded: `512`, `1.5Ki`, `50.0Mi`, `2.0Gi`.
fn human(b: f64) -> String {
    match b {
        b if b >= (1u64 << 60) as f64 => "max".into(),
        b if b >= (1 << 30) as f64 => format!("{:.1}Gi", b / (1 << 30) as f64),
        b if b >= (1 << 20) as f64 => format!("{:.1}Mi", b / (1 << 20) as f64),
        b if b >= 1024.0 => format!("{:.1}Ki", b / 1024.0),
        b => format!("{b:.0}"),
    }
}
