//! Real runtimes from Debian's packages (`scripts/build-runtimes` builds
//! the rootfs once) see the limits of the container they run in: OpenJDK 17
//! reports the memory limit and CPU count, Node the constrained memory, and
//! a Python app serves HTTP on 8080 behind a host port with its heartbeat.

mod common;
use common::*;
use serde_json::json;

const CENTRAL: &str = "10.99.1.0/24";

/// The runtimes' rootfs: made by the script on the host, carried into the VM
/// by scripts/vm.
fn rootfs() -> String {
    let dir = repo().join(".cache/runtimes/rootfs");
    // not usr/bin/java: an absolute link, resolved against this host's /etc
    if !dir
        .join("usr/lib/jvm/java-17-openjdk-amd64/bin/java")
        .exists()
    {
        let st = std::process::Command::new(repo().join("scripts/build-runtimes"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run scripts/build-runtimes");
        assert!(st.success(), "scripts/build-runtimes failed");
    }
    format!("rootfs:{}", dir.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn java_and_node_see_the_containers_limits() {
    require_root!();
    let image = rootfs();
    let a = Agent::start("[network]\nenabled = false\n").await;
    let limits = json!({"memory": "256Mi", "cpus": 0.5});
    let java = output(
        &a,
        "java",
        json!({"image": image, "limits": limits, "command": ["java", "-XshowSettings:system", "-version"]}),
    )
    .await
    .join("\n");
    assert!(java.contains("Provider: cgroupv"), "{java}");
    assert!(java.contains("Effective CPU Count: 1"), "{java}");
    assert!(java.contains("Memory Limit: 256.00M"), "{java}");
    let heap = output(
        &a,
        "heap",
        json!({"image": image, "limits": limits, "command": ["java", "-XX:+PrintFlagsFinal", "-version"]}),
    )
    .await;
    let max_heap: u64 = heap
        .iter()
        .find(|l| l.contains(" MaxHeapSize "))
        .and_then(|l| l.split('=').nth(1)?.split_whitespace().next()?.parse().ok())
        .expect("MaxHeapSize");
    assert!(
        max_heap <= 256 << 20,
        "the heap is sized from the limit: {max_heap}"
    );
    let node = output(
        &a,
        "node",
        json!({"image": image, "limits": limits, "command": ["node", "-e",
               "console.log('constrained=' + process.constrainedMemory())"]}),
    )
    .await;
    if Agent::layout().mode == hydra_agent::cgroup::Mode::Hybrid {
        assert!(
            node.iter().any(|l| l == "constrained=268435456"),
            "{node:?}"
        );
    } else {
        // Debian 12's Node 18 links libuv 1.44, which reads only cgroup v1's
        // memory/memory.limit_in_bytes: on pure v2 no runtime can show it a
        // limit. What libuv >= 1.45 (Node 20+) reads instead must hold it:
        // memory.max at the root of the container's cgroup namespace.
        assert!(
            node.iter().any(|l| l == "constrained=undefined"),
            "{node:?}"
        );
        let max = output(
            &a,
            "memmax",
            json!({"image": image, "limits": limits, "command": ["cat", "/sys/fs/cgroup/memory.max"]}),
        )
        .await;
        assert_eq!(max, vec!["268435456".to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_app_serves_behind_a_host_port() {
    require_root!();
    let image = rootfs();
    let a = Agent::start(&format!("[network]\nallowlist = [\"{CENTRAL}\"]\n")).await;
    let central = a.host.peer(1);
    let app = a
        .run(json!({"name": "py", "image": image, "limits": {"memory": "128Mi"},
                    "ports": [{"container_port": 8080}],
                    "health": {"http_path": "/heartbeat", "interval_s": 1},
                    "command": ["sh", "-c", "mkdir -p /srv && cd /srv && echo alive > heartbeat && exec python3 -m http.server 8080"]}))
        .await
        .unwrap();
    let url = format!("10.99.1.1:{}", app.ports[0].host_port);
    eventually(30, "the app answers through its host port", async || {
        central.http("GET", &url, "/heartbeat", b"").0 == 200
    })
    .await;
    eventually(30, "healthy", async || {
        a.inspect("py").await.health.status == hydra_agent::model::HealthStatus::Healthy
    })
    .await;
}
