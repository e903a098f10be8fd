//! Log shipping to a real rsyslog (Debian's `rsyslog` + `rsyslog-relp`,
//! `imrelp`) in the test's network namespace: at least once and in order per
//! container across collector outages and an agent SIGKILL; a flooding
//! container held by its caps without holding up another, every drop
//! counted.

mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn every_line_arrives_in_order_across_outages_and_an_agent_kill() {
    require_root!();
    if lacks("rsyslogd", "-v") {
        return;
    }
    let mut a = Agent::start(&format!(
        "[collector]\nrelp = \"{RELP}\"\nlog_rate_lines = 0\n[logs]\nmax_file_size = \"10Mi\"\nmax_files = 10\n"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::new(dir.path());
    rs.start(&a);
    // 100,000 numbered lines in 100 bursts, over several seconds
    let script = "for b in $(seq 0 99); do seq $((b*1000+1)) $((b*1000+1000)) | sed 's/^/n=/'; sleep 0.05; done; exec sleep 100000";
    a.run(
        json!({"name": "counter", "app": "billing", "version": "v1", "image": busybox(),
                 "command": ["sh", "-c", script]}),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    rs.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rs.start(&a);
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.spawn().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    rs.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    rs.start(&a);
    let mut got = Vec::new();
    eventually(120, "all 100,000 lines at rsyslog", async || {
        got = numbers(&rs.received(), "counter");
        got.contains(&100_000)
    })
    .await;
    // the whole stream, at least once and in order, once the last
    // acknowledgements are in (polled: no fixed wait)
    let _ = tokio::time::timeout(scaled(30), async {
        while at_least_once_in_order(&numbers(&rs.received(), "counter"), 100_000).is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    got = numbers(&rs.received(), "counter");
    if let Err(e) = at_least_once_in_order(&got, 100_000) {
        panic!("{e}; {} lines received; agent log:\n{}", got.len(), a.log());
    }
    let rx = rs.received();
    let f = &rx
        .iter()
        .find(|(_, f, _)| f.get("container").map(String::as_str) == Some("counter"))
        .unwrap()
        .1;
    assert_eq!(f.get("app").map(String::as_str), Some("billing"));
    assert_eq!(f.get("version").map(String::as_str), Some("v1"));
    assert_eq!(f.get("stream").map(String::as_str), Some("stdout"));
    // lifecycle events arrive too
    assert!(
        rx.iter().any(|(id, _, m)| id == "event"
            && m.contains("\"container\":\"counter\"")
            && m.contains("\"action\":\"start\"")),
        "no start event"
    );
    // the outages were noticed once each, not per attempt
    let log = a.log();
    let warnings = log.matches("log shipping: collector unavailable").count();
    assert!((1..=12).contains(&warnings), "{warnings} warnings:\n{log}");
    rs.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_container_is_capped_without_holding_up_another() {
    require_root!();
    if lacks("rsyslogd", "-v") {
        return;
    }
    let a = Agent::start(&format!(
        "[collector]\nrelp = \"{RELP}\"\nlog_rate_lines = 300\n[logs]\nmax_file_size = \"1Mi\"\nmax_files = 2\n"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::new(dir.path());
    rs.start(&a);
    // random bytes: invalid UTF-8, lines up to megabytes (split at 16 KiB)
    let flood = "head -c 30000000 /dev/urandom; tr -d '\\n' < /dev/urandom | head -c 20000000; echo; echo FLOOD-END; exec sleep 100000";
    a.run(json!({"name": "flood", "image": busybox(), "command": ["sh", "-c", flood]}))
        .await
        .unwrap();
    let quiet = "for i in $(seq 1 1000); do echo n=$i; usleep 5000; done; exec sleep 100000";
    a.run(json!({"name": "quiet", "image": busybox(), "command": ["sh", "-c", quiet]}))
        .await
        .unwrap();
    let pid = a.agent_pid();
    let mut max_rss = 0;
    let mut got = Vec::new();
    let t0 = Instant::now();
    eventually(60, "all of quiet's lines", async || {
        let rss: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        max_rss = max_rss.max(rss);
        got = numbers(&rs.received(), "quiet");
        got.contains(&1000)
    })
    .await;
    at_least_once_in_order(&got, 1000).unwrap();
    // wait for the flood's last line (a marker), then for its backlog to drain
    let mut end = 0;
    eventually(60, "the flood ends", async || {
        let last = a.logs("flood").await.pop();
        end = last.as_ref().map_or(0, |r| r.seq);
        last.is_some_and(|r| r.line == "FLOOD-END")
    })
    .await;
    let dropped = |text: &str, c: &str, reason: &str| -> u64 {
        text.lines()
            .find(|l| {
                l.starts_with("hydra_log_records_dropped_total{")
                    && l.contains(&format!("container=\"{c}\""))
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut text = String::new();
    let mut delivered: HashSet<u64> = HashSet::new();
    eventually(
        60,
        "every flood record shipped or counted as dropped",
        async || {
            let (_, body) = a.client.raw("GET", "/metrics", None).await.unwrap();
            text = String::from_utf8_lossy(&body).into_owned();
            delivered = rs
                .received()
                .into_iter()
                .filter(|(id, f, _)| {
                    id == "log" && f.get("container").map(String::as_str) == Some("flood")
                })
                .filter_map(|(_, f, _)| f.get("seq")?.parse().ok())
                .collect();
            delivered.len() as u64
                + dropped(&text, "flood", "rate")
                + dropped(&text, "flood", "size_cap")
                == end
        },
    )
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(dropped(&text, "flood", "rate") > 0, "{text}");
    assert!(dropped(&text, "flood", "size_cap") > 0, "{text}");
    assert_eq!(
        dropped(&text, "quiet", "rate") + dropped(&text, "quiet", "size_cap"),
        0
    );
    // the cap holds: at most 300 lines/s (plus one second's burst)
    assert!(
        (delivered.len() as f64) <= 300.0 * (elapsed + 1.0) + 300.0,
        "{} flood lines shipped in {elapsed:.1} s",
        delivered.len()
    );
    assert!(max_rss < 64 * 1024, "agent RSS {max_rss} kB");
    // the size cap's drops were announced
    assert!(
        rs.received().iter().any(|(id, _, m)| id == "event"
            && m.contains("logs_dropped")
            && m.contains("\"container\":\"flood\"")),
        "no logs_dropped event"
    );
    rs.stop();
}

/// A collector that misbehaves, one way per connection, then behaves: the
/// first answers garbage, the second acknowledges a few messages and closes
/// in the middle of a frame, the third never acknowledges, the rest are a
/// correct RELP server. Runs inside `netns`; returns every message the
/// correct ones acknowledged.
fn bad_collector(
    netns: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{BufRead, BufReader, Read, Write};
    std::thread::spawn(move || {
        let ns = std::fs::File::open(netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind(RELP).unwrap();
        l.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            n += 1;
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            // frames: "TXNR CMD LEN[ DATA]\n"
            let mut frame = || -> Option<(String, String, Vec<u8>)> {
                let mut head = Vec::new();
                loop {
                    let mut b = [0u8; 1];
                    match r.read(&mut b) {
                        Ok(1)
                            if b[0] == b' ' && head.iter().filter(|&&c| c == b' ').count() == 2 =>
                        {
                            break
                        }
                        Ok(1) if b[0] == b'\n' => break,
                        Ok(1) => head.push(b[0]),
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut =>
                        {
                            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                                return None;
                            }
                        }
                        _ => return None,
                    }
                }
                let h = String::from_utf8_lossy(&head).into_owned();
                let mut it = h.split(' ');
                let (t, c, len) = (
                    it.next()?.to_string(),
                    it.next()?.to_string(),
                    it.next()?.parse::<usize>().ok()?,
                );
                let mut data = vec![0u8; len];
                r.read_exact(&mut data).ok()?;
                if len > 0 {
                    let mut nl = String::new();
                    r.read_line(&mut nl).ok()?;
                }
                Some((t, c, data))
            };
            match n {
                1 => {
                    let _ = frame();
                    let _ = w.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                }
                2 => {
                    let Some((t, _, _)) = frame() else { continue };
                    let _ = w.write_all(format!("{t} rsp 6 200 OK\n").as_bytes());
                    let _ = frame();
                    let _ = w.write_all(b"2 rsp 6 20");
                }
                3 => {
                    let Some((t, _, _)) = frame() else { continue };
                    let _ = w.write_all(format!("{t} rsp 6 200 OK\n").as_bytes());
                    let until = Instant::now() + Duration::from_secs(12);
                    while Instant::now() < until && frame().is_some() {}
                    while Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                _ => {
                    while let Some((t, c, data)) = frame() {
                        if c == "syslog" {
                            got.push(String::from_utf8_lossy(&data).into_owned());
                        }
                        if c == "close" {
                            break;
                        }
                        let _ = w.write_all(format!("{t} rsp 6 200 OK\n").as_bytes());
                    }
                }
            }
        }
        got
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_collector_costs_retries_not_lines() {
    require_root!();
    let a = Agent::start(&format!(
        "[collector]\nrelp = \"{RELP}\"\nlog_rate_lines = 0\n"
    ))
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = bad_collector(a.host.netns(), stop.clone());
    a.run(json!({"name": "talker", "image": busybox(),
                 "command": ["sh", "-c", "for i in $(seq 1 200); do echo n=$i; usleep 50000; done; exec sleep 100000"]}))
        .await
        .unwrap();
    eventually(90, "talker's 200 lines acknowledged", async || {
        a.logs("talker").await.len() == 200 && {
            let (_, body) = a.client.raw("GET", "/metrics", None).await.unwrap();
            let t = String::from_utf8_lossy(&body).into_owned();
            t.contains("hydra_log_backlog_bytes 0")
        }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let msgs = collector.join().unwrap();
    let nums: Vec<u64> = msgs
        .iter()
        .filter(|m| m.contains("container=\"talker\""))
        .filter_map(|m| m.rsplit("] ").next()?.strip_prefix("n=")?.parse().ok())
        .collect();
    at_least_once_in_order(&nums, 200).unwrap();
    let (_, body) = a.client.raw("GET", "/metrics", None).await.unwrap();
    let text = String::from_utf8_lossy(&body).into_owned();
    let retried: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("hydra_log_records_total{result=\"retried\"} ")?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(retried >= 1.0, "{text}");
    // one warning per kind of failure, not one per attempt
    let log = a.log();
    let warnings = log.matches("log shipping: collector unavailable").count();
    assert!((3..=8).contains(&warnings), "{warnings} warnings:\n{log}");
    for what in ["not RELP", "no acknowledgement within 10 s"] {
        assert!(log.contains(what), "{what}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_tcp_syslog_receivers_get_rfc5424_messages() {
    require_root!();
    if lacks("rsyslogd", "-v") {
        return;
    }
    let a = Agent::start("[collector]\nsyslog = \"127.0.0.1:20514\"\n").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    // rsyslog's imtcp takes octet-counted frames; the template keeps the
    // parsed RFC 5424 fields apart
    std::fs::write(
        dir.path().join("rsyslog.conf"),
        format!(
            "global(workDirectory=\"{d}/work\")\nmodule(load=\"imtcp\")\n\
             input(type=\"imtcp\" port=\"20514\" address=\"127.0.0.1\")\n\
             template(name=\"t\" type=\"string\" string=\"%syslogfacility-text% %syslogseverity-text% %app-name% %msgid% %structured-data% %msg%\\n\")\n\
             action(type=\"omfile\" file=\"{d}/out.log\" template=\"t\")\n"
        ),
    )
    .unwrap();
    let _rs = a
        .host
        .spawn_bg(&format!("exec rsyslogd -n -f {d}/rsyslog.conf -i {d}/pid"));
    a.run(json!({"name": "web", "app": "shop", "version": "v2", "image": busybox(),
                 "command": ["sh", "-c", "echo 'hello \"world\" ]'; echo oops >&2; exec sleep 100000"]}))
        .await
        .unwrap();
    let mut out = String::new();
    eventually(30, "both lines at the receiver", async || {
        out = std::fs::read_to_string(dir.path().join("out.log")).unwrap_or_default();
        out.contains("oops") && out.contains("hello")
    })
    .await;
    let line = |needle: &str| {
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_string()
    };
    let hello = line("hello");
    assert!(
        hello.starts_with("user info web log [hydra@32473 "),
        "{hello}"
    );
    assert!(
        hello.contains("container=\"web\" app=\"shop\" version=\"v2\" stream=\"stdout\" seq=\"1\""),
        "{hello}"
    );
    assert!(hello.ends_with("hello \"world\" ]"), "{hello}");
    assert!(line("oops").starts_with("user err web log "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("user notice hydra-agent event ")
                && l.contains("\"action\":\"start\"")),
        "{out}"
    );
}
