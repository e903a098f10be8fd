//! The hydra-agent daemon. Also the launcher of per-container shims when
//! invoked as `hydra-agent __launcher TAG` (dispatched before any runtime or
//! thread starts, so it may fork).

use clap::Parser;
use hydra_agent::daemon::{self, Args};
use hydra_agent::runtime::{shim, LAUNCHER_ARG};

/// Counts the live heap for `/metrics` (`hydra_agent_heap_live_bytes`).
#[global_allocator]
static ALLOC: hydra_agent::sys::heap::Counting = hydra_agent::sys::heap::Counting;

fn main() -> anyhow::Result<()> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if (3..=4).contains(&argv.len()) && argv[1] == LAUNCHER_ARG {
        shim::launcher_main();
    }
    let args = Args::parse();
    let cfg = match daemon::load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hydra-agent: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()?;
    if let Err(e) = rt.block_on(daemon::run(args, cfg)) {
        eprintln!("hydra-agent: {:#}", anyhow::Error::from(e));
        std::process::exit(1);
    }
    Ok(())
}
