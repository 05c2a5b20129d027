//! Builds and runs the cni-agent process.

use super::cli::Args;

pub fn main(args: Args) -> anyhow::Result<()> {
    mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    anyhow::bail!("cni-agent: the proxy is not built into this release yet")
}
