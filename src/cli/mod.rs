//! `hydractl`: the operators' CLI over the agent's Unix socket. Human tables
//! by default, `--json` for machines. Exit 0 on success, 1 on an API error,
//! 2 on a usage error. Every command is one typed [`Request`] sent through
//! the API's client.

mod args;
mod images;
mod output;
mod stats;

pub use args::{spec_from, Cli, Cmd, FirewallCmd, ImageCmd, RunArgs, UsageError};

use crate::api::client::{Client, ClientError};
use crate::api::{parse_signal, ContainerInfo, ExitStatus, Request};
use crate::model::Cidr;
use output::{fmt_bytes, print_json, status_of, table};
use std::time::Duration;

/// What a command failed with.
enum Failure {
    Usage(String),
    Api(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Api(e)
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let c = match client(&cli) {
        Ok(c) => c,
        Err(m) => {
            eprintln!("hydractl: {m}");
            return 2;
        }
    };
    match dispatch(&c, &cli).await {
        Ok(code) => code,
        Err(Failure::Usage(m)) => {
            eprintln!("hydractl: {m}");
            2
        }
        Err(Failure::Api(e)) => {
            eprintln!("hydractl: {e}");
            1
        }
    }
}

/// The socket's client, or with --host the remote agent's over mutual TLS.
fn client(cli: &Cli) -> Result<Client, String> {
    let Some(host) = &cli.host else {
        if let Some(flag) = [
            ("--cert", &cli.cert),
            ("--key", &cli.key),
            ("--cacert", &cli.cacert),
        ]
        .into_iter()
        .find_map(|(f, v)| v.is_some().then_some(f))
        {
            return Err(format!("{flag} is only used with --host"));
        }
        return Ok(Client::new(&cli.socket));
    };
    let need = |flag: &str, v: &Option<std::path::PathBuf>| {
        v.clone().ok_or_else(|| {
            format!(
                "--host needs {flag} (or HYDRA_{})",
                flag[2..].to_uppercase()
            )
        })
    };
    let (cert, key, ca) = (
        need("--cert", &cli.cert)?,
        need("--key", &cli.key)?,
        need("--cacert", &cli.cacert)?,
    );
    let cfg = crate::api::tls::client_config(&ca, &cert, &key).map_err(|e| e.to_string())?;
    Client::tls(host, cfg).map_err(|e| e.to_string())
}

async fn dispatch(c: &Client, cli: &Cli) -> Result<i32, Failure> {
    let json = cli.json;
    match &cli.cmd {
        Cmd::Run(a) => {
            let spec = spec_from(a).map_err(|e| Failure::Usage(format!("run: {e}")))?;
            let info = c.create(spec).await?;
            match json {
                true => print_json(&info),
                false => println!(
                    "{} started (pid {})",
                    info.name,
                    info.pid.map_or("-".into(), |p| p.to_string())
                ),
            }
        }
        Cmd::Ps => ps(&c.list().await?, json),
        Cmd::Inspect { name } => print_json(&c.inspect(name).await?),
        Cmd::Start { name } => show(c, json, Request::Start(name.clone())).await?,
        Cmd::Stop { name, timeout } => {
            let r = Request::Stop {
                name: name.clone(),
                timeout_s: *timeout,
            };
            show(c, json, r).await?
        }
        Cmd::Restart { name, timeout } => {
            let r = Request::Restart {
                name: name.clone(),
                timeout_s: *timeout,
            };
            show(c, json, r).await?
        }
        Cmd::Kill { name, signal } => {
            let signal = parse_signal(signal).map_err(|e| Failure::Usage(format!("kill: {e}")))?;
            show(
                c,
                json,
                Request::Kill {
                    name: name.clone(),
                    signal,
                },
            )
            .await?
        }
        Cmd::Rm { name, force } => {
            let () = c
                .send(&Request::Remove {
                    name: name.clone(),
                    force: *force,
                })
                .await?;
            if !json {
                println!("{name} removed");
            }
        }
        Cmd::Logs { name, follow, tail } => logs(c, name, *follow, *tail, json).await?,
        Cmd::Stats {
            name,
            watch,
            interval,
        } => {
            let every = Duration::from_secs_f64(interval.max(0.1));
            stats::stats(c, name, json, *watch, every).await?;
        }
        Cmd::Wait { name } => wait(&c.wait(name).await?, json),
        Cmd::Events => c.stream(&Request::Events, print_line).await?,
        Cmd::Ports => ports(c, json).await?,
        Cmd::Firewall { cmd } => firewall(c, cmd, json).await?,
        Cmd::Host => host(c, json).await?,
        Cmd::Pull { .. } | Cmd::Images | Cmd::Rmi { .. } | Cmd::Image { .. } => {
            images::run(c, &cli.cmd, json).await?
        }
    }
    Ok(0)
}

/// Prints a streamed line as it comes; the stream goes on.
fn print_line(line: &str) -> bool {
    println!("{line}");
    true
}

async fn show(c: &Client, json: bool, req: Request) -> Result<(), ClientError> {
    let info: ContainerInfo = c.send(&req).await?;
    match json {
        true => print_json(&info),
        false => println!("{}  {}", info.name, status_of(&info)),
    }
    Ok(())
}

fn ps(list: &[ContainerInfo], json: bool) {
    if json {
        return print_json(&list);
    }
    let mut rows = vec![[
        "NAME", "APP", "VERSION", "STATUS", "PID", "MEMORY", "CPUS", "PIDS", "RESTARTS", "IMAGE",
    ]
    .map(String::from)
    .to_vec()];
    for i in list {
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

async fn logs(
    c: &Client,
    name: &str,
    follow: bool,
    tail: Option<usize>,
    json: bool,
) -> Result<(), ClientError> {
    let req = Request::Logs {
        name: name.into(),
        follow,
        tail,
    };
    c.stream(&req, |line| {
        if json {
            println!("{line}");
        } else if let Ok(r) = serde_json::from_str::<crate::telemetry::logs::Record>(line) {
            match r.stream.as_str() {
                "stderr" => eprintln!("{}", r.line),
                _ => println!("{}", r.line),
            }
        }
        true
    })
    .await
}

fn wait(st: &ExitStatus, json: bool) {
    match json {
        true => print_json(st),
        false => println!(
            "{}",
            st.exit_code
                .map_or(format!("signal {}", st.signal.unwrap_or(0)), |c| c
                    .to_string())
        ),
    }
}

async fn ports(c: &Client, json: bool) -> Result<(), ClientError> {
    let p = c.ports().await?;
    if json {
        print_json(&p);
        return Ok(());
    }
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
    Ok(())
}

async fn firewall(c: &Client, cmd: &FirewallCmd, json: bool) -> Result<(), Failure> {
    let cidr = |s: &str| Cidr::parse(s).map_err(|e| Failure::Usage(format!("firewall: {e}")));
    let a = match cmd {
        FirewallCmd::List => c.allowlist().await?,
        FirewallCmd::Allow { cidr: s } => c.edit_allowlist(vec![cidr(s)?], vec![]).await?,
        FirewallCmd::Deny { cidr: s } => c.edit_allowlist(vec![], vec![cidr(s)?]).await?,
    };
    match json {
        true => print_json(&a),
        false => a.cidrs.iter().for_each(|c| println!("{c}")),
    }
    Ok(())
}

async fn host(c: &Client, json: bool) -> Result<(), ClientError> {
    let h = c.host().await?;
    if json {
        print_json(&h);
        return Ok(());
    }
    let n = &h.containers;
    table(vec![
        vec!["hostname".into(), h.hostname.clone()],
        vec!["agent".into(), h.agent_version.clone()],
        vec!["kernel".into(), h.kernel.clone()],
        vec!["cgroup".into(), h.cgroup_mode.clone()],
        vec!["storage limits".into(), h.storage_limits.clone()],
        vec!["cpus".into(), h.cpus.to_string()],
        vec!["memory".into(), fmt_bytes(Some(h.memory_bytes))],
        vec![
            "images".into(),
            format!(
                "{} ({} layers, {} on disk)",
                h.images.count,
                h.images.layers,
                fmt_bytes(Some(h.images.disk_bytes))
            ),
        ],
        vec![
            "containers".into(),
            format!(
                "{} ({} running, {} exited, {} created)",
                n.total, n.running, n.exited, n.created
            ),
        ],
    ]);
    Ok(())
}
