//! Compiles the protobuf definitions with a pure-Rust compiler, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/istio/workload/workload.proto",
        "proto/istio/security/authorization.proto",
        "proto/istio/ca/ca.proto",
        "proto/istio/zds/zds.proto",
        "proto/envoy/discovery.proto",
        "proto/mesh/waypoint.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Ordered maps encode deterministically, so equal resources get equal bytes (and
        // versions) however they were built.
        .btree_map(".istio.workload")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
