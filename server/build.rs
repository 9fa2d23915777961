//! Generates the gRPC services with protox, a pure-Rust protobuf compiler,
//! so building needs no `protoc` on the machine: the control service with
//! its messages, and the ingest service over the messages that
//! `tidemark-codecs` generates (`extern_path`), so both crates share one
//! `WriteRequest` type.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/tidemark/control/v1/control.proto",
        "../proto/tidemark/ingest/v1/ingest.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let descriptors = protox::compile(protos, ["../proto"])?;
    tonic_prost_build::configure()
        .extern_path(".tidemark.ingest.v1", "::tidemark_codecs::ingest::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
