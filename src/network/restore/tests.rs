//! Unit tests of the restorer; one runs it in a pid namespace of its own.

use super::*;

#[test]
fn error_lines_count_from_the_transaction() {
    assert_eq!(
        relative_lines(
            "iptables-restore: line 7 failed: No chain/target/match by that name.\n",
            "*nat\n-A X -j ACCEPT\n-A NOPE -j ACCEPT\nCOMMIT\n",
            4
        ),
        "iptables-restore: line 3 failed: No chain/target/match by that name. (-A NOPE -j ACCEPT)"
    );
    assert_eq!(relative_lines("something else", "", 4), "something else");
}

#[test]
fn empty_blocks_are_not_waited_for() {
    assert_eq!(commits_in("*nat\nCOMMIT\n"), 0);
    assert_eq!(
        commits_in("*nat\n# a comment\nCOMMIT\n*filter\n:X - [0:0]\nCOMMIT\n"),
        1
    );
    assert_eq!(
        commits_in("*nat\n-A X -j DROP\nCOMMIT\n*filter\n-A Y -j DROP\nCOMMIT\n"),
        2
    );
}

/// The kernel announces a commit with the committer's pid in the initial
/// pid namespace: an agent in a pid namespace of its own (in a container)
/// knows its child by another number. The probe learns the announced one,
/// so transactions there are acknowledged, not left to a process per change.
/// Runs [`acknowledged_in_a_pid_namespace_inner`] under `unshare --pid --net`.
#[test]
fn acknowledged_in_a_pid_namespace() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (CI is root): skipped");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--"])
        .arg(exe)
        .args([
            "--exact",
            "network::restore::tests::acknowledged_in_a_pid_namespace_inner",
            "--include-ignored",
            "--nocapture",
        ])
        .env("HYDRA_PIDNS_INNER", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run by acknowledged_in_a_pid_namespace, in a pid namespace"]
fn acknowledged_in_a_pid_namespace_inner() {
    assert_eq!(std::env::var("HYDRA_PIDNS_INNER").as_deref(), Ok("1"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.split_whitespace().count() > 2,
        "not in a pid namespace: {nspid}"
    );
    let mut r = Restorer::spawn().unwrap();
    assert!(r.acknowledges(), "the probe's commit was announced");
    assert_ne!(r.kpid, r.child.id(), "announced with the kernel's pid");
    let mut stderr = Vec::new();
    let input = "*filter\n:HYDRA-PIDNS - [0:0]\n-A HYDRA-PIDNS -j RETURN\nCOMMIT\n*filter\n-F HYDRA-PIDNS\n-X HYDRA-PIDNS\nCOMMIT\n";
    assert!(
        matches!(
            transaction(&mut r, input, 2, &mut stderr),
            Ok(Waited::Acknowledged)
        ),
        "{}",
        String::from_utf8_lossy(&stderr)
    );
}
