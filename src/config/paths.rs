//! Every path the agent writes, derived from `--root` (default `/`).

use super::Config;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    pub state: PathBuf,
    pub run: PathBuf,
    pub socket: PathBuf,
}

impl Paths {
    /// `root` relocates every default path; explicit config paths are used as written.
    pub fn new(root: Option<&Path>, cfg: &Config, socket_flag: Option<&Path>) -> Paths {
        let under = |p: &str| match root {
            Some(r) => r.join(p.trim_start_matches('/')),
            None => PathBuf::from(p),
        };
        let run = under("/run/hydra-agent");
        let socket = socket_flag
            .map(Path::to_path_buf)
            .or_else(|| cfg.api.socket.clone())
            .unwrap_or_else(|| run.join("agent.sock"));
        Paths {
            state: under("/var/lib/hydra-agent"),
            run,
            socket,
        }
    }

    pub fn containers(&self) -> PathBuf {
        self.state.join("containers")
    }
    pub fn layers(&self) -> PathBuf {
        self.state.join("layers")
    }
    /// Pulled images' records (image/records.rs).
    pub fn images(&self) -> PathBuf {
        self.state.join("images")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.state.join("quarantine")
    }
    /// Removed containers' directories, being deleted (store/trash.rs).
    pub fn trash(&self) -> PathBuf {
        self.state.join("trash")
    }
    /// The event journal (a log like a container's).
    pub fn events(&self) -> PathBuf {
        self.state.join("events")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_relocates() {
        let p = Paths::new(Some(Path::new("/tmp/r")), &Config::default(), None);
        assert_eq!(p.socket, Path::new("/tmp/r/run/hydra-agent/agent.sock"));
        assert_eq!(p.state, Path::new("/tmp/r/var/lib/hydra-agent"));
    }
}

/// The packages' commented config (`packaging/agent.toml`, installed as
/// /etc/hydra-agent/agent.toml) shows every default as it is: uncommenting
/// all its default lines gives the built-in config.
#[cfg(test)]
mod packaged {
    #[test]
    fn the_packaged_config_shows_the_defaults() {
        let text = include_str!("../../packaging/agent.toml");
        let keys = uncommented(text);
        let cfg = crate::config::Config::parse(&keys).unwrap();
        assert_eq!(cfg, crate::config::Config::default(), "{keys}");
        // and every section of the config appears in it
        let default = toml::to_string(&crate::config::Config::default()).unwrap();
        for section in default.lines().filter(|l| l.starts_with('[')) {
            assert!(
                keys.contains(section),
                "{section} missing from packaging/agent.toml"
            );
        }
    }

    /// `# [section]` and `# key = value` lines, uncommented, unless marked
    /// "unset by default".
    fn uncommented(text: &str) -> String {
        text.lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| !l.contains("unset by default"))
            .filter(|l| {
                let l = l.trim_end();
                (l.starts_with('[') && l.ends_with(']'))
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
