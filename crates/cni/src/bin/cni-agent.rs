//! `cni-agent`: the node agent that programs redirection inside pod network namespaces.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cni::agent::cli::Args::parse();
    cni::agent::app::main(args)
}
