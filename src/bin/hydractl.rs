//! hydractl: operate a hydra-agent over its Unix socket.

use clap::Parser;

fn main() {
    hydra_agent::sys::default_sigpipe();
    let cli = hydra_agent::cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::process::exit(rt.block_on(hydra_agent::cli::run(cli)));
}
