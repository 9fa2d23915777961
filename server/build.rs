//! Generates the gRPC services with protox, a pure-Rust protobuf compiler,
//! so building needs no `protoc` on the machine: the control service with
//! its messages, and a client of the ingest service over the messages that
//! `tidemark-codecs` generates (`extern_path`), so both crates share one
//! `WriteRequest` type.
//!
//! The servers of the two ingest services (Tidemark's own and OTLP's
//! metrics service) are described by hand (`tonic_build::manual`): same
//! routes and messages on the wire, but a request reaches the handler as
//! `crate::codec::Encoded`, so that the server measures and budgets what
//! decoding it takes before it decodes (`crate::codec`).

use tonic_build::manual::{Builder, Method, Service};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let control = "../proto/tidemark/control/v1/control.proto";
    let ingest = "../proto/tidemark/ingest/v1/ingest.proto";
    for p in [control, ingest] {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_fds(protox::compile([control], ["../proto"])?)?;
    tonic_prost_build::configure()
        .build_server(false)
        .extern_path(".tidemark.ingest.v1", "::tidemark_codecs::ingest::proto")
        .compile_fds(protox::compile([ingest], ["../proto"])?)?;

    let encoded = |name: &str, route: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::codec::Encoded")
            .output_type(output)
            .codec_path("crate::codec::RawCodec")
    };
    let write_response = "::tidemark_codecs::ingest::proto::WriteResponse";
    let ingest_service = Service::builder()
        .name("IngestService")
        .package("tidemark.ingest.v1")
        .method(encoded("write", "Write", write_response).build())
        .method(
            encoded("write_stream", "WriteStream", write_response)
                .client_streaming()
                .build(),
        )
        .build();
    let otlp_service = Service::builder()
        .name("MetricsService")
        .package("opentelemetry.proto.collector.metrics.v1")
        .method(
            encoded(
                "export",
                "Export",
                "::opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse",
            )
            .build(),
        )
        .build();
    Builder::new()
        .build_client(false)
        .compile(&[ingest_service, otlp_service]);
    Ok(())
}
