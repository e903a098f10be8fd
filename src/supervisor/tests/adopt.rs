use super::*;
use crate::model::RestartPolicy;

/// An agent crash: the supervisor's runtime is dropped with all its tasks;
/// the containers and their shims live on.
#[test]
fn a_restarted_agent_adopts_live_containers_and_records_exits_made_while_down() {
    let h = Harness::new(Config::default());
    let agent = tokio::runtime::Runtime::new().unwrap();
    let allocated = agent.block_on(async {
        let (sup, _) = h.boot().await;
        let mut spec = h.spec("keep");
        spec.ports = vec![crate::model::PortSpec {
            container_port: 8080,
            host_port: None,
        }];
        sup.create(spec).await.unwrap();
        let mut b = h.spec("died");
        b.restart.policy = RestartPolicy::No;
        sup.create(b).await.unwrap();
        sup.create(h.spec("stopped")).await.unwrap();
        sup.stop("stopped", Duration::from_secs(1)).await.unwrap();
        sup.network().unwrap().inventory().allocated
    });
    drop(agent);
    // while the agent is down: one container ends, a create is cut short
    h.rt.finish("died", Some(4), None);
    h.cg.add_stray("hydra", "half-made");
    std::fs::create_dir_all(h.paths().containers().join("half-made/upper")).unwrap();

    let agent = tokio::runtime::Runtime::new().unwrap();
    agent.block_on(async {
        let (sup, n) = h.boot().await;
        assert_eq!(n, 3);
        assert_eq!(state(&sup, "keep"), State::Running);
        let died = sup.wait("died").await.unwrap();
        assert_eq!(died.exit_code, Some(4));
        assert_eq!(state(&sup, "stopped"), State::Exited);
        assert_eq!(
            h.cg.names(),
            ["died", "keep", "stopped"],
            "the stray cgroup went"
        );
        assert_eq!(
            h.state_dirs(),
            ["died", "keep", "stopped"],
            "so did the half-made dir"
        );
        // its allocations are known again: the same port, never handed out twice
        assert_eq!(sup.network().unwrap().inventory().allocated, allocated);
        let mut other = h.spec("other");
        let port = allocated[0].1.host_port;
        other.ports = vec![crate::model::PortSpec {
            container_port: 80,
            host_port: Some(port),
        }];
        assert!(sup.create(other).await.is_err());
        // the adopted one is watched again: its exit is recorded
        h.rt.finish("keep", Some(0), None);
        assert_eq!(sup.wait("keep").await.unwrap().exit_code, Some(0));
    });
}

#[tokio::test]
async fn a_corrupt_record_is_quarantined_and_its_remains_cleaned() {
    let h = Harness::new(Config::default());
    {
        let (sup, _) = h.boot().await;
        sup.create(h.spec("good")).await.unwrap();
        sup.create(h.spec("bad")).await.unwrap();
    }
    let rec = h.paths().containers().join("bad/container.json");
    std::fs::write(&rec, b"{\"spec\": 12").unwrap();
    let (sup, n) = h.boot().await;
    assert_eq!(n, 1);
    assert!(sup.inspect("bad").is_err());
    assert_eq!(h.cg.names(), ["good"]);
    assert_eq!(
        std::fs::read_dir(h.paths().quarantine()).unwrap().count(),
        1
    );
}
