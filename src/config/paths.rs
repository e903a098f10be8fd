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
