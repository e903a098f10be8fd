//! The hydra-agent daemon. Also the per-container shim when invoked as
//! `hydra-agent __shim PLAN` (dispatched before any runtime or thread starts).

use clap::Parser;
use hydra_agent::daemon::{self, Args};
use hydra_agent::runtime::{shim, SHIM_ARG};

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == SHIM_ARG {
        shim::main(&argv[2].to_string_lossy());
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
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(daemon::run(args, cfg)) {
        eprintln!("hydra-agent: {e:#}");
        std::process::exit(1);
    }
}
