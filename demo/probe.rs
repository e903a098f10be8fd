//! hydra-probe: run inside a container by the security tests (std only,
//! static; built into the busybox test image by scripts/build-images).
//!
//!   hydra-probe syscalls      one line per attempt: `NAME=ok` or `NAME=ERRNO`
//!   hydra-probe fds           the open fds, but the one listing them
//!   hydra-probe write PATH    tries to open PATH for writing: `ok` or the error

use std::io::Write;

extern "C" {
    fn syscall(num: i64, ...) -> i64;
    fn __errno_location() -> *mut i32;
}

fn errno_name(e: i32) -> String {
    match e {
        1 => "EPERM".into(),
        13 => "EACCES".into(),
        22 => "EINVAL".into(),
        38 => "ENOSYS".into(),
        n => format!("errno{n}"),
    }
}

/// One raw syscall; a child created by an allowed clone exits at once.
fn attempt(name: &str, nr: i64, a: [i64; 5]) -> String {
    // SAFETY: the arguments are plain integers or null pointers the kernel
    // checks; the calls either fail or have effects confined to this process.
    let r = unsafe { syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
    if r == 0 && name.starts_with("clone") {
        // SAFETY: exit_group in the child of an allowed clone
        unsafe { syscall(231, 0i64) };
    }
    if r < 0 {
        // SAFETY: errno of this thread
        let e = unsafe { *__errno_location() };
        format!("{name}={}", errno_name(e))
    } else {
        format!("{name}=ok")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::io::stdout();
    let mut o = out.lock();
    match args.get(1).map(String::as_str) {
        Some("syscalls") => {
            let tmp = b"/tmp\0".as_ptr() as i64;
            let tmpfs = b"tmpfs\0".as_ptr() as i64;
            for l in [
                attempt("mount", 165, [tmpfs, tmp, tmpfs, 0, 0]),
                attempt("umount2", 166, [tmp, 0, 0, 0, 0]),
                attempt("unshare_ns", 272, [0x0002_0000, 0, 0, 0, 0]),
                attempt("unshare_user", 272, [0x1000_0000, 0, 0, 0, 0]),
                attempt("setns", 308, [0, 0, 0, 0, 0]),
                attempt("keyctl", 250, [0, 0, 0, 0, 0]),
                attempt("add_key", 248, [0, 0, 0, 0, 0]),
                attempt("bpf", 321, [0, 0, 0, 0, 0]),
                attempt("perf_event_open", 298, [0, 0, -1, -1, 0]),
                attempt("ptrace", 101, [0, 1, 0, 0, 0]),
                attempt("clone_newns", 56, [0x0002_0000 | 17, 0, 0, 0, 0]),
                attempt("clone3", 435, [0, 0, 0, 0, 0]),
                attempt("reboot", 169, [0, 0, 0, 0, 0]),
                attempt("swapoff", 168, [tmp, 0, 0, 0, 0]),
                attempt("init_module", 175, [0, 0, 0, 0, 0]),
                attempt("open_by_handle_at", 304, [0, 0, 0, 0, 0]),
                attempt("userfaultfd", 323, [0, 0, 0, 0, 0]),
                attempt("personality_bad", 135, [0x0040_0000, 0, 0, 0, 0]),
                attempt("personality_query", 135, [0xffff_ffff, 0, 0, 0, 0]),
                attempt("x32_getpid", 0x4000_0000 | 39, [0, 0, 0, 0, 0]),
                attempt("getpid", 39, [0, 0, 0, 0, 0]),
            ] {
                let _ = writeln!(o, "{l}");
            }
        }
        Some("fds") => {
            let mut fds = Vec::new();
            for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let target = std::fs::read_link(e.path()).unwrap_or_default();
                // the directory being listed is ours
                if !target.to_string_lossy().ends_with("/fd") {
                    fds.push(n);
                }
            }
            fds.sort();
            let _ = writeln!(o, "fds={}", fds.join(","));
        }
        Some("write") => {
            let p = args.get(2).map(String::as_str).unwrap_or("");
            match std::fs::OpenOptions::new().write(true).open(p) {
                Ok(_) => {
                    let _ = writeln!(o, "write {p}=ok");
                }
                Err(e) => {
                    let _ = writeln!(o, "write {p}={}", errno_name(e.raw_os_error().unwrap_or(0)));
                }
            }
        }
        _ => {
            let _ = writeln!(o, "usage: hydra-probe syscalls|fds|write PATH");
            std::process::exit(2);
        }
    }
}
