//! Generates the gRPC services with protox, a pure-Rust protobuf compiler,
//! so building needs no `protoc` on the machine: the control service with
//! its messages, and the ingest service over the messages that
//! `tidemark-codecs` generates (`extern_path`), so both crates share one
//! `WriteRequest` type. The ingest service decodes with
//! `crate::codec::StrictCodec` (a malformed message is the sender's
//! `INVALID_ARGUMENT`, counted).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let control = "../proto/tidemark/control/v1/control.proto";
    let ingest = "../proto/tidemark/ingest/v1/ingest.proto";
    for p in [control, ingest] {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_fds(protox::compile([control], ["../proto"])?)?;
    tonic_prost_build::configure()
        .extern_path(".tidemark.ingest.v1", "::tidemark_codecs::ingest::proto")
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(protox::compile([ingest], ["../proto"])?)?;
    Ok(())
}
