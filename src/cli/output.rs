//! Printing: JSON, tables, sizes, a container's status.

use crate::api::ContainerInfo;

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

pub fn table(rows: Vec<Vec<String>>) {
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

pub fn fmt_bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}Gi", b >> 30),
        Some(b) if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}Mi", b >> 20),
        Some(b) => b.to_string(),
    }
}

pub fn status_of(c: &ContainerInfo) -> String {
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
