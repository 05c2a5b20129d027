//! `waypoint`: the L7 waypoint proxy of the ambient mesh.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = waypoint::cli::Args::parse();
    waypoint::app::main(args)
}
