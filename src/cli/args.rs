//! `hydractl`'s command line (clap definitions) and the typed spec a `run`
//! builds from its flags.

use crate::model::{ContainerSpec, HealthSpec, Limits, PortSpec, RestartPolicy, RestartSpec, Size};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "hydractl",
    version,
    about = "Operate a hydra-agent over its local socket, or a remote one over mutual TLS"
)]
pub struct Cli {
    /// Agent socket.
    #[arg(
        long,
        env = "HYDRA_SOCKET",
        default_value = "/run/hydra-agent/agent.sock",
        global = true
    )]
    pub socket: PathBuf,
    /// A remote agent's TCP API, `https://HOST:PORT` (instead of the
    /// socket); needs --cert, --key and --cacert.
    #[arg(long, env = "HYDRA_HOST", global = true)]
    pub host: Option<String>,
    /// The client certificate (PEM) for --host; its role (a URI SAN
    /// hydra://role/admin, operator or observer) decides what it may do.
    #[arg(long, env = "HYDRA_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "HYDRA_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The CA (PEM) that issued the agent's server certificate.
    #[arg(long, env = "HYDRA_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and start a container.
    Run(Box<RunArgs>),
    /// List containers.
    Ps,
    /// Show one container.
    Inspect { name: String },
    /// Start a created or exited container.
    Start { name: String },
    /// SIGTERM, then SIGKILL after the timeout.
    Stop {
        name: String,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Stop and start again.
    Restart {
        name: String,
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Send a signal.
    Kill {
        name: String,
        #[arg(long, short = 's', default_value = "KILL")]
        signal: String,
    },
    /// Remove a container.
    Rm {
        name: String,
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Print a container's logs.
    Logs {
        name: String,
        #[arg(long, short = 'f')]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// A stats snapshot; `--watch` for a live view (with `--json`: one
    /// object per line).
    Stats {
        name: String,
        #[arg(long, short = 'w')]
        watch: bool,
        /// Seconds between samples in the live view.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Block until the container exits; exits with its code.
    Wait { name: String },
    /// Stream lifecycle events.
    Events,
    /// Host inventory.
    Host,
    /// Host-port inventory: pool, allocations, ports taken by other processes.
    Ports,
    /// The allowlist of CIDRs that may reach container ports.
    Firewall {
        #[command(subcommand)]
        cmd: FirewallCmd,
    },
    /// Pull an image from a registry (HOST[:PORT]/REPO:TAG, @sha256:HEX or both).
    Pull { reference: String },
    /// List pulled images.
    Images,
    /// Remove an image's record (refused while a container uses it); its
    /// layers go at the next `image prune`.
    Rmi { reference: String },
    /// Image maintenance.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Delete the layers no image and no container uses.
    Prune,
}

#[derive(Subcommand, Debug)]
pub enum FirewallCmd {
    /// Add a CIDR to the allowlist.
    Allow { cidr: String },
    /// Remove a CIDR from the allowlist.
    Deny { cidr: String },
    /// Show the allowlist.
    List,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub image: String,
    #[arg(long)]
    pub memory: Option<String>,
    #[arg(long)]
    pub memory_high: Option<String>,
    #[arg(long)]
    pub cpus: Option<f64>,
    #[arg(long)]
    pub cpu_weight: Option<u64>,
    #[arg(long)]
    pub pids: Option<u64>,
    /// Size of the writable layer (e.g. 1Gi); default `[storage] default_disk`.
    #[arg(long)]
    pub disk: Option<String>,
    /// Files the writable layer may hold; default `[storage] default_inodes`.
    #[arg(long)]
    pub inodes: Option<u64>,
    /// Container port to map to a host port (needs host networking).
    #[arg(long)]
    pub port: Vec<u16>,
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    #[arg(long)]
    pub workdir: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// no, on-failure or always.
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// HTTP path of the health check (port 8080).
    #[arg(long)]
    pub health_http: Option<String>,
    #[arg(long)]
    pub app: Option<String>,
    #[arg(long = "version")]
    pub app_version: Option<String>,
    /// The command; replaces the image's Entrypoint and Cmd.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// A usage error: the flag and what is wrong with it (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn size(flag: &str, v: &Option<String>) -> Result<Option<Size>, UsageError> {
    v.as_deref()
        .map(|s| {
            crate::model::units::parse_size(s)
                .map(Size)
                .map_err(|e| UsageError(format!("--{flag}: {e}")))
        })
        .transpose()
}

fn restart_policy(r: &str) -> Result<RestartPolicy, UsageError> {
    match r {
        "no" => Ok(RestartPolicy::No),
        "on-failure" => Ok(RestartPolicy::OnFailure),
        "always" => Ok(RestartPolicy::Always),
        _ => Err(UsageError(format!(
            "--restart {r:?}: use no, on-failure or always"
        ))),
    }
}

/// Builds the spec of a `run` from its flags; a flag that does not parse
/// is a usage error naming it. The agent checks the values (an API error).
pub fn spec_from(a: &RunArgs) -> Result<ContainerSpec, UsageError> {
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--env {kv:?}: expected K=V")))?;
        env.insert(k.to_string(), v.to_string());
    }
    let spec = ContainerSpec {
        name: a.name.clone(),
        app: a.app.clone(),
        version: a.app_version.clone(),
        image: a.image.clone(),
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        limits: Limits {
            memory: size("memory", &a.memory)?,
            memory_high: size("memory-high", &a.memory_high)?,
            cpus: a.cpus,
            cpu_weight: a.cpu_weight,
            pids: a.pids,
            disk: size("disk", &a.disk)?,
            inodes: a.inodes,
            ..Default::default()
        },
        ports: a
            .port
            .iter()
            .map(|p| PortSpec {
                container_port: *p,
                host_port: None,
            })
            .collect(),
        restart: RestartSpec {
            policy: a
                .restart
                .as_deref()
                .map_or(Ok(RestartPolicy::No), restart_policy)?,
            max_retries: a.max_retries,
        },
        health: a.health_http.as_deref().map(HealthSpec::http),
        capabilities: Default::default(),
        userns: false,
    };
    Ok(spec)
}
