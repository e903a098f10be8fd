//! A container as the agent knows it: what was decided when it was created
//! ([`Facts`], fixed from then on) and where it is in its life
//! ([`RunState`], changed only through the transitions below).

use super::limits::AppliedLimits;
use super::spec::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A process the agent must recognise later: its pid and its start time
/// (clock ticks after boot), so a reused pid is never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: i32,
    pub start: u64,
}

/// What the process inside runs, after merging the image config and the spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessConfig {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
}

/// A host port mapped to a container port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

/// A container's network allocations: its address and host ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<PortMapping>,
}

/// What was decided when the container was created; never changes after.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub spec: ContainerSpec,
    pub process: ProcessConfig,
    /// Image layers, top first (overlay lowerdir order).
    pub layers: Vec<PathBuf>,
    /// The digest of the image's manifest, as resolved at the create (a
    /// registry image: the digest its tag pointed to then).
    pub image_digest: Option<String>,
    /// The agent's `cgroup.parent` when it was created.
    pub cgroup_parent: String,
    pub limits: AppliedLimits,
    pub net: Allocation,
    /// First host id of its user namespace (`spec.userns`).
    pub userns_base: Option<u32>,
    pub created_at: String,
}

/// One run of the container: its init and its shim.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub init: ProcRef,
    pub shim: ProcRef,
    pub started_at: String,
    /// The cgroup's OOM kill count when the run started.
    pub oom_base: u64,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// None with `signal` set, or when the shim left no status.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: String,
}

/// Where the container is in its life; each state carries its own data.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Never started.
    Created,
    Running(Run),
    Exited {
        /// Start of the run that ended (None for records that lost it).
        started_at: Option<String>,
        exit: Exit,
    },
}

/// The state's name, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// A transition the state machine does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {name:?} cannot {action} while {state}", state = .state.as_str())]
pub struct TransitionError {
    pub name: String,
    pub action: &'static str,
    pub state: State,
}

/// Everything the agent knows of one container; enough to re-adopt it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    facts: Facts,
    run: RunState,
    restart_count: u32,
    /// Set by stop/kill so the restart policy leaves the container down.
    stop_requested: bool,
}

impl Record {
    /// A container that was never started.
    pub fn new(facts: Facts) -> Record {
        Record {
            facts,
            run: RunState::Created,
            restart_count: 0,
            stop_requested: false,
        }
    }

    /// A record as it was persisted.
    pub fn restore(
        facts: Facts,
        run: RunState,
        restart_count: u32,
        stop_requested: bool,
    ) -> Record {
        Record {
            facts,
            run,
            restart_count,
            stop_requested,
        }
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }
    pub fn spec(&self) -> &ContainerSpec {
        &self.facts.spec
    }
    pub fn name(&self) -> &str {
        &self.facts.spec.name
    }
    pub fn run_state(&self) -> &RunState {
        &self.run
    }
    pub fn restart_count(&self) -> u32 {
        self.restart_count
    }
    pub fn stop_requested(&self) -> bool {
        self.stop_requested
    }

    pub fn state(&self) -> State {
        match self.run {
            RunState::Created => State::Created,
            RunState::Running(_) => State::Running,
            RunState::Exited { .. } => State::Exited,
        }
    }

    /// The current run, if the container is running.
    pub fn running(&self) -> Option<&Run> {
        match &self.run {
            RunState::Running(r) => Some(r),
            _ => None,
        }
    }

    /// How the last run ended, if the container is exited.
    pub fn exit(&self) -> Option<&Exit> {
        match &self.run {
            RunState::Exited { exit, .. } => Some(exit),
            _ => None,
        }
    }

    pub fn started_at(&self) -> Option<&str> {
        match &self.run {
            RunState::Created => None,
            RunState::Running(r) => Some(&r.started_at),
            RunState::Exited { started_at, .. } => started_at.as_deref(),
        }
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError {
            name: self.name().to_string(),
            action,
            state: self.state(),
        }
    }

    /// Created or exited -> running. Clears a stop request: an operator's
    /// start overrides an earlier stop.
    pub fn start(&mut self, run: Run) -> Result<(), TransitionError> {
        if self.state() == State::Running {
            return Err(self.refuse("start"));
        }
        self.run = RunState::Running(run);
        self.stop_requested = false;
        Ok(())
    }

    /// Running -> exited.
    pub fn exit_with(&mut self, exit: Exit) -> Result<(), TransitionError> {
        let RunState::Running(r) = &self.run else {
            return Err(self.refuse("exit"));
        };
        self.run = RunState::Exited {
            started_at: Some(r.started_at.clone()),
            exit,
        };
        Ok(())
    }

    /// Marks the container as stopped by the operator (stop, kill, remove),
    /// so the restart policy leaves it down.
    pub fn request_stop(&mut self) {
        self.stop_requested = true;
    }

    /// Counts a restart made by the restart policy.
    pub fn count_restart(&mut self) {
        self.restart_count = self.restart_count.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Start(i32),
        Exit(Option<i32>, Option<i32>, bool),
        Stop,
        Restarted,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1..100_000i32).prop_map(Op::Start),
            (
                proptest::option::of(0..256i32),
                proptest::option::of(1..65i32),
                any::<bool>()
            )
                .prop_map(|(c, s, o)| Op::Exit(c, s, o)),
            Just(Op::Stop),
            Just(Op::Restarted),
        ]
    }

    fn record() -> Record {
        Record::new(Facts {
            spec: serde_json::from_str(r#"{"name":"a","image":"rootfs:/x"}"#).unwrap(),
            process: ProcessConfig::default(),
            layers: vec![],
            image_digest: None,
            cgroup_parent: "hydra".into(),
            limits: AppliedLimits::default(),
            net: Allocation::default(),
            userns_base: None,
            created_at: "t0".into(),
        })
    }

    /// What every reachable record satisfies.
    fn consistent(r: &Record) -> Result<(), TestCaseError> {
        match r.state() {
            State::Created => prop_assert!(
                r.running().is_none() && r.exit().is_none() && r.started_at().is_none()
            ),
            State::Running => prop_assert!(
                r.running().is_some() && r.exit().is_none() && r.started_at().is_some()
            ),
            State::Exited => prop_assert!(r.running().is_none() && r.exit().is_some()),
        }
        Ok(())
    }

    proptest! {
        /// No impossible state is reachable: a refused transition changes
        /// nothing, a start clears the stop request, an exit keeps the run's
        /// start time, restarts only count up.
        #[test]
        fn no_impossible_state_is_reachable(ops in proptest::collection::vec(op(), 0..40)) {
            let mut r = record();
            for op in ops {
                let before = r.clone();
                match op {
                    Op::Start(pid) => {
                        let run = Run {
                            init: ProcRef { pid, start: 1 },
                            shim: ProcRef { pid: pid + 1, start: 1 },
                            started_at: format!("s{pid}"),
                            oom_base: 0,
                        };
                        match r.start(run) {
                            Ok(()) => {
                                prop_assert_ne!(before.state(), State::Running);
                                prop_assert_eq!(r.running().unwrap().init.pid, pid);
                                prop_assert!(!r.stop_requested());
                            }
                            Err(e) => {
                                prop_assert_eq!(e.state, State::Running);
                                prop_assert_eq!(&r, &before);
                            }
                        }
                    }
                    Op::Exit(exit_code, signal, oom_killed) => {
                        let exit = Exit { exit_code, signal, oom_killed, finished_at: "f".into() };
                        match r.exit_with(exit.clone()) {
                            Ok(()) => {
                                prop_assert_eq!(r.exit(), Some(&exit));
                                prop_assert_eq!(r.started_at(), before.running().map(|x| x.started_at.as_str()));
                            }
                            Err(_) => {
                                prop_assert_ne!(before.state(), State::Running);
                                prop_assert_eq!(&r, &before);
                            }
                        }
                    }
                    Op::Stop => {
                        r.request_stop();
                        prop_assert!(r.stop_requested());
                        prop_assert_eq!(r.state(), before.state());
                    }
                    Op::Restarted => {
                        r.count_restart();
                        prop_assert_eq!(r.restart_count(), before.restart_count() + 1);
                    }
                }
                consistent(&r)?;
                prop_assert_eq!(r.facts(), before.facts(), "facts never change");
            }
        }
    }
}
