use super::*;
use crate::model::{HealthSpec, HealthStatus, PortSpec, RestartPolicy, Size};
use crate::supervisor::Error;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn create_stop_start_kill_remove() {
    let h = Harness::new(Config::default());
    let (sup, _) = h.boot().await;
    let mut ev = sup.events().subscribe();
    let mut spec = h.spec("a");
    spec.limits.memory = Some(Size(64 << 20));
    spec.ports = vec![PortSpec {
        container_port: 8080,
        host_port: None,
    }];
    let v = sup.create(spec.clone()).await.unwrap();
    assert_eq!(v.record.state(), State::Running);
    assert_eq!(v.record.facts().limits.memory, Some(64 << 20));
    assert_eq!(
        v.record.facts().limits.pids,
        Some(4096),
        "the default pids limit"
    );
    assert_eq!(v.cgroup, "/fake/hydra/a");
    let port = v.record.facts().net.ports[0].host_port;
    assert!((20000..=29999).contains(&port));
    assert_eq!(
        h.fw.changes.lock().unwrap().len(),
        1,
        "its DNAT rules, one transaction"
    );
    assert!(matches!(sup.create(spec).await, Err(Error::Exists(_))));

    let v = sup.stop("a", Duration::from_secs(5)).await.unwrap();
    let exit = v.record.exit().unwrap();
    assert_eq!((exit.exit_code, exit.signal), (None, Some(libc::SIGTERM)));
    assert!(v.record.stop_requested());
    assert!(
        sup.stop("a", Duration::from_secs(1)).await.is_ok(),
        "stopping a stopped one is fine"
    );
    assert!(matches!(sup.kill("a", 9).await, Err(Error::NotRunning(_))));

    sup.start("a").await.unwrap();
    assert!(
        !sup.inspect("a").unwrap().record.stop_requested(),
        "a start clears the stop request"
    );
    assert!(matches!(
        sup.start("a").await,
        Err(Error::AlreadyRunning(_))
    ));
    assert!(matches!(
        sup.remove("a", false).await,
        Err(Error::Running(_))
    ));
    sup.kill("a", libc::SIGUSR1).await.unwrap();
    eventually("the kill is recorded", || state(&sup, "a") == State::Exited).await;
    assert_eq!(sup.counts().exited, 1);
    sup.start("a").await.unwrap();
    sup.remove("a", true).await.unwrap();
    assert!(matches!(sup.inspect("a"), Err(Error::NotFound(_))));
    assert!(h.cg.names().is_empty() && h.state_dirs().is_empty() && h.rt.running().is_empty());
    assert_eq!(sup.network().unwrap().inventory().allocated, vec![]);
    use Action::*;
    assert_eq!(
        actions(&mut ev),
        [Create, Start, Stop, Die, Start, Kill, Die, Start, Die, Destroy]
    );
}

#[tokio::test]
async fn exits_and_oom_kills_are_recorded() {
    let h = Harness::new(Config::default());
    let (sup, _) = h.boot().await;
    sup.create(h.spec("a")).await.unwrap();
    sup.create(h.spec("b")).await.unwrap();
    h.rt.finish("a", Some(3), None);
    h.cg.oom("b");
    h.rt.finish("b", None, Some(libc::SIGKILL));
    let a = sup.wait("a").await.unwrap();
    let b = sup.wait("b").await.unwrap();
    assert_eq!((a.exit_code, a.oom_killed), (Some(3), false));
    assert_eq!((b.signal, b.oom_killed), (Some(9), true));
    // what the records on disk say, after a reload
    let (again, n) = h.boot().await;
    assert_eq!(n, 2);
    let b = again.inspect("b").unwrap().record;
    assert!(b.exit().unwrap().oom_killed);
    // a shim that ends without a status: its cgroup is emptied, the exit has no code
    again.start("a").await.unwrap();
    let kills = h.cg.kills.load(Ordering::SeqCst);
    h.rt.vanish("a");
    let x = again.wait("a").await.unwrap();
    assert_eq!((x.exit_code, x.signal), (None, None));
    assert_eq!(
        h.cg.kills.load(Ordering::SeqCst),
        kills + 1,
        "what was left is killed"
    );
}

#[tokio::test]
async fn the_restart_policy_backs_off_and_stops_at_max_retries() {
    let h = Harness::new(Config::default());
    let (sup, _) = h.boot().await;
    let mut spec = h.spec("a");
    spec.restart.policy = RestartPolicy::OnFailure;
    spec.restart.max_retries = Some(2);
    sup.create(spec).await.unwrap();
    let t0 = Instant::now();
    for n in 1..=2 {
        h.rt.finish("a", Some(1), None);
        eventually("restarted", || {
            sup.inspect("a").unwrap().record.restart_count() == n
                && state(&sup, "a") == State::Running
        })
        .await;
    }
    // 100 ms then 200 ms of backoff
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    h.rt.finish("a", Some(1), None);
    eventually("exited", || state(&sup, "a") == State::Exited).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&sup, "a"), State::Exited, "no third restart");
    assert_eq!(h.rt.starts.load(Ordering::SeqCst), 3);
    // exit 0 is no failure; `always` restarts it, a stop is never undone
    let mut spec = h.spec("b");
    spec.restart.policy = RestartPolicy::Always;
    sup.create(spec).await.unwrap();
    h.rt.finish("b", Some(0), None);
    eventually("restarted", || {
        sup.inspect("b").unwrap().record.restart_count() == 1
    })
    .await;
    sup.stop("b", Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&sup, "b"), State::Exited);
}

#[tokio::test]
async fn failing_health_checks_make_it_unhealthy_once() {
    let h = Harness::new(Config::default());
    let (sup, _) = h.boot().await;
    let mut ev = sup.events().subscribe();
    let mut spec = h.spec("a");
    spec.health = Some(HealthSpec {
        interval_s: 1,
        retries: 2,
        ..HealthSpec::http("/heartbeat")
    });
    sup.create(spec).await.unwrap();
    assert_eq!(
        sup.inspect("a").unwrap().health.status,
        HealthStatus::Starting
    );
    eventually("healthy", || {
        sup.inspect("a").unwrap().health.status == HealthStatus::Healthy
    })
    .await;
    h.rt.unhealthy.store(true, Ordering::SeqCst);
    eventually("unhealthy", || {
        sup.inspect("a").unwrap().health.status == HealthStatus::Unhealthy
    })
    .await;
    let acts = actions(&mut ev);
    assert_eq!(
        acts.iter().filter(|a| **a == Action::Unhealthy).count(),
        1,
        "{acts:?}"
    );
}

#[tokio::test]
async fn a_rejected_create_leaves_nothing() {
    let mut cfg = Config::default();
    cfg.security.userns_ranges = 1;
    let h = Harness::new(cfg);
    let (sup, _) = h.boot().await;
    let nothing_left = |h: &Harness, sup: &Supervisor| {
        assert!(h.cg.names().is_empty(), "cgroups {:?}", h.cg.names());
        assert!(h.state_dirs().is_empty(), "state {:?}", h.state_dirs());
        assert!(h.rt.running().is_empty());
        assert!(sup.network().unwrap().inventory().allocated.is_empty());
        assert_eq!(sup.counts().total, 0);
    };
    let mut bad = h.spec("a");
    bad.image = "rootfs:/nonexistent".into();
    assert!(matches!(sup.create(bad).await, Err(Error::Image(_))));
    let mut bad = h.spec("a");
    bad.limits.pids = Some(0);
    assert!(matches!(sup.create(bad).await, Err(Error::Spec(e)) if e.field == "limits.pids"));
    let mut bad = h.spec("a");
    bad.capabilities.add = vec!["SYS_ADMIN".into()];
    assert!(matches!(
        sup.create(bad).await,
        Err(Error::CapabilityNotAllowed { index: 0, .. })
    ));
    let mut ported = h.spec("a");
    ported.ports = vec![PortSpec {
        container_port: 80,
        host_port: Some(20001),
    }];
    let mut bad = ported.clone();
    bad.command = Some(vec!["/missing".into()]);
    assert!(matches!(sup.create(bad).await, Err(Error::Runtime(_))));
    h.cg.fail_create.store(true, Ordering::SeqCst);
    assert!(matches!(
        sup.create(ported.clone()).await,
        Err(Error::Cgroup(_))
    ));
    h.cg.fail_create.store(false, Ordering::SeqCst);
    *h.fw.fail_next.lock().unwrap() = true;
    assert!(matches!(
        sup.create(ported.clone()).await,
        Err(Error::Network(_))
    ));
    nothing_left(&h, &sup);
    // the port is free again, and so is the one user id range
    let mut u = ported.clone();
    u.userns = true;
    sup.create(u).await.unwrap();
    let mut u2 = h.spec("b");
    u2.userns = true;
    assert!(matches!(
        sup.create(u2.clone()).await,
        Err(Error::UsernsExhausted)
    ));
    sup.remove("a", true).await.unwrap();
    sup.create(u2).await.unwrap();
}

#[tokio::test]
async fn concurrent_creates_of_one_name_one_wins() {
    let h = Harness::new(Config::default());
    let (sup, _) = h.boot().await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (sup, spec) = (sup.clone(), h.spec("race"));
            tokio::spawn(async move { sup.create(spec).await.is_ok() })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap() as usize;
    }
    assert_eq!(won, 1);
    assert_eq!(h.rt.running(), ["race"]);
}
