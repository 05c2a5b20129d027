//! Runs one `meshctl` command.

use crate::cli::{Args, Command};

pub fn main(args: Args) -> anyhow::Result<()> {
    match args.command {
        Some(Command::Version) | None => {
            println!("meshctl {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
