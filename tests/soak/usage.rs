//! What the soak measures of the agent: its fds, resident memory and
//! threads (from /proc), and its heap (from its /metrics).

use crate::common::Agent;

/// What a process holds: fds, resident memory (KiB) and threads.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)] // rss and file are only printed
pub struct Usage {
    pub fds: usize,
    /// VmRSS: anon + file-backed.
    pub rss: u64,
    /// RssAnon: heap, stacks; what a leak grows.
    pub anon: u64,
    /// RssFile: pages of the agent's binary and libraries that ran (the
    /// kernel drops them under pressure and reads them back).
    pub file: u64,
    pub threads: usize,
}

pub fn usage(pid: i32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let val = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        fds,
        rss: val("VmRSS:"),
        anon: val("RssAnon:"),
        file: val("RssFile:"),
        threads: val("Threads:") as usize,
    }
}

/// The agent's heap (live: allocated and not freed, counted by the
/// agent's allocator; in use and held, as glibc counts them), in KiB,
/// from its /metrics: RSS cannot tell a leak from memory the allocator keeps.
pub async fn heap(a: &Agent) -> (u64, u64, u64) {
    let (_, body) = a
        .client
        .raw("GET", "/metrics", None)
        .await
        .expect("/metrics");
    let text = String::from_utf8_lossy(&body).into_owned();
    let gauge = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    (
        gauge("hydra_agent_heap_live_bytes") >> 10,
        gauge("hydra_agent_heap_in_use_bytes") >> 10,
        gauge("hydra_agent_heap_held_bytes") >> 10,
    )
}
