//! Builds and runs the waypoint process.

use crate::cli::Args;

pub fn main(args: Args) -> anyhow::Result<()> {
    mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    anyhow::bail!("waypoint: the proxy is not built into this release yet")
}
