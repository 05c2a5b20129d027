//! `mesh-cni`: the chained CNI plugin. The container runtime runs it with `CNI_*` variables and the
//! network configuration on stdin; `--help` and `--version` are for people.

fn main() {
    std::process::exit(cni::plugin::main());
}
