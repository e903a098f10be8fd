//! hydractl against a real agent: tables, --json, exit codes 0/1/2.

mod common;
use common::*;
use std::process::Command;

fn ctl(a: &Agent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hydractl"))
        .arg("--socket")
        .arg(a.socket())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hydractl_commands_and_exit_codes() {
    require_root!();
    let a = Agent::start("[logs]\nmax_file_size = 4096\nmax_files = 20\n").await;
    let img = busybox();
    let (code, out, err) = ctl(
        &a,
        &[
            "run",
            "--name",
            "c1",
            "--image",
            &img,
            "--memory",
            "32Mi",
            "--pids",
            "16",
            "--app",
            "shop",
            "--version",
            "v3",
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "sleep 0.3; for i in $(seq 1 300); do echo $GREETING-$i; done; exit 4",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("c1 started"), "{out}");
    let (code, out, _) = ctl(&a, &["ps"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(
        out.contains("c1") && out.contains("shop") && out.contains("v3") && out.contains("32Mi"),
        "{out}"
    );
    // follow across rotation (4 KiB files) until the container exits
    let (code, out, _) = ctl(&a, &["logs", "-f", "c1"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 300, "{out}");
    assert_eq!(lines[0], "hi-1");
    assert_eq!(lines[299], "hi-300");
    let (code, out, _) = ctl(&a, &["wait", "c1"]);
    assert_eq!((code, out.trim()), (0, "4"));
    let (code, out, _) = ctl(&a, &["--json", "inspect", "c1"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["limits"]["memory"], 32 << 20);
    let (code, out, _) = ctl(&a, &["--json", "host"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["cgroup_mode"] == "hybrid" || v["cgroup_mode"] == "v2");
    assert_eq!(v["containers"]["total"], 1);
    // API errors: exit 1 with the message
    let (code, _, err) = ctl(&a, &["inspect", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no container named"), "{err}");
    let (code, _, err) = ctl(&a, &["run", "--name", "Bad", "--image", &img, "--", "true"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("field: name"), "{err}");
    // usage errors: exit 2
    let (code, _, _) = ctl(&a, &["run", "--image", &img]);
    assert_eq!(code, 2);
    let (code, _, err) = ctl(
        &a,
        &[
            "run", "--name", "x", "--image", &img, "--env", "NOEQUALS", "--", "true",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = ctl(&a, &["frobnicate"]);
    assert_eq!(code, 2);
    // rm
    let (code, out, _) = ctl(&a, &["rm", "c1"]);
    assert_eq!((code, out.trim()), (0, "c1 removed"));
    // no agent: exit 1, says where it tried
    let out = Command::new(env!("CARGO_BIN_EXE_hydractl"))
        .args(["--socket", "/nonexistent/agent.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.sock"));
}
