//! Builds and runs the istiod process.

use crate::cli::Args;

pub fn main(args: Args) -> anyhow::Result<()> {
    mesh_proto::telemetry::init_logging(&args.log_format, &args.log_level)?;
    anyhow::bail!("istiod: the proxy is not built into this release yet")
}
