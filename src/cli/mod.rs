//! `hydractl`: the operators' CLI over the agent's Unix socket. Human tables
//! by default, `--json` for machines. Exit 0 on success, 1 on an API error,
//! 2 on a usage error.

use crate::api::client::{Client, ClientError};
use crate::api::{ContainerInfo, ContainerSpec, ExitStatus, HostInfo};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod stats;

#[derive(Parser, Debug)]
#[command(
    name = "hydractl",
    version,
    about = "Operate a hydra-agent over its local socket"
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

/// Builds the spec JSON from `run` flags; usage errors name the flag.
pub fn spec_from(a: &RunArgs) -> Result<serde_json::Value, String> {
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env {kv:?}: expected K=V"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let mut limits = serde_json::Map::new();
    if let Some(m) = &a.memory {
        limits.insert("memory".into(), m.clone().into());
    }
    if let Some(m) = &a.memory_high {
        limits.insert("memory_high".into(), m.clone().into());
    }
    if let Some(c) = a.cpus {
        limits.insert("cpus".into(), c.into());
    }
    if let Some(w) = a.cpu_weight {
        limits.insert("cpu_weight".into(), w.into());
    }
    if let Some(p) = a.pids {
        limits.insert("pids".into(), p.into());
    }
    let mut spec = serde_json::json!({"name": a.name, "image": a.image, "limits": limits});
    let o = spec.as_object_mut().expect("object");
    if !a.command.is_empty() {
        o.insert("command".into(), serde_json::json!(a.command));
    }
    if !env.is_empty() {
        o.insert("env".into(), serde_json::json!(env));
    }
    for (k, v) in [
        ("workdir", &a.workdir),
        ("user", &a.user),
        ("app", &a.app),
        ("version", &a.app_version),
    ] {
        if let Some(v) = v {
            o.insert(k.into(), v.clone().into());
        }
    }
    if !a.port.is_empty() {
        o.insert(
            "ports".into(),
            a.port
                .iter()
                .map(|p| serde_json::json!({"container_port": p}))
                .collect(),
        );
    }
    if let Some(r) = &a.restart {
        let mut rs = serde_json::json!({"policy": r});
        if let Some(m) = a.max_retries {
            rs["max_retries"] = m.into();
        }
        o.insert("restart".into(), rs);
    }
    if let Some(h) = &a.health_http {
        o.insert("health".into(), serde_json::json!({"http_path": h}));
    }
    // Check locally too, so usage errors do not need the agent.
    serde_json::from_value::<ContainerSpec>(spec.clone()).map_err(|e| e.to_string())?;
    Ok(spec)
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn table(rows: Vec<Vec<String>>) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}Gi", b >> 30),
        Some(b) if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}Mi", b >> 20),
        Some(b) => b.to_string(),
    }
}

fn status_of(c: &ContainerInfo) -> String {
    match c.state.as_str() {
        "exited" => match (c.exit_code, c.signal) {
            (Some(code), _) => format!("exited ({code}){}", if c.oom_killed { " oom" } else { "" }),
            (None, Some(s)) => format!(
                "exited (signal {s}){}",
                if c.oom_killed { " oom" } else { "" }
            ),
            _ => "exited".into(),
        },
        s => s.to_string(),
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let c = Client::new(&cli.socket);
    match dispatch(&c, &cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hydractl: {e}");
            1
        }
    }
}

async fn dispatch(c: &Client, cli: &Cli) -> Result<i32, ClientError> {
    let json = cli.json;
    match &cli.cmd {
        Cmd::Run(a) => {
            let a = a.as_ref();
            let spec = match spec_from(a) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("hydractl run: {e}");
                    return Ok(2);
                }
            };
            let info: ContainerInfo = c
                .call(
                    "POST",
                    "/v1/containers",
                    Some(serde_json::to_vec(&spec).expect("json")),
                )
                .await?;
            if json {
                print_json(&info);
            } else {
                println!(
                    "{} started (pid {})",
                    info.name,
                    info.pid.map_or("-".into(), |p| p.to_string())
                );
            }
        }
        Cmd::Ps => {
            let list: Vec<ContainerInfo> = c.call("GET", "/v1/containers", None).await?;
            if json {
                print_json(&list);
            } else {
                let mut rows = vec![[
                    "NAME", "APP", "VERSION", "STATUS", "PID", "MEMORY", "CPUS", "PIDS",
                    "RESTARTS", "IMAGE",
                ]
                .map(String::from)
                .to_vec()];
                for i in &list {
                    rows.push(vec![
                        i.name.clone(),
                        i.app.clone().unwrap_or_else(|| "-".into()),
                        i.version.clone().unwrap_or_else(|| "-".into()),
                        status_of(i),
                        i.pid.map_or("-".into(), |p| p.to_string()),
                        fmt_bytes(i.limits.memory),
                        i.limits.cpus.map_or("-".into(), |c| format!("{c}")),
                        i.limits.pids.map_or("-".into(), |p| p.to_string()),
                        i.restart_count.to_string(),
                        i.image.clone(),
                    ]);
                }
                table(rows);
            }
        }
        Cmd::Inspect { name } => {
            let v: serde_json::Value = c
                .call("GET", &format!("/v1/containers/{name}"), None)
                .await?;
            print_json(&v);
        }
        Cmd::Start { name } => {
            show(c, json, "POST", &format!("/v1/containers/{name}/start")).await?
        }
        Cmd::Stop { name, timeout } => {
            show(
                c,
                json,
                "POST",
                &format!("/v1/containers/{name}/stop?timeout={timeout}"),
            )
            .await?
        }
        Cmd::Restart { name, timeout } => {
            show(
                c,
                json,
                "POST",
                &format!("/v1/containers/{name}/restart?timeout={timeout}"),
            )
            .await?
        }
        Cmd::Kill { name, signal } => {
            show(
                c,
                json,
                "POST",
                &format!("/v1/containers/{name}/kill?signal={signal}"),
            )
            .await?
        }
        Cmd::Rm { name, force } => {
            let (status, data) = c
                .raw(
                    "DELETE",
                    &format!("/v1/containers/{name}?force={force}"),
                    None,
                )
                .await?;
            if status != 204 {
                let body = serde_json::from_slice(&data).map_err(|_| ClientError::Unexpected {
                    status,
                    text: String::from_utf8_lossy(&data).into(),
                })?;
                return Err(ClientError::Api { status, body });
            }
            if !json {
                println!("{name} removed");
            }
        }
        Cmd::Logs { name, follow, tail } => {
            let mut q = format!("/v1/containers/{name}/logs?follow={follow}");
            if let Some(t) = tail {
                q += &format!("&tail={t}");
            }
            c.stream(&q, |line| {
                if json {
                    println!("{line}");
                } else if let Ok(r) = serde_json::from_str::<crate::telemetry::logs::Record>(line) {
                    if r.stream == "stderr" {
                        eprintln!("{}", r.line);
                    } else {
                        println!("{}", r.line);
                    }
                }
                true
            })
            .await?;
        }
        Cmd::Stats {
            name,
            watch,
            interval,
        } => {
            let every = Duration::from_secs_f64(interval.max(0.1));
            stats::stats(c, name, json, *watch, every).await?;
        }
        Cmd::Wait { name } => {
            let st: ExitStatus = c
                .call("GET", &format!("/v1/containers/{name}/wait"), None)
                .await?;
            if json {
                print_json(&st);
            } else {
                println!(
                    "{}",
                    st.exit_code
                        .map_or(format!("signal {}", st.signal.unwrap_or(0)), |c| c
                            .to_string())
                );
            }
            return Ok(0);
        }
        Cmd::Events => {
            c.stream("/v1/events", |line| {
                println!("{line}");
                true
            })
            .await?;
        }
        Cmd::Ports => {
            let p: crate::network::PortsInfo = c.call("GET", "/v1/ports", None).await?;
            if json {
                print_json(&p);
            } else {
                println!("pool {}-{}, {} free", p.range.start, p.range.end, p.free);
                let mut rows = vec![["HOST PORT", "CONTAINER", "TARGET"]
                    .map(String::from)
                    .to_vec()];
                for a in &p.allocated {
                    rows.push(vec![
                        a.host_port.to_string(),
                        a.container.clone(),
                        format!("{}:{}", a.ip, a.container_port),
                    ]);
                }
                for t in &p.taken_by_others {
                    rows.push(vec![
                        t.port.to_string(),
                        format!(
                            "(other: {})",
                            t.process.clone().unwrap_or_else(|| "?".into())
                        ),
                        t.pid.map_or("-".into(), |p| format!("pid {p}")),
                    ]);
                }
                table(rows);
            }
        }
        Cmd::Firewall { cmd } => {
            let mut a: crate::network::Allowlist =
                c.call("GET", "/v1/firewall/allowlist", None).await?;
            match cmd {
                FirewallCmd::List => {}
                FirewallCmd::Allow { cidr } => {
                    if !a.cidrs.contains(cidr) {
                        a.cidrs.push(cidr.clone());
                    }
                    a = c
                        .call(
                            "PUT",
                            "/v1/firewall/allowlist",
                            Some(serde_json::to_vec(&a).expect("json")),
                        )
                        .await?;
                }
                FirewallCmd::Deny { cidr } => {
                    let canon = crate::network::ipam::Cidr::parse(cidr)
                        .map(|c| c.to_string())
                        .unwrap_or_else(|_| cidr.clone());
                    a.cidrs.retain(|c| c != cidr && *c != canon);
                    a = c
                        .call(
                            "PUT",
                            "/v1/firewall/allowlist",
                            Some(serde_json::to_vec(&a).expect("json")),
                        )
                        .await?;
                }
            }
            if json {
                print_json(&a);
            } else {
                for c in &a.cidrs {
                    println!("{c}");
                }
            }
        }
        Cmd::Host => {
            let h: HostInfo = c.call("GET", "/v1/host", None).await?;
            if json {
                print_json(&h);
            } else {
                table(vec![
                    vec!["hostname".into(), h.hostname],
                    vec!["agent".into(), h.agent_version],
                    vec!["kernel".into(), h.kernel],
                    vec!["cgroup".into(), h.cgroup_mode],
                    vec!["cpus".into(), h.cpus.to_string()],
                    vec!["memory".into(), fmt_bytes(Some(h.memory_bytes))],
                    vec![
                        "containers".into(),
                        format!(
                            "{} ({} running, {} exited, {} created)",
                            h.containers.total,
                            h.containers.running,
                            h.containers.exited,
                            h.containers.created
                        ),
                    ],
                ]);
            }
        }
    }
    Ok(0)
}

async fn show(c: &Client, json: bool, method: &str, path: &str) -> Result<(), ClientError> {
    let info: ContainerInfo = c.call(method, path, None).await?;
    if json {
        print_json(&info);
    } else {
        println!("{}  {}", info.name, status_of(&info));
    }
    Ok(())
}
