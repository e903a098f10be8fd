//! The shape of the source, checked: modules import only from layers below
//! their own (no cycle can form), no source file over 500 lines, no function
//! over 80. The layer order is the README's architecture section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom first; a module may use `crate::X` only for X of a lower rank.
const LAYERS: &[(&str, u32)] = &[
    ("model", 0),
    ("sys", 0),
    ("fsutil", 0),
    ("config", 1),
    ("store", 2),
    ("cgroup", 2),
    ("image", 2),
    ("disk", 2),
    ("network", 3),
    ("telemetry", 3),
    ("runtime", 4),
    ("supervisor", 5),
    ("api", 6),
    ("cli", 7),
    ("daemon", 7),
];

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

fn rank(m: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == m).map(|(_, r)| *r)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without comments, strings and char literals (replaced by
/// spaces; newlines kept), so braces and paths can be counted.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            i + rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            i + 2
                + rest[2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(rest.len() - 2, |p| p + 2)
        } else if rest.starts_with(b"r#\"")
            || rest.starts_with(b"r\"")
            || rest.starts_with(b"br#\"")
            || rest.starts_with(b"br\"")
        {
            let q = rest.iter().position(|&c| c == b'"').unwrap();
            let hashes = rest[..q].iter().filter(|&&c| c == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            i + q
                + 1
                + rest[q + 1..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .unwrap()
                + close.len()
        } else if rest[0] == b'"' {
            let mut j = 1;
            while rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            i + j + 1
        } else if rest[0] == b'\'' && rest.len() > 2 && (rest[1] == b'\\' || rest[2] == b'\'') {
            // a char literal ('{', '\n'), not a lifetime
            let j = if rest[1] == b'\\' {
                3 + rest[3..].iter().position(|&c| c == b'\'').unwrap()
            } else {
                2
            };
            i + j + 1
        } else {
            out.push(rest[0] as char);
            i += 1;
            continue;
        };
        blank(&mut out, &b[i..end]);
        i = end;
    }
    out
}

/// `(name, first line, lines)` of every function with a body.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(at) = t.find("fn ") else { continue };
        let head = &t[..at];
        if !head.split_whitespace().all(|w| {
            matches!(
                w,
                "pub" | "pub(crate)" | "pub(super)" | "async" | "unsafe" | "const" | "extern"
            )
        }) {
            continue;
        }
        let name: String = t[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // the body: from the first `{` after the signature to its match
        let (mut depth, mut started, mut end) = (0i32, false, None);
        'scan: for (k, line) in lines.iter().enumerate().skip(n) {
            for c in line.chars() {
                match c {
                    ';' if !started && depth == 0 => break 'scan,
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => {
                        depth -= 1;
                        if started && depth == 0 {
                            end = Some(k);
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = end {
            out.push((name, n + 1, e - n + 1));
        }
    }
    out
}

#[test]
fn layers_files_and_functions() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    if !src.is_dir() {
        // the VM carries test binaries, not sources; the host run checks them
        eprintln!("SKIPPED: no sources at {}", src.display());
        return;
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        let code = code_only(&text);
        let me = rel
            .iter()
            .next()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!(
                "{}: {lines} lines (at most {MAX_FILE_LINES})",
                rel.display()
            ));
        }
        for (name, at, n) in functions(&code) {
            if n > MAX_FN_LINES {
                problems.push(format!(
                    "{}:{at}: fn {name} is {n} lines (at most {MAX_FN_LINES})",
                    rel.display()
                ));
            }
        }
        let Some(my_rank) = rank(&me) else {
            // lib.rs and the binaries sit above everything
            continue;
        };
        for (i, _) in code.match_indices("crate::") {
            let dep: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if dep == me || dep.is_empty() || dep.chars().next().unwrap().is_uppercase() {
                continue;
            }
            let line = code[..i].lines().count();
            match rank(&dep) {
                Some(r) if r < my_rank => {
                    edges.entry((me.clone(), dep)).or_insert_with(|| format!("{}:{line}", rel.display()));
                }
                Some(_) => problems.push(format!(
                    "{}:{line}: {me} (layer {my_rank}) uses crate::{dep} (layer {}), which is not below it",
                    rel.display(),
                    rank(&dep).unwrap()
                )),
                None => problems.push(format!("{}:{line}: crate::{dep} is in no layer", rel.display())),
            }
        }
    }
    // tests and benches: the file size rule too (scenario tests may be long)
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut others = Vec::new();
    for d in ["tests", "benches"] {
        rust_files(&root.join(d), &mut others);
    }
    for f in others {
        let n = std::fs::read_to_string(&f).unwrap().lines().count();
        if n > MAX_FILE_LINES {
            let rel = f.strip_prefix(root).unwrap().display().to_string();
            problems.push(format!("{rel}: {n} lines (at most {MAX_FILE_LINES})"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // every layer is used from above (the table is not stale)
    for (m, _) in LAYERS
        .iter()
        .filter(|(m, _)| !matches!(*m, "cli" | "daemon"))
    {
        assert!(edges.keys().any(|(_, d)| d == m), "nothing uses {m}");
    }
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = code_only("fn a() {\n let s = \"}\"; let c = '{';\n // }\n}\nfn b(x: u8) -> u8;\n");
    assert_eq!(functions(&code), vec![("a".to_string(), 1, 4)]);
    assert!(!code_only("let x = \"crate::api\";").contains("crate::"));
}
