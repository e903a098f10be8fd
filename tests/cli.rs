//! hydractl against a real agent: tables, --json, exit codes 0/1/2.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

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

#[tokio::test(flavor = "multi_thread")]
async fn hydractl_stats_once_and_live() {
    require_root!();
    let a = Agent::start("").await;
    let (code, out, err) = ctl(
        &a,
        &[
            "run",
            "--name",
            "fill",
            "--image",
            &busybox(),
            "--memory",
            "64Mi",
            "--",
            "sh",
            "-c",
            "head -c 20971520 /dev/zero > /dev/shm/x && exec sleep 100000",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let mut stats = serde_json::Value::Null;
    eventually(20, "20 MiB charged", async || {
        let (code, out, _) = ctl(&a, &["--json", "stats", "fill"]);
        assert_eq!(code, 0);
        stats = serde_json::from_str(&out).unwrap();
        stats["memory"]["stat"]["shmem"].as_u64().unwrap_or(0) >= 20 << 20
    })
    .await;
    assert!(
        stats["memory"]["current"].as_u64().unwrap() >= 20 << 20,
        "{stats}"
    );
    assert_eq!(stats["memory"]["max"].as_u64(), Some(64 << 20));
    let (code, out, _) = ctl(&a, &["stats", "fill"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("CPU(s)") && out.contains("64Mi"), "{out}");
    // live: one JSON object per line, every interval, until stopped
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydractl"))
        .arg("--socket")
        .arg(a.socket())
        .args(["--json", "stats", "fill", "--watch", "--interval", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    for _ in 0..3 {
        let l = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert!(v["memory"]["current"].as_u64().unwrap() >= 20 << 20);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // the table view redraws with rates: read until three redraws began,
    // so the second one is whole
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydractl"))
        .arg("--socket")
        .arg(a.socket())
        .args(["stats", "fill", "-w", "--interval", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let clear = "\x1b[H\x1b[2J";
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut text, mut buf) = (String::new(), [0u8; 4096]);
        while text.matches(clear).count() < 3 {
            match std::io::Read::read(&mut out, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = reader.join().unwrap();
    assert!(text.matches(clear).count() >= 3, "{text}");
    let second = text.split(clear).nth(2).unwrap();
    assert!(
        second.contains("CPU %") && second.contains("64.0Mi"),
        "{text}"
    );
    // the MEMORY column of that redraw: 20 MiB and a little
    let mem: f64 = second
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|m| m.strip_suffix("Mi"))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0.0);
    assert!((20.0..32.0).contains(&mem), "{text}");
    let (code, _, err) = ctl(&a, &["stats", "ghost"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ghost"), "{err}");
}
