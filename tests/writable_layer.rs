//! The writable layer, an overlay mounted `volatile` (no syncfs of the state
//! filesystem at each exit): whole across the runs of a container and the
//! agent's restarts in one boot; emptied, with a `layer_reset` event, when
//! the host went down before it was synced.

mod common;
use common::*;
use serde_json::json;

/// Starts the stopped container once more and answers the lines it logged.
async fn run_again(a: &Agent, name: &str) -> Vec<String> {
    a.client
        .send::<serde_json::Value>(&Request::Start(name.into()))
        .await
        .unwrap();
    assert_eq!(a.wait(name).await.exit_code, Some(0));
    lines(a, name).await
}

async fn lines(a: &Agent, name: &str) -> Vec<String> {
    a.logs(name)
        .await
        .into_iter()
        .filter(|r| r.stream == "stdout")
        .map(|r| r.line)
        .collect()
}

fn journal_mentions(a: &Agent, what: &str) -> bool {
    std::fs::read_dir(a.state().join("events"))
        .unwrap()
        .flatten()
        .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(what)))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writable_layer_lives_for_one_boot() {
    require_root!();
    // the overlay's dirs on the state filesystem itself (no storage
    // limits; tests/disk_limits.rs has the layer on its own image)
    let mut a = Agent::start("[storage]\nmechanism = \"none\"\nrequire_limits = false\n").await;
    // each run prints what the previous runs left, then adds a line
    let spec = json!({"name": "scratch", "image": busybox(),
        "command": ["sh", "-c", "echo \"runs before: $(cat /kept 2>/dev/null | wc -l)\"; echo x >> /kept"]});
    a.run(spec).await.unwrap();
    assert_eq!(a.wait("scratch").await.exit_code, Some(0));
    let work = a.state().join("containers/scratch/work");
    let marker = work.join("work/incompat/volatile");
    assert!(marker.exists(), "the overlay is not mounted volatile");

    // another run in this boot: overlayfs would refuse the marked dirs;
    // the agent clears the marker and the layer is whole
    assert_eq!(
        run_again(&a, "scratch").await,
        ["runs before: 0", "runs before: 1"]
    );
    // the agent killed and started again in the same boot: nothing reset
    a.kill9();
    a.spawn().await;
    assert_eq!(
        run_again(&a, "scratch").await.last().unwrap(),
        "runs before: 2"
    );
    assert!(!journal_mentions(&a, "layer_reset"));

    // the host "rebooted" (the boot recorded is another one) while the layer
    // was unsynced: emptied once, at the agent's start, and said so
    a.kill9();
    std::fs::write(a.state().join("boot_id"), "00000000-previous-boot\n").unwrap();
    a.spawn().await;
    assert!(journal_mentions(&a, "layer_reset"), "no layer_reset event");
    let upper = a.state().join("containers/scratch/upper");
    assert_eq!(std::fs::read_dir(&upper).unwrap().count(), 0);
    assert_eq!(
        run_again(&a, "scratch").await.last().unwrap(),
        "runs before: 0"
    );
    // and the boot is recorded: the next restart resets nothing
    a.kill9();
    a.spawn().await;
    assert_eq!(
        run_again(&a, "scratch").await.last().unwrap(),
        "runs before: 1"
    );
}
