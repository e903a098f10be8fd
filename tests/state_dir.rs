//! A read-only or vanished state directory costs writes, never the agent
//! or a tenant's process: the agent starts and serves, keeps supervising
//! what runs (exits kept in memory, written once it can), answers creates
//! with an error naming the directory, leaves nothing, and recovers.

mod common;
use common::*;
use serde_json::json;

async fn create_fails(a: &Agent, name: &str, status: u16, code: &str, names: &str) {
    let spec = json!({"name": name, "image": busybox(), "command": ["true"]});
    let (st, body) = a
        .client
        .raw(
            "POST",
            "/v1/containers",
            Some(serde_json::to_vec(&spec).unwrap()),
        )
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(st, status, "{body}");
    assert!(body.contains(code) && body.contains(names), "{body}");
    assert!(!Agent::layout()
        .children(&a.parent)
        .contains(&name.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_or_vanished_state_dir_costs_writes_not_processes() {
    require_root!();
    let mut a = Agent::start("").await;
    let keeper = a
        .run(json!({"name": "keeper", "image": busybox(), "command": ["sleep", "1000"]}))
        .await
        .unwrap();
    let s = a.state().display().to_string();
    // read-only, the agent restarted onto it: it starts, adopts, serves
    a.kill9();
    a.host.sh(&format!(
        "mount --bind {s} {s} && mount -o remount,bind,ro {s}"
    ));
    a.spawn().await;
    let k = a.inspect("keeper").await;
    assert_eq!((k.state.as_str(), k.pid), ("running", keeper.pid));
    create_fails(&a, "late", 503, "read_only", &s).await;
    assert!(!a.state().join("containers/late").exists());
    // an exit while read-only: reported now, written once writable
    a.client
        .send::<serde_json::Value>(&Request::Kill {
            name: "keeper".into(),
            signal: 9,
        })
        .await
        .unwrap();
    assert_eq!(a.wait("keeper").await.signal, Some(9));
    assert!(a.child.as_mut().unwrap().try_wait().unwrap().is_none());
    a.host
        .sh(&format!("mount -o remount,bind,rw {s} && umount {s}"));
    let rec = a.state().join("containers/keeper/container.json");
    eventually(30, "the exit written once writable", async || {
        std::fs::read_to_string(&rec).is_ok_and(|t| t.contains("\"signal\": 9"))
    })
    .await;
    // it ends after the directory of records is gone (below): its exit is
    // recorded then, and must not make the directory anew
    a.run(json!({"name": "late", "image": busybox(), "command": ["sleep", "2"]}))
        .await
        .unwrap();

    // vanished (renamed away, as an unmounted volume would): no create
    // writes into whatever is there now; back in place, all is well
    let containers = a.state().join("containers");
    let away = a.state().join("containers.away");
    std::fs::rename(&containers, &away).unwrap();
    create_fails(
        &a,
        "lost",
        503,
        "state_gone",
        &containers.display().to_string(),
    )
    .await;
    eventually(
        30,
        "late's exit, recorded while the directory is away",
        async || a.inspect("late").await.state == "exited",
    )
    .await;
    assert!(
        !containers.exists(),
        "nothing made in its place: {:?}",
        std::process::Command::new("find")
            .arg(&containers)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    );
    assert_eq!(a.client.list().await.unwrap().len(), 2, "still served");
    std::fs::rename(&away, &containers).unwrap();
    a.run(json!({"name": "lost", "image": busybox(), "command": ["true"]}))
        .await
        .unwrap();
    assert!(a.child.as_mut().unwrap().try_wait().unwrap().is_none());
}
