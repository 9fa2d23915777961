//! Compiles the message types of the Tidemark ingest and Prometheus
//! remote-write `.proto` files with protox, a pure-Rust protobuf compiler,
//! so building needs no `protoc` on the machine. The gRPC services over
//! them are generated in `tidemark-server`, which refers to these types.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/tidemark/ingest/v1/ingest.proto",
        "../proto/prometheus/remote.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["../proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
