//! `meshctl completion bash|zsh|fish|...`: the shell completion script on standard output.

use clap::CommandFactory;

use crate::cli::{Args, CompletionArgs};

pub fn run(args: &CompletionArgs) -> anyhow::Result<u8> {
    let mut cmd = Args::command();
    clap_complete::generate(args.shell, &mut cmd, "meshctl", &mut std::io::stdout());
    Ok(super::EXIT_OK)
}
