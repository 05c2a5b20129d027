//! The chained CNI plugin entry point.

/// Runs the plugin and returns the process exit code.
pub fn main() -> i32 {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => {
            println!("mesh-cni {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("--help" | "-h") => {
            println!(
                "mesh-cni {}\nChained CNI plugin of the ambient mesh. Run by the container runtime with \
                 CNI_COMMAND and the network configuration on stdin.",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        _ => {
            eprintln!("mesh-cni: not built into this release yet");
            1
        }
    }
}
