//! `istiod`: the control plane of the ambient mesh.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = istiod::cli::Args::parse();
    istiod::app::main(args)
}
