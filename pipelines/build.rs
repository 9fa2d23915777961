//! Compiles the gRPC services' `.proto` files with protox, a pure-Rust
//! protobuf compiler, so building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/tidemark/control/v1/control.proto",
        "../proto/tidemark/ingest/v1/ingest.proto",
        "../proto/prometheus/remote.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["../proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
