//! `meshctl`: the operator CLI of the ambient mesh.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = meshctl::cli::Args::parse();
    meshctl::app::main(args)
}
