//! `ztunnel`: the per-node L4 proxy of the ambient mesh.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = ztunnel::cli::Args::parse();
    ztunnel::app::main(args)
}
