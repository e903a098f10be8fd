//! The record as it is written to disk: a flat JSON object, the layout of
//! every release so far (so records written before this format version load
//! unchanged) plus `format`, the version of that layout.

use crate::model::{
    Allocation, AppliedLimits, ContainerSpec, Exit, Facts, PortMapping, ProcRef, ProcessConfig,
    Record, Run, RunState, State,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The layout written by this release. Records without `format` are of
/// layout 1 (identical but for the missing field); a newer one is refused.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredRecord {
    #[serde(default = "format_1")]
    pub format: u32,
    pub spec: ContainerSpec,
    pub process: ProcessConfig,
    pub layers: Vec<PathBuf>,
    /// The image's manifest digest (a registry or OCI-layout image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    pub state: State,
    pub pid: Option<i32>,
    pub pid_start: Option<u64>,
    pub shim_pid: Option<i32>,
    pub shim_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub oom_base: u64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: u32,
    pub stop_requested: bool,
    pub cgroup_parent: String,
    pub limits: AppliedLimits,
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_base: Option<u32>,
}

fn format_1() -> u32 {
    1
}

/// Why a stored record cannot be taken as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("record layout {0} is newer than this agent's ({FORMAT}): written by a newer release")]
    Newer(u32),
    #[error("a running record without its process and shim ids")]
    RunningWithoutIds,
}

impl From<&Record> for StoredRecord {
    fn from(r: &Record) -> StoredRecord {
        let f = r.facts();
        let run = r.running();
        let exit = r.exit();
        StoredRecord {
            format: FORMAT,
            spec: f.spec.clone(),
            process: f.process.clone(),
            layers: f.layers.clone(),
            image_digest: f.image_digest.clone(),
            state: r.state(),
            pid: run.map(|x| x.init.pid),
            pid_start: run.map(|x| x.init.start),
            shim_pid: run.map(|x| x.shim.pid),
            shim_start: run.map(|x| x.shim.start),
            exit_code: exit.and_then(|e| e.exit_code),
            signal: exit.and_then(|e| e.signal),
            oom_killed: exit.is_some_and(|e| e.oom_killed),
            oom_base: run.map_or(0, |x| x.oom_base),
            created_at: f.created_at.clone(),
            started_at: r.started_at().map(str::to_string),
            finished_at: exit.map(|e| e.finished_at.clone()),
            restart_count: r.restart_count(),
            stop_requested: r.stop_requested(),
            cgroup_parent: f.cgroup_parent.clone(),
            limits: f.limits.clone(),
            ip: f.net.ip,
            ports: f.net.ports.clone(),
            userns_base: f.userns_base,
        }
    }
}

impl TryFrom<StoredRecord> for Record {
    type Error = LayoutError;
    fn try_from(s: StoredRecord) -> Result<Record, LayoutError> {
        if s.format > FORMAT {
            return Err(LayoutError::Newer(s.format));
        }
        let run = match s.state {
            State::Created => RunState::Created,
            State::Running => match (s.pid, s.pid_start, s.shim_pid, s.shim_start) {
                (Some(pid), Some(ps), Some(shim), Some(ss)) => RunState::Running(Run {
                    init: ProcRef { pid, start: ps },
                    shim: ProcRef {
                        pid: shim,
                        start: ss,
                    },
                    started_at: s.started_at.unwrap_or_default(),
                    oom_base: s.oom_base,
                }),
                _ => return Err(LayoutError::RunningWithoutIds),
            },
            State::Exited => RunState::Exited {
                started_at: s.started_at,
                exit: Exit {
                    exit_code: s.exit_code,
                    signal: s.signal,
                    oom_killed: s.oom_killed,
                    finished_at: s.finished_at.unwrap_or_default(),
                },
            },
        };
        let facts = Facts {
            spec: s.spec,
            process: s.process,
            layers: s.layers,
            image_digest: s.image_digest,
            cgroup_parent: s.cgroup_parent,
            limits: s.limits,
            net: Allocation {
                ip: s.ip,
                ports: s.ports,
            },
            userns_base: s.userns_base,
            created_at: s.created_at,
        };
        Ok(Record::restore(
            facts,
            run,
            s.restart_count,
            s.stop_requested,
        ))
    }
}
