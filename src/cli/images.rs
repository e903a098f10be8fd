//! `hydractl pull | images | rmi | image prune`.

use super::output::{fmt_bytes, print_json, table};
use super::{Cmd, Failure, ImageCmd};
use crate::api::client::{Client, ClientError};
use crate::api::{ErrorBody, ImageInfo, PruneReport, Request};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

/// The image commands.
pub async fn run(c: &Client, cmd: &Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Pull { reference } => pull(c, reference, json).await,
        Cmd::Images => list(c, json).await,
        Cmd::Rmi { reference } => remove(c, reference).await,
        Cmd::Image {
            cmd: ImageCmd::Prune,
        } => prune(c, json).await,
        _ => unreachable!("not an image command"),
    }
}

/// Pulls `reference`: a bar per layer on a terminal (else a line per layer
/// done); `--json` prints every line as the agent sends it.
pub async fn pull(c: &Client, reference: &str, json: bool) -> Result<(), Failure> {
    let bars = MultiProgress::new();
    let tty = std::io::stderr().is_terminal();
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let mut layers: HashMap<String, ProgressBar> = HashMap::new();
    let mut outcome: Option<Result<ImageInfo, ClientError>> = None;
    c.stream(&Request::Pull(reference.into()), |line| {
        if json {
            println!("{line}");
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if let Some(layer) = v.get("layer").and_then(|l| l.as_str()) {
            let (bytes, total) = (num(&v, "bytes"), num(&v, "total"));
            let (done, cached) = (flag(&v, "done"), flag(&v, "cached"));
            let short: String = layer
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect();
            if tty && !json {
                let bar = layers.entry(layer.into()).or_insert_with(|| {
                    let b = bars.add(ProgressBar::new(total));
                    b.set_style(style.clone());
                    b.set_prefix(short.clone());
                    b
                });
                bar.set_position(bytes);
                if done {
                    bar.finish_with_message(if cached { "already here" } else { "done" });
                }
            } else if done && !json {
                let what = if cached {
                    "already here".to_string()
                } else {
                    fmt_bytes(Some(total))
                };
                eprintln!("{short}: {what}");
            }
        } else if v.get("error").is_some() {
            outcome = Some(Err(match serde_json::from_value::<ErrorBody>(v) {
                Ok(body) => ClientError::Api { status: 0, body },
                Err(_) => ClientError::Unexpected {
                    status: 200,
                    text: line.into(),
                },
            }));
        } else if let Ok(info) = serde_json::from_value::<ImageInfo>(v) {
            outcome = Some(Ok(info));
        }
        true
    })
    .await?;
    match outcome {
        Some(Ok(info)) => {
            if !json {
                println!("{}  {}", info.reference, info.digest);
            }
            Ok(())
        }
        Some(Err(e)) => Err(Failure::Api(e)),
        None => Err(Failure::Api(ClientError::Unexpected {
            status: 200,
            text: "the pull ended without an outcome".into(),
        })),
    }
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(|x| x.as_u64()).unwrap_or(0)
}

fn flag(v: &serde_json::Value, k: &str) -> bool {
    v.get(k).and_then(|x| x.as_bool()).unwrap_or(false)
}

pub async fn list(c: &Client, json: bool) -> Result<(), Failure> {
    let images: Vec<ImageInfo> = c.send(&Request::Images).await?;
    if json {
        print_json(&images);
        return Ok(());
    }
    let mut rows = vec![vec![
        "REFERENCE".into(),
        "DIGEST".into(),
        "SIZE".into(),
        "ON DISK".into(),
        "USED BY".into(),
    ]];
    for i in images {
        rows.push(vec![
            i.reference,
            i.digest.chars().take(19).collect(),
            fmt_bytes(Some(i.size)),
            fmt_bytes(Some(i.disk_bytes)),
            i.used_by.join(","),
        ]);
    }
    table(rows);
    Ok(())
}

pub async fn remove(c: &Client, reference: &str) -> Result<(), Failure> {
    c.send::<()>(&Request::RemoveImage(reference.into()))
        .await?;
    println!("{reference}");
    Ok(())
}

pub async fn prune(c: &Client, json: bool) -> Result<(), Failure> {
    let p: PruneReport = c.send(&Request::PruneImages).await?;
    match json {
        true => print_json(&p),
        false => println!(
            "removed {} layers, freed {}",
            p.layers_removed,
            fmt_bytes(Some(p.bytes_freed))
        ),
    }
    Ok(())
}
