//! Man pages and shell completions from the clap definitions, for the
//! packages (scripts/package): `cargo run --example gen-docs -- OUT_DIR`
//! writes OUT_DIR/man/{hydra-agent.8,hydractl.1,hydractl-*.1} and
//! OUT_DIR/completions/{bash,zsh,fish}/. Nothing here is written by hand,
//! so the pages cannot drift from the flags.

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: gen-docs OUT_DIR"));
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let agent = hydra_agent::daemon::Args::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(agent.clone())
        .section("8")
        .render(&mut page)?;
    std::fs::write(man.join("hydra-agent.8"), page)?;
    let ctl = hydra_agent::cli::Cli::command();
    clap_mangen::generate_to(ctl.clone(), &man)?;
    for (shell, dir, name) in [
        (Shell::Bash, "bash", "{}"),
        (Shell::Zsh, "zsh", "_{}"),
        (Shell::Fish, "fish", "{}.fish"),
    ] {
        let d = out.join("completions").join(dir);
        std::fs::create_dir_all(&d)?;
        for cmd in [&ctl, &agent] {
            let bin = cmd.get_name().to_string();
            let mut f = std::fs::File::create(d.join(name.replace("{}", &bin)))?;
            clap_complete::generate(shell, &mut cmd.clone(), &bin, &mut f);
        }
    }
    Ok(())
}
