//! The record that makes a container exist is fsynced while its first start
//! runs, and says `created` until the running record replaces it. Found
//! `created` after a crash of the agent in the same boot, the create never
//! answered: everything of it is swept. Found after a reboot, it may have
//! been answered: the container is kept, and started if its restart policy
//! asks.

mod common;
use common::*;
use serde_json::{json, Value};

/// Rewrites `name`'s record as the durable one written while its first
/// start ran (state `created`, no run).
fn as_written_before_the_start(a: &Agent, name: &str) {
    let path = a
        .state()
        .join("containers")
        .join(name)
        .join("container.json");
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(rec["state"], "running", "{rec}");
    rec["state"] = json!("created");
    for k in ["pid", "pid_start", "shim_pid", "shim_start", "started_at"] {
        assert!(rec.get(k).is_some(), "the record has no {k}: {rec}");
        rec[k] = Value::Null;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
}

fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_cut_short_in_this_boot_is_swept() {
    require_root!();
    let mut a = Agent::start("[network]\nport_range = \"21400-21409\"\n").await;
    let c = a
        .run(
            json!({"name": "half", "image": busybox(), "command": ["sleep", "100000"],
                    "restart": {"policy": "always"}, "ports": [{"container_port": 8080}]}),
        )
        .await
        .unwrap();
    let pid = c.pid.unwrap();
    let ports: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
    assert_eq!(ports.free, 9);
    // the agent died after the durable record, before the running one
    a.kill9();
    as_written_before_the_start(&a, "half");
    assert!(alive(pid));
    a.spawn().await;

    let (st, _) = a
        .client
        .raw("GET", "/v1/containers/half", None)
        .await
        .unwrap();
    assert_eq!(st, 404, "a create that never answered is not a container");
    assert!(!alive(pid), "its process was left running");
    assert!(!Agent::layout()
        .children(&a.parent)
        .contains(&"half".to_string()));
    assert!(!a.state().join("containers/half").exists());
    let ports: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
    assert_eq!(ports.free, 10, "its host port is free again");
    eventually(10, "its shim gone", async || {
        processes_mentioning(&a.state().join("containers/half")).is_empty()
    })
    .await;
    assert!(a.log().contains("a create cut short"), "{}", a.log());
    // and the name can be used again
    a.run(json!({"name": "half", "image": busybox(), "command": ["true"]}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_found_after_a_reboot_is_kept() {
    require_root!();
    let mut a = Agent::start("").await;
    let mut pids = Vec::new();
    for (name, policy) in [("always", "always"), ("never", "no")] {
        let c = a
            .run(
                json!({"name": name, "image": busybox(), "command": ["sleep", "100000"],
                        "restart": {"policy": policy}}),
            )
            .await
            .unwrap();
        pids.push(c.pid.unwrap());
    }
    // the host went down: the agent and every container's process with it
    a.kill9();
    for pid in &pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL)
            .unwrap();
    }
    eventually(10, "the shims gone", async || {
        processes_mentioning(&a.state().join("containers")).is_empty()
    })
    .await;
    // ... before the running records reached the disk
    for name in ["always", "never"] {
        as_written_before_the_start(&a, name);
    }
    std::fs::write(a.state().join("boot_id"), "00000000-previous-boot\n").unwrap();
    a.spawn().await;

    eventually(10, "the container started by its policy", async || {
        a.inspect("always").await.state == "running"
    })
    .await;
    let c = a.inspect("always").await;
    assert!(alive(c.pid.unwrap()) && !pids.contains(&c.pid.unwrap()));
    assert_eq!(a.inspect("never").await.state, "created");
    // a created container starts on request, and goes like any other
    let (st, body) = a
        .client
        .raw("POST", "/v1/containers/never/start", None)
        .await
        .unwrap();
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(a.inspect("never").await.state, "running");
    for name in ["always", "never"] {
        let (st, _) = a
            .client
            .raw("DELETE", &format!("/v1/containers/{name}?force=true"), None)
            .await
            .unwrap();
        assert_eq!(st, 204);
    }
}
