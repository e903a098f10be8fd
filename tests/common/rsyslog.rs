//! A real rsyslog (imrelp on 127.0.0.1:20514) inside a test host, writing
//! what it receives to a file, and checks of what arrived.

use super::{Agent, Bg};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const RELP: &str = "127.0.0.1:20514";

pub struct Rsyslog {
    dir: PathBuf,
    bg: Option<Bg>,
}

impl Rsyslog {
    pub fn new(dir: &Path) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(
            dir.join("rsyslog.conf"),
            format!(
                "global(workDirectory=\"{d}/work\" maxMessageSize=\"64k\")\n\
                 module(load=\"imrelp\")\n\
                 input(type=\"imrelp\" port=\"20514\" address=\"127.0.0.1\" maxDataSize=\"80k\")\n\
                 template(name=\"t\" type=\"string\" string=\"%msgid% %structured-data% %msg%\\n\")\n\
                 action(type=\"omfile\" file=\"{d}/out.log\" template=\"t\")\n",
                d = dir.display()
            ),
        )
        .unwrap();
        Rsyslog {
            dir: dir.to_path_buf(),
            bg: None,
        }
    }

    pub fn start(&mut self, a: &Agent) {
        assert!(self.bg.is_none());
        let _ = std::fs::remove_file(self.dir.join("pid"));
        self.bg = Some(a.host.spawn_bg(&format!(
            "exec rsyslogd -n -f {d}/rsyslog.conf -i {d}/pid",
            d = self.dir.display()
        )));
        let deadline = Instant::now() + super::scaled(20);
        while !self.listening(a) {
            assert!(Instant::now() < deadline, "rsyslog did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn listening(&self, a: &Agent) -> bool {
        a.host
            .sh("cat /proc/net/tcp")
            .lines()
            .any(|l| l.contains(":5022 00000000:0000 0A")) // port 20514, LISTEN
    }

    pub fn stop(&mut self) {
        let mut bg = self.bg.take().expect("running");
        assert!(bg.terminate(super::scaled(20)), "rsyslog stops");
    }

    /// (msgid, structured data fields, msg) of every line received.
    pub fn received(&self) -> Vec<(String, BTreeMap<String, String>, String)> {
        let text = std::fs::read(self.dir.join("out.log")).unwrap_or_default();
        String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|l| {
                let (msgid, rest) = l.split_once(' ')?;
                let sd_end = rest.find("] ")?;
                let sd = &rest[..sd_end];
                let msg = rest[sd_end + 2..].to_string();
                let mut f = BTreeMap::new();
                for part in sd.split("\" ") {
                    if let Some((k, v)) = part.rsplit_once("=\"") {
                        let k = k.rsplit(' ').next().unwrap_or(k);
                        f.insert(k.to_string(), v.trim_end_matches('"').to_string());
                    }
                }
                Some((msgid.to_string(), f, msg))
            })
            .collect()
    }
}

/// The `n=<N>` numbers a container's lines carried, in arrival order.
pub fn numbers(rx: &[(String, BTreeMap<String, String>, String)], container: &str) -> Vec<u64> {
    rx.iter()
        .filter(|(id, f, _)| {
            id == "log" && f.get("container").map(String::as_str) == Some(container)
        })
        .filter_map(|(_, _, m)| m.trim().strip_prefix("n=")?.parse().ok())
        .collect()
}

/// Every number 1..=n at least once, and new ones in order.
pub fn at_least_once_in_order(got: &[u64], n: u64) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut max = 0;
    for &x in got {
        if x > max {
            if x != max + 1 {
                return Err(format!("{} missing (then {x})", max + 1));
            }
            max = x;
        } else if !seen.contains(&x) {
            return Err(format!("{x} arrived after {max}"));
        }
        seen.insert(x);
    }
    if max != n {
        return Err(format!("got up to {max} of {n}"));
    }
    Ok(())
}
