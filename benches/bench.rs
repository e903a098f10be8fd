//! Benchmarks driven by `scripts/bench` (not a timed test):
//!   start  AGENT_SOCKET RUNC_BUNDLE ROOTFS_IMAGE N  -> full cycle and create+start, hydra vs runc
//!   memory AGENT_SOCKET AGENT_PID IMAGE N           -> agent RSS idle, PSS of agent + shims at N containers
//!   stats  AGENT_SOCKET PARENT IMAGE SIZES PASSES   -> sampler CPU per container-sample at each size
//!   scale  AGENT_SOCKET AGENT_PID IMAGE SIZES PROBES -> create and API latency, RSS, as the host fills
//!   ready  AGENT_SOCKET N                          -> returns once the agent lists N running
//!   layers STATE N                                 -> the storage mechanisms' part of a create
//!   pki DIR; api SOCKET URL PKI IMAGE AGENT_PID ROUNDS -> the TCP API against the socket (bench/api.rs)
//! Prints a Markdown table.

#[path = "bench/api.rs"]
mod api;
#[path = "bench/layers.rs"]
mod layers;
#[path = "bench/scale.rs"]
mod scale;

use hydra_agent::api::client::Client;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn kb(pid: i32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Full cycles (create+start, wait, delete) through the API; returns
/// (full, create+start) durations in ms.
async fn hydra_cycles(c: &Client, image: &str, n: usize, userns: bool) -> (Vec<f64>, Vec<f64>) {
    let (mut full, mut create) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let name = format!("bench-{i}");
        let spec = serde_json::to_vec(&serde_json::json!({
            "name": name, "image": image, "command": ["/bin/true"], "userns": userns
        }))
        .unwrap();
        let t0 = Instant::now();
        let (st, body) = c.raw("POST", "/v1/containers", Some(spec)).await.unwrap();
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
        let t1 = Instant::now();
        let (st, _) = c
            .raw("GET", &format!("/v1/containers/{name}/wait"), None)
            .await
            .unwrap();
        assert_eq!(st, 200);
        let (st, _) = c
            .raw("DELETE", &format!("/v1/containers/{name}"), None)
            .await
            .unwrap();
        assert_eq!(st, 204);
        if i >= 5 {
            create.push(ms(t1 - t0));
            full.push(ms(t0.elapsed()));
        }
    }
    (full, create)
}

async fn start(sock: &str, bundle: &str, image: &str, n: usize) {
    let c = Client::new(sock);
    let (full, create) = hydra_cycles(&c, image, n, false).await;
    let (ufull, ucreate) = hydra_cycles(&c, image, n, true).await;
    let runtimes: Vec<String> = std::env::var("BENCH_RUNTIMES")
        .unwrap_or_else(|_| "runc".into())
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut results = vec![
        ("hydra-agent".to_string(), full, create),
        ("hydra-agent, userns: true".to_string(), ufull, ucreate),
    ];
    for rt in &runtimes {
        let (mut rfull, mut rcreate) = (Vec::new(), Vec::new());
        for i in 0..n + 5 {
            let id = format!("hydra-bench-{rt}-{i}");
            let t0 = Instant::now();
            let st = Command::new(rt)
                .args(["run", "--bundle", bundle, &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{rt} run");
            let full_t = t0.elapsed();
            // create+start alone: a detached run returns once the process has started
            let t0 = Instant::now();
            let st = Command::new(rt)
                .args(["run", "--detach", "--bundle", bundle, &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "{rt} run --detach");
            let create_t = t0.elapsed();
            let _ = Command::new(rt).args(["delete", "--force", &id]).status();
            if i >= 5 {
                rfull.push(ms(full_t));
                rcreate.push(ms(create_t));
            }
        }
        results.push((rt.clone(), rfull, rcreate));
    }
    let base_full = pct(&mut results[0].1.clone(), 0.5);
    let base_create = pct(&mut results[0].2.clone(), 0.5);
    println!("| {n} cycles, busybox /bin/true | full cycle p50 ms | p99 ms | create+start p50 ms | p99 ms | hydra/this (full p50) | hydra/this (create+start p50) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, f, c) in results.iter_mut() {
        let (fp50, fp99, cp50, cp99) = (pct(f, 0.5), pct(f, 0.99), pct(c, 0.5), pct(c, 0.99));
        println!(
            "| {name} | {fp50:.1} | {fp99:.1} | {cp50:.1} | {cp99:.1} | {:.2} | {:.2} |",
            base_full / fp50,
            base_create / cp50
        );
    }
}

async fn memory(sock: &str, agent_pid: i32, image: &str, n: usize) {
    let c = Client::new(sock);
    let idle_rss = kb(agent_pid, "status", "VmRSS:");
    let idle_pss = kb(agent_pid, "smaps_rollup", "Pss:");
    for i in 0..n {
        let spec = serde_json::to_vec(&serde_json::json!({"name": format!("mem-{i}"), "image": image, "command": ["sleep", "3600"]})).unwrap();
        let (st, body) = c.raw("POST", "/v1/containers", Some(spec)).await.unwrap();
        assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    }
    let list: Vec<hydra_agent::api::ContainerInfo> = c.list().await.unwrap();
    let shims: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .unwrap_or_default()
                .trim()
                == "hydra-shim"
        })
        .collect();
    let agent_pss = kb(agent_pid, "smaps_rollup", "Pss:");
    let shim_pss: u64 = shims.iter().map(|p| kb(*p, "smaps_rollup", "Pss:")).sum();
    let shim_rss: u64 = shims.iter().map(|p| kb(*p, "status", "VmRSS:")).sum();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| agent RSS, idle | {:.1} MiB |", idle_rss as f64 / 1024.0);
    println!("| agent PSS, idle | {:.1} MiB |", idle_pss as f64 / 1024.0);
    println!(
        "| containers running | {} ({} shims) |",
        list.iter().filter(|c| c.state == "running").count(),
        shims.len()
    );
    println!(
        "| agent PSS at {n} containers | {:.1} MiB |",
        agent_pss as f64 / 1024.0
    );
    println!(
        "| shims PSS total / per container | {:.1} MiB / {:.0} KiB |",
        shim_pss as f64 / 1024.0,
        shim_pss as f64 / n as f64
    );
    println!(
        "| shims RSS per container (shared pages counted in each) | {:.0} KiB |",
        shim_rss as f64 / n as f64
    );
    println!(
        "| (agent + shims PSS - idle agent PSS) per container | {:.0} KiB |",
        (agent_pss + shim_pss).saturating_sub(idle_pss) as f64 / n as f64
    );
}

async fn adopt(sock: &str, n: usize) {
    // the agent was just restarted: time until it lists every container as running
    let c = Client::new(sock);
    let t0 = Instant::now();
    loop {
        if let Ok(list) = c.list().await {
            if list.iter().filter(|c| c.state == "running").count() >= n {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!("| re-adopt {n} running containers after SIGKILL (first answer listing all) | {:.0} ms after the socket answered |", ms(t0.elapsed()));
}

/// Firewall costs with N mappings installed; run inside a fresh network
/// namespace (scripts/bench net does `unshare --net`).
fn net(sizes: &[usize], reps: usize, gap_ms: u64) {
    use hydra_agent::model::Cidr;
    use hydra_agent::network::driver::FirewallDriver;
    use hydra_agent::network::firewall::{self, Mapping, Spec};
    let ipt = hydra_agent::network::iptables::Iptables;
    let mapping = |i: usize| Mapping {
        host_port: 20000 + 2 * (i % 20000) as u16, // even ports; odd ones free
        ip: std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(172, 17, 0, 2)) + i as u32),
        container_port: 8080,
    };
    let spec = |n: usize| Spec {
        bridge: "hbench0".into(),
        subnet: Cidr::parse("172.17.0.0/16").unwrap(),
        allowlist: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        mappings: (0..n).map(mapping).collect(),
        host_ports: vec![],
        egress_allow: vec![],
        ours: None,
    };
    println!("| mappings installed | full resync (whole rule set, one restore) ms | add one mapping p50 / p99 ms | remove one mapping p50 / p99 ms |");
    println!("|---|---|---|---|");
    for &n in sizes {
        let t0 = Instant::now();
        ipt.apply_all(&spec(n)).expect("apply");
        let resync = ms(t0.elapsed());
        let (mut add, mut del) = (Vec::new(), Vec::new());
        let installed = spec(n).mappings;
        for r in 0..reps {
            // a free port in an existing bucket half the time, a new bucket else
            let host_port = if r % 2 == 0 && n > 0 {
                20_001 + 2 * ((r * 37) % n) as u16
            } else {
                50_001 + 64 * (r % 200) as u16
            };
            let m = Mapping {
                host_port,
                ..mapping(r)
            };
            // apart, as changes come in real use: a removal's release (an
            // RCU grace period in the kernel) ends before the next change
            std::thread::sleep(std::time::Duration::from_millis(gap_ms));
            let t = Instant::now();
            let (input, _) = firewall::render_change(&installed, std::slice::from_ref(&m), &[]);
            ipt.apply_change(&input).expect("add");
            add.push(ms(t.elapsed()));
            let mut with = installed.clone();
            with.push(m.clone());
            std::thread::sleep(std::time::Duration::from_millis(gap_ms));
            let t = Instant::now();
            let (input, _) = firewall::render_change(&with, &[], std::slice::from_ref(&m));
            ipt.apply_change(&input).expect("remove");
            del.push(ms(t.elapsed()));
        }
        println!(
            "| {n} | {resync:.1} | {:.1} / {:.1} | {:.1} / {:.1} |",
            pct(&mut add, 0.5),
            pct(&mut add, 0.99),
            pct(&mut del, 0.5),
            pct(&mut del, 0.99)
        );
    }
}

/// The veth/IP part of a start, alone: what the container's init does
/// (veth created in its new netns with the peer in the host's, bridge port,
/// isolation, address, route). Run inside a fresh network namespace.
fn veth(n: usize) {
    use hydra_agent::network::netlink::Netlink;
    use hydra_agent::network::NetLaunch;
    let mut host = Netlink::new().expect("netlink");
    host.create_bridge("hbench0").expect("bridge");
    let bidx = host.link_index("hbench0").unwrap().expect("bridge index");
    host.set_up(bidx, None).unwrap();
    let host_ns = std::fs::File::open("/proc/self/ns/net").unwrap();
    let mut times = Vec::new();
    for i in 0..n + 5 {
        let launch = NetLaunch {
            ip: std::net::Ipv4Addr::new(172, 17, (i / 250) as u8, (i % 250 + 2) as u8),
            prefix: 16,
            gateway: std::net::Ipv4Addr::new(172, 17, 0, 1),
            bridge_index: bidx,
            host_ifname: format!("hyb{i}"),
            resolv_conf: String::new(),
        };
        let fd = host_ns.try_clone().unwrap();
        // a thread of its own: its network namespace dies with it
        let took = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let mut h = Netlink::new().expect("host netlink");
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let t = Instant::now();
            hydra_agent::runtime::init::setup_network(&launch, &mut h, fd.as_fd(), None)
                .expect("setup");
            ms(t.elapsed())
        })
        .join()
        .unwrap();
        if i >= 5 {
            times.push(took);
        }
    }
    println!(
        "| veth/IP part of a start (N={n}) | p50 {:.2} ms | p99 {:.2} ms |",
        pct(&mut times, 0.5),
        pct(&mut times, 0.99)
    );
}

/// `name value` of an unlabelled series in /metrics.
async fn metric(c: &Client, name: &str) -> f64 {
    let (_, body) = c.raw("GET", "/metrics", None).await.unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The sampler's CPU time per container per sample at each size (read from
/// the agent's own counters over `passes` passes at a 1 s interval), beside
/// the same reads done by re-opening the files each time (what a reader by
/// path does), measured in this process on the same cgroups.
async fn stats(sock: &str, parent: &str, image: &str, sizes: &[usize], passes: u64) {
    use hydra_agent::cgroup::StatFiles;
    let c = Client::new(sock);
    let layout = hydra_agent::cgroup::detect().unwrap();
    println!("| containers | agent sampler CPU per container-sample | wall per pass | re-opening the files per sample (this process) | ratio |");
    println!("|---|---|---|---|---|");
    let mut made = 0;
    for &n in sizes {
        while made < n {
            let spec = serde_json::to_vec(&serde_json::json!({"name": format!("stat-{made}"), "image": image, "command": ["sleep", "3600"]})).unwrap();
            let (st, body) = c.raw("POST", "/v1/containers", Some(spec)).await.unwrap();
            assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
            made += 1;
        }
        // let a pass see them all, then count over `passes` passes
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (cpu0, n0) = (
            metric(&c, "hydra_stats_cpu_seconds_total").await,
            metric(&c, "hydra_stats_samples_total").await,
        );
        tokio::time::sleep(Duration::from_secs(passes)).await;
        let (cpu1, n1) = (
            metric(&c, "hydra_stats_cpu_seconds_total").await,
            metric(&c, "hydra_stats_samples_total").await,
        );
        let wall = metric(&c, "hydra_stats_pass_seconds").await;
        let per = (cpu1 - cpu0) * 1e6 / (n1 - n0).max(1.0);
        let cgs: Vec<_> = (0..n)
            .map(|i| layout.container(parent, &format!("stat-{i}")))
            .collect();
        let t0 = hydra_agent::telemetry::sampler::thread_cpu_us();
        let reps = 5;
        for _ in 0..reps {
            for cg in &cgs {
                std::hint::black_box(StatFiles::open(cg).read());
            }
        }
        let naive =
            (hydra_agent::telemetry::sampler::thread_cpu_us() - t0) as f64 / (reps * n) as f64;
        println!(
            "| {n} | {per:.1} µs | {:.1} ms | {naive:.1} µs | {:.1}x |",
            wall * 1e3,
            naive / per
        );
    }
    for i in 0..made {
        let _ = c
            .raw(
                "DELETE",
                &format!("/v1/containers/stat-{i}?force=true"),
                None,
            )
            .await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("start") => start(&a[2], &a[3], &a[4], a[5].parse().unwrap()).await,
        Some("memory") => memory(&a[2], a[3].parse().unwrap(), &a[4], a[5].parse().unwrap()).await,
        Some("adopt") => adopt(&a[2], a[3].parse().unwrap()).await,
        Some("scale") => {
            let sizes: Vec<usize> = a[5].split(',').map(|s| s.parse().unwrap()).collect();
            scale::scale(
                &a[2],
                a[3].parse().unwrap(),
                &a[4],
                &sizes,
                a[6].parse().unwrap(),
            )
            .await
        }
        Some("pki") => api::make_pki(std::path::Path::new(&a[2])),
        Some("api") => {
            api::api(
                &a[2],
                &a[3],
                std::path::Path::new(&a[4]),
                &a[5],
                a[6].parse().unwrap(),
                a[7].parse().unwrap(),
            )
            .await
        }
        Some("ready") => scale::ready(&a[2], a[3].parse().unwrap()).await,
        Some("layers") => layers::layers(std::path::Path::new(&a[2]), a[3].parse().unwrap()),
        Some("veth") => veth(a[2].parse().unwrap()),
        Some("stats") => {
            let sizes: Vec<usize> = a[5].split(',').map(|n| n.parse().unwrap()).collect();
            stats(&a[2], &a[3], &a[4], &sizes, a[6].parse().unwrap()).await
        }
        Some("net") => net(
            &a[2]
                .split(',')
                .map(|n| n.parse().unwrap())
                .collect::<Vec<_>>(),
            a[3].parse().unwrap(),
            a.get(4).map_or(0, |g| g.parse().unwrap()),
        ),
        _ => eprintln!("usage: see scripts/bench"),
    }
}
