//! Ingest end to end: the Tidemark ingest gRPC service, Prometheus
//! remote-write (with the real Prometheus and node exporter), OTLP over gRPC
//! and HTTP (with a tonic client and the OpenTelemetry Python SDK), and
//! backpressure under overload.

use tidemark_testkit as common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, free_port, wait_until, which};
use common::temp_dir;
use common::{RwSeries, remote_write_body};

#[test]
fn the_grpc_ingest_service_feeds_grpc_sources() {
    use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};

    let dir = temp_dir("server-ingest");
    let server = Server::start(&["--workers", "2"], 0);
    let output = dir.join("out.jsonl");
    let series = |name: &str, host: &str, points: &[(i64, f64)]| Series {
        name: name.into(),
        labels: vec![Label {
            name: "host".into(),
            value: host.into(),
        }],
        points: points
            .iter()
            .map(|&(timestamp_ms, value)| Point {
                timestamp_ms,
                value,
            })
            .collect(),
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime
        .block_on(IngestServiceClient::connect(format!(
            "http://127.0.0.1:{}",
            server.grpc
        )))
        .unwrap();

    // Nobody reads gRPC input yet: the sender is told, nothing is acknowledged.
    let err = runtime
        .block_on(client.write(WriteRequest {
            series: vec![series("cpu", "a", &[(1_000, 1.0)])],
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");

    let pipeline = format!(
        r#"name: pushed
sources:
  in:
    type: grpc
    match: cpu
    max_out_of_orderness: 5s
    idle_timeout: 200ms
transforms:
  w:
    type: window
    inputs: [in]
    window: {{tumbling: 10s}}
    by: [host]
    aggregates: [count, sum]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );

    // Bad samples are rejected alone, by reason; the rest is accepted.
    let request = WriteRequest {
        series: vec![
            series("cpu", "a", &[(1_000, 1.0), (2_000, 2.0), (11_000, 5.0)]),
            series("cpu", "b", &[(3_000, 10.0)]),
            series("9cpu", "a", &[(1_000, 1.0)]),
            Series {
                name: "cpu".into(),
                labels: vec![Label {
                    name: "bad-name".into(),
                    value: "x".into(),
                }],
                points: vec![Point {
                    timestamp_ms: 1,
                    value: 1.0,
                }],
            },
            series("cpu", "c", &[(-5, 1.0)]),
            series("mem", "a", &[(1_000, 7.0)]),
        ],
    };
    let reply = runtime
        .block_on(client.write(request))
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted, 5);
    assert_eq!(reply.rejected, 3);
    assert_eq!(reply.rejected_by_reason["invalid_metric_name"], 1);
    assert_eq!(reply.rejected_by_reason["invalid_label_name"], 1);
    assert_eq!(reply.rejected_by_reason["timestamp_out_of_range"], 1);
    assert_eq!(reply.examples.len(), 3);
    assert_eq!(reply.examples[0].series_index, 2);

    // A client stream, with a sample that moves the watermark past the first window.
    let stream = tokio_stream_of(vec![
        WriteRequest {
            series: vec![series("cpu", "a", &[(12_000, 6.0)])],
        },
        WriteRequest {
            series: vec![series("cpu", "b", &[(25_000, 1.0)])],
        },
    ]);
    let reply = runtime
        .block_on(client.write_stream(stream))
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted, 2);

    // The first window (0 s, 10 s] closed: host a 1+2, host b 10.
    wait_until("the first window", || {
        std::fs::read_to_string(&output)
            .unwrap_or_default()
            .lines()
            .count()
            >= 4
    });
    let rows = std::fs::read_to_string(&output).unwrap();
    assert!(
        rows.contains(
            r#"{"name":"cpu:10s_by_host_sum","labels":{"host":"a"},"timestamp":10000,"value":3.0}"#
        ),
        "{rows}"
    );
    assert!(
        rows.contains(
            r#"{"name":"cpu:10s_by_host_sum","labels":{"host":"b"},"timestamp":10000,"value":10.0}"#
        ),
        "{rows}"
    );
    let (_, status) = server.json("GET", "/api/v1/pipelines/pushed", None);
    assert_eq!(status["samples_in"], 6, "mem was not matched: {status}");
    assert!(server.stop().success());
}

/// A gRPC codec that sends and receives bytes as they are, to send what
/// no generated client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

#[test]
fn a_malformed_grpc_message_is_the_senders_error_and_counted() {
    let server = Server::start(&[], 0);
    // With no pipeline reading gRPC the message is refused before it is
    // read (FAILED_PRECONDITION); with one, a malformed message is the
    // sender's error.
    let pipeline =
        "name: g\nsources:\n  in: {type: grpc}\nsinks:\n  out: {type: blackhole, inputs: [in]}\n";
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(pipeline)).0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", server.grpc))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/tidemark.ingest.v1.IngestService/Write",
        );
        // Field 1 (series) with a length past the end of the message.
        grpc.unary(tonic::Request::new(vec![0x0a, 0x7f, 0x01]), path, RawCodec)
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("not a valid protobuf"), "{err}");
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics
            .contains("tidemark_ingest_rejected_total{listener=\"grpc\",reason=\"malformed\"} 1"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

fn tokio_stream_of<T: Send + 'static>(
    items: Vec<T>,
) -> impl tokio_stream::Stream<Item = T> + Send + 'static {
    tokio_stream::iter(items)
}

/// Applies a pipeline from the remote-write listener to `dir/out.jsonl`;
/// the output's path.
fn apply_remote_write_to_file(server: &Server, dir: &Path) -> std::path::PathBuf {
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: rw\nsources:\n  in: {{type: remote_write, idle_timeout: 200ms}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    output
}

#[test]
fn remote_write_answers_so_that_prometheus_does_the_right_thing() {
    let dir = temp_dir("server-remote-write");
    let server = Server::start(&[], 0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |body: &[u8], encoding: &str| {
        let mut r = agent
            .post(&format!("{}/api/v1/write", server.url))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .send(body)
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let good = remote_write_body(&[(
        &[("__name__", "up"), ("job", "a")],
        &[(1_000, 1.0), (2_000, 1.0)],
    )]);
    // No pipeline reads remote-write yet: 503, so Prometheus keeps the data.
    assert_eq!(post(&good, "snappy").0, 503);
    let output = apply_remote_write_to_file(&server, &dir);
    assert_eq!(post(&good, "snappy").0, 204);
    // Malformed input: 400, not retried.
    assert_eq!(post(&good, "gzip").0, 400);
    assert_eq!(post(b"not snappy at all", "snappy").0, 400);
    let not_protobuf = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap();
    let (status, text) = post(&not_protobuf, "snappy");
    assert_eq!(status, 400);
    assert!(text.contains("invalid protobuf"), "{text}");
    // Bad series are rejected alone; the rest is accepted.
    let mixed = remote_write_body(&[
        (&[("__name__", "up"), ("job", "b")], &[(3_000, 1.0)]),
        (
            &[("__name__", "up"), ("bad-label", "x")],
            &[(3_000, 1.0), (4_000, 1.0)],
        ),
        (&[("job", "c")], &[(3_000, 1.0)]),
    ]);
    let (status, text) = post(&mixed, "snappy");
    assert_eq!(status, 400);
    assert!(
        text.contains("accepted 1 samples")
            && text.contains("2 invalid_label_name")
            && text.contains("1 missing_metric_name"),
        "{text}"
    );
    assert!(server.stop().success());
    let rows = std::fs::read_to_string(&output).unwrap();
    assert_eq!(rows.lines().count(), 3, "{rows}");
}

/// Peak resident memory of a process so far, in MiB (Linux's `VmHWM`).
fn peak_rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// One value of a `/metrics` family (the first row).
fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.request("GET", "/metrics", None).unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

#[test]
fn remote_write_decoding_is_bounded_in_memory() {
    let dir = temp_dir("server-remote-write-bounds");
    let config = dir.join("tidemark.yaml");
    std::fs::write(&config, "limits:\n  max_decode_mb: 32\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()], 0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |body: &[u8]| {
        let mut r = agent
            .post(&format!("{}/api/v1/write", server.url))
            .header("content-encoding", "snappy")
            .send(body)
            .unwrap();
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    // Refused requests leave nothing behind: with no pipeline reading
    // remote-write, 200 requests of new series with 4 KB label values
    // are answered 503 and none of their series is cached.
    let long = "v".repeat(4000);
    for i in 0..200 {
        let names: Vec<String> = (0..50).map(|j| format!("{i}-{j}")).collect();
        let series: Vec<[(&str, &str); 3]> = names
            .iter()
            .map(|n| [("__name__", "up"), ("i", n.as_str()), ("x", long.as_str())])
            .collect();
        let series: Vec<RwSeries<'_>> = series
            .iter()
            .map(|l| (&l[..], &[(1_000, 1.0)][..]))
            .collect();
        assert_eq!(post(&remote_write_body(&series)).0, 503);
    }
    assert_eq!(metric(&server, "tidemark_ingest_series_cache_bytes"), 0.0);

    let output = apply_remote_write_to_file(&server, &dir);
    // One series of 8 M empty labels (16 MiB on the wire, 400 MB if built)
    // beside a good one: the bad one is rejected without being built.
    let mut raw = vec![0x0a];
    let mut labels = [0x0a, 0x00].repeat(8 << 20);
    labels.extend([0x12, 0x00]); // and one sample
    prost::encoding::encode_varint(labels.len() as u64, &mut raw);
    raw.extend(&labels);
    let good = snap::raw::Decoder::new()
        .decompress_vec(&remote_write_body(&[(
            &[("__name__", "up"), ("job", "a")],
            &[(1_000, 1.0)],
        )]))
        .unwrap();
    raw.extend(good);
    let bomb = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let (status, text) = post(&bomb);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("accepted 1 samples") && text.contains("too_many_labels"),
        "{text}"
    );
    // A request that alone needs more than the budget (40 MiB of empty
    // labels against 32 MiB) is refused before it is uncompressed.
    let huge = snap::raw::Encoder::new()
        .compress_vec(&[0x0a, 0x00].repeat(20 << 20))
        .unwrap();
    let (status, text) = post(&huge);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("more than the server's limit of 32 MiB"),
        "{text}"
    );
    // More samples than one request may carry.
    let mut raw = vec![0x0a];
    let samples = [0x12, 0x00].repeat(tidemark_server::remote_write::MAX_SAMPLES + 1);
    prost::encoding::encode_varint(samples.len() as u64, &mut raw);
    raw.extend(&samples);
    let (status, text) = post(&snap::raw::Encoder::new().compress_vec(&raw).unwrap());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("more than 1048576 samples"), "{text}");
    assert_eq!(metric(&server, "tidemark_ingest_decoding_bytes"), 0.0);
    let peak = peak_rss_mb(server.child.id());
    // Built naively, the first body alone takes 400 MB.
    assert!(peak < 200, "peak resident memory {peak} MiB");
    assert!(server.stop().success());
    let rows = std::fs::read_to_string(&output).unwrap();
    assert_eq!(rows.lines().count(), 1, "{rows}");
}

/// A length-delimited protobuf field: `tag` (field number and wire type 2)
/// and `bytes`.
fn len_field(field: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 10);
    prost::encoding::encode_key(field, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Sends `message` as it is to a gRPC method; the reply's bytes or status.
fn grpc_raw(
    server: &Server,
    path: &'static str,
    message: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", server.grpc))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        grpc.unary(tonic::Request::new(message), path, RawCodec)
            .await
            .map(|r| r.into_inner())
    })
}

/// gRPC and OTLP messages are measured before they are decoded, as
/// remote-write bodies are: tonic used to build them whole (16 MiB of
/// empty labels took hundreds of MB) before the budget saw them.
#[test]
fn grpc_and_otlp_decoding_is_bounded_in_memory() {
    use prost::Message;
    use tidemark_server::ingest::proto::WriteResponse;

    let dir = temp_dir("server-grpc-bounds");
    let config = dir.join("tidemark.yaml");
    std::fs::write(&config, "limits:\n  max_decode_mb: 16\n").unwrap();
    let server = Server::start(&["--config", config.to_str().unwrap()], 0);
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: pushed\nsources:\n  g: {{type: grpc, idle_timeout: 200ms}}\n  o: {{type: otlp, idle_timeout: 200ms}}\nsinks:\n  out: {{type: file, inputs: [g, o], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let now = tidemark_engine::time::now_millis();
    let mut point = vec![0x08];
    prost::encoding::encode_varint(now as u64, &mut point);
    point.extend([0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]); // 1.0
    let write = "/tidemark.ingest.v1.IngestService/Write";

    // One series of 7 M empty labels (14 MiB, 300 MB and more if built)
    // beside a good one: the first is rejected without its labels being
    // gathered, the good one is taken.
    let mut bomb = [0x12, 0x00].repeat(7 << 20);
    bomb.extend(len_field(3, &point));
    let mut message = len_field(1, &bomb);
    drop(bomb);
    let mut good = len_field(1, b"up");
    good.extend(len_field(
        2,
        &[len_field(1, b"job"), len_field(2, b"a")].concat(),
    ));
    good.extend(len_field(3, &point));
    message.extend(len_field(1, &good));
    let reply =
        WriteResponse::decode(grpc_raw(&server, write, message).unwrap().as_slice()).unwrap();
    assert_eq!(reply.accepted, 1, "{reply:?}");
    assert_eq!(
        reply.rejected_by_reason.get("too_many_labels"),
        Some(&1),
        "{reply:?}"
    );

    // 1 M empty points (2 MiB) would take 2 MiB and 1 M samples: more
    // than the budget of 16 MiB; refused before anything is decoded.
    let message = len_field(1, &[0x1a, 0x00].repeat(1 << 20));
    let err = grpc_raw(&server, write, message).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains("more than the server's limit of 16 MiB"),
        "{err}"
    );
    // More samples than one message may carry.
    let message = len_field(1, &[0x1a, 0x00].repeat((1 << 20) + 1));
    let err = grpc_raw(&server, write, message).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("more than 1048576 samples"), "{err}");

    // An OTLP gauge point with 2 M empty attributes (4 MiB; 200 MB and
    // more if built): over the budget, on gRPC and over HTTP.
    let mut data_point = [0x3a, 0x00].repeat(2 << 20);
    data_point.push(0x19); // time_unix_nano, fixed64
    data_point.extend((now as u64 * 1_000_000).to_le_bytes());
    let gauge = [len_field(1, b"g"), len_field(5, &len_field(1, &data_point))].concat();
    drop(data_point);
    let export = len_field(1, &len_field(2, &len_field(2, &gauge)));
    let err = grpc_raw(
        &server,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        export.clone(),
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains("more than the server's limit of 16 MiB"),
        "{err}"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("{}/v1/metrics", server.url))
        .header("content-type", "application/x-protobuf")
        .send(&export[..])
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 400, "{text}");
    assert!(
        text.contains("more than the server's limit of 16 MiB"),
        "{text}"
    );
    // A small export is taken, on both paths.
    let small = len_field(
        1,
        &len_field(
            2,
            &len_field(
                2,
                &[
                    len_field(1, b"g"),
                    len_field(
                        5,
                        &len_field(
                            1,
                            &[
                                &[0x19][..],
                                &(now as u64 * 1_000_000).to_le_bytes(),
                                &[0x21],
                                &2.0f64.to_le_bytes(),
                            ]
                            .concat(),
                        ),
                    ),
                ]
                .concat(),
            ),
        ),
    );
    grpc_raw(
        &server,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        small,
    )
    .unwrap();

    assert_eq!(metric(&server, "tidemark_ingest_decoding_bytes"), 0.0);
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    for (listener, n) in [("grpc", 2), ("otlp", 2)] {
        let line = format!(
            "tidemark_ingest_rejected_total{{listener=\"{listener}\",reason=\"malformed\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
    let peak = peak_rss_mb(server.child.id());
    assert!(peak < 200, "peak resident memory {peak} MiB");
    assert!(server.stop().success());
    let rows = std::fs::read_to_string(&output).unwrap();
    assert_eq!(rows.lines().count(), 2, "{rows}");
    assert!(rows.contains("\"up\"") && rows.contains("\"g\""), "{rows}");
}

#[test]
fn prometheus_remote_writes_node_exporter_metrics_into_a_pipeline() {
    let (Some(prometheus), Some(node_exporter)) =
        (which("prometheus"), which("prometheus-node-exporter"))
    else {
        panic!(
            "prometheus or prometheus-node-exporter is missing: run ./deploy/test.sh, which installs Debian's packages"
        );
    };
    let dir = temp_dir("server-prometheus-rw");
    let port = free_port();
    let server = Server::start(&[], port);
    let exporter_port = free_port();
    let mut exporter = Command::new(node_exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        r#"name: from-prometheus
sources:
  prom:
    type: remote_write
    match: '{{__name__=~"node_load1|node_memory_MemAvailable_bytes|tidemark_up"}}'
    max_out_of_orderness: 2s
    idle_timeout: 1s
transforms:
  w:
    type: window
    inputs: [prom]
    window: {{tumbling: 2s}}
    aggregates: [count, last]
sinks:
  out:
    type: file
    inputs: [w]
    path: {}
"#,
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 500ms\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n  - job_name: tidemark\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: http://127.0.0.1:{port}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut found = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        found = std::fs::read_to_string(&output).unwrap_or_default();
        if found.contains("\"name\":\"node_load1:2s_last\"")
            && found.contains("\"name\":\"tidemark_up:2s_last\"")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = exporter.kill();
    let _ = exporter.wait();
    assert!(
        found.contains("\"name\":\"node_load1:2s_last\""),
        "no node-exporter series in the window output: {found}"
    );
    assert!(found.contains("\"job\":\"node\""), "{found}");
    assert!(
        found.contains("\"name\":\"node_memory_MemAvailable_bytes:2s_count\""),
        "{found}"
    );
    let (_, metrics) = server.request("GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains("tidemark_ingest_accepted_total{listener=\"remote_write\"}"),
        "{metrics}"
    );
    assert!(server.stop().success());
}

#[test]
fn otlp_metrics_map_to_prometheus_series() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        metric, number_data_point,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let t = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z in ns
    let number = |v: f64| NumberDataPoint {
        attributes: vec![kv("http.route", "/api")],
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let metric = |name: &str, data: metric::Data| Metric {
        name: name.into(),
        data: Some(data),
        ..Default::default()
    };
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "pod-1"),
                    kv("host.name", "h1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "shop".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    metric(
                        "queue.depth",
                        metric::Data::Gauge(Gauge {
                            data_points: vec![number(7.0)],
                        }),
                    ),
                    metric(
                        "requests",
                        metric::Data::Sum(Sum {
                            data_points: vec![number(42.0)],
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "latency",
                        metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: t,
                                count: 6,
                                sum: Some(1.5),
                                bucket_counts: vec![1, 2, 3],
                                explicit_bounds: vec![0.1, 0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        }),
                    ),
                    metric(
                        "rpc",
                        metric::Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                time_unix_nano: t,
                                count: 10,
                                sum: 2.0,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.99,
                                    value: 0.3,
                                }],
                                ..Default::default()
                            }],
                        }),
                    ),
                    metric(
                        "deltas",
                        metric::Data::Sum(Sum {
                            data_points: vec![number(1.0)],
                            aggregation_temporality: 1,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "exp",
                        metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint::default()],
                            aggregation_temporality: 2,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };

    let dir = temp_dir("server-otlp");
    let server = Server::start(&[], 0);
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: otel\nsources:\n  in: {{type: otlp, idle_timeout: 100ms}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
        output.display()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime
        .block_on(MetricsServiceClient::connect(format!(
            "http://127.0.0.1:{}",
            server.grpc
        )))
        .unwrap();
    let err = runtime
        .block_on(client.export(request.clone()))
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::Unavailable,
        "nobody reads OTLP yet: retry later"
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let reply = runtime
        .block_on(client.export(request.clone()))
        .unwrap()
        .into_inner();
    let partial = reply.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 2, "{}", partial.error_message);
    assert!(partial.error_message.contains("unsupported_metric"));
    // The same over OTLP/HTTP.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = prost::Message::encode_to_vec(&request);
    let r = agent
        .post(&format!("{}/v1/metrics", server.url))
        .header("content-type", "application/x-protobuf")
        .send(&body[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(server.stop().success());

    let rows = common::read_rows(&output);
    let find = |name: &str, extra: Option<(&str, &str)>| {
        rows.iter()
            .filter(|r| {
                r.name == name && extra.is_none_or(|(k, v)| r.labels.get(k).is_some_and(|x| x == v))
            })
            .map(|r| r.value)
            .collect::<Vec<_>>()
    };
    let gauge = rows
        .iter()
        .find(|r| r.name == "queue_depth")
        .expect("gauge");
    assert_eq!(gauge.timestamp, 1_767_225_600_000);
    for (k, v) in [
        ("job", "checkout"),
        ("instance", "pod-1"),
        ("host_name", "h1"),
        ("http_route", "/api"),
        ("otel_scope_name", "shop"),
        ("otel_scope_version", "1.2"),
    ] {
        assert_eq!(
            gauge.labels.get(k).map(String::as_str),
            Some(v),
            "{k} in {:?}",
            gauge.labels
        );
    }
    assert_eq!(find("requests_total", None), vec![42.0, 42.0]);
    assert_eq!(find("latency_bucket", Some(("le", "0.1"))), vec![1.0, 1.0]);
    assert_eq!(find("latency_bucket", Some(("le", "0.5"))), vec![3.0, 3.0]);
    assert_eq!(find("latency_bucket", Some(("le", "+Inf"))), vec![6.0, 6.0]);
    assert_eq!(find("latency_sum", None), vec![1.5, 1.5]);
    assert_eq!(find("latency_count", None), vec![6.0, 6.0]);
    assert_eq!(find("rpc", Some(("quantile", "0.99"))), vec![0.3, 0.3]);
    assert_eq!(find("rpc_count", None), vec![10.0, 10.0]);
    assert!(find("deltas_total", None).is_empty() && find("deltas", None).is_empty());
}

#[test]
fn the_opentelemetry_python_sdk_exports_into_a_pipeline() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deploy-cache/venv/bin/python");
    assert!(
        python.exists(),
        "the OpenTelemetry Python SDK is missing: run ./deploy/test.sh, which installs it into .deploy-cache/venv"
    );
    let dir = temp_dir("server-otel-python");
    let server = Server::start(&[], 0);
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: py\nsources:\n  in: {{type: otlp, idle_timeout: 100ms}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel/export.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("localhost:{}", server.grpc))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.stop().success());
    let rows = common::read_rows(&output);
    let last = |name: &str| {
        rows.iter()
            .rfind(|r| r.name == name)
            .unwrap_or_else(|| panic!("no {name} in {rows:?}"))
    };
    let orders = last("orders_total");
    assert_eq!(orders.value, 10.0);
    assert_eq!(orders.labels.get("job").map(String::as_str), Some("shop"));
    assert_eq!(
        orders.labels.get("instance").map(String::as_str),
        Some("py-1")
    );
    assert_eq!(orders.labels.get("region").map(String::as_str), Some("eu"));
    assert_eq!(
        orders.labels.get("otel_scope_name").map(String::as_str),
        Some("tidemark-test")
    );
    assert_eq!(last("checkout_latency_count").value, 10.0);
    assert!((last("checkout_latency_sum").value - 2.75).abs() < 1e-9);
    assert!(
        rows.iter().any(|r| r.name == "checkout_latency_bucket"
            && r.labels.get("le").is_some_and(|l| l == "+Inf"))
    );
    let gauge = last("queue_depth");
    assert_eq!(
        (gauge.value, gauge.labels.get("queue").map(String::as_str)),
        (5.0, Some("emails"))
    );
}

#[test]
fn overload_is_refused_and_every_accepted_sample_is_processed() {
    use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};

    // A queue that holds one request; eight senders at once offer far more.
    let server = Server::start(&[], 0);
    let pipeline = "name: slow\nsources:\n  in: {type: grpc, queue: 10000, idle_timeout: 100ms}\n\
                    transforms:\n  w: {type: window, inputs: [in], window: {tumbling: 1s}, aggregates: [count, p99]}\n\
                    sinks:\n  out: {type: blackhole, inputs: [w]}\n";
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(pipeline)).0,
        201
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{}", server.grpc);
    let (accepted, refused) = runtime.block_on(async move {
        let mut tasks = Vec::new();
        for sender in 0..8i64 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = IngestServiceClient::connect(url).await.unwrap();
                let (mut accepted, mut refused) = (0u64, 0u64);
                for batch in 0..40i64 {
                    let request = WriteRequest {
                        series: (0..100)
                            .map(|s| Series {
                                name: "load".into(),
                                labels: vec![Label {
                                    name: "s".into(),
                                    value: format!("{sender}-{s}"),
                                }],
                                points: (0..100)
                                    .map(|i| Point {
                                        timestamp_ms: batch * 100 + i,
                                        value: i as f64,
                                    })
                                    .collect(),
                            })
                            .collect(),
                    };
                    match client.write(request).await {
                        Ok(r) => accepted += r.into_inner().accepted,
                        Err(e) => {
                            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
                            refused += 1;
                        }
                    }
                }
                (accepted, refused)
            }));
        }
        let mut totals = (0u64, 0u64);
        for t in tasks {
            let (a, r) = t.await.unwrap();
            totals.0 += a;
            totals.1 += r;
        }
        totals
    });
    assert!(refused > 0, "the senders should have been told to back off");
    assert!(accepted > 0);
    // Memory stayed bounded: 3.2 million samples were offered at once, and
    // the server never held more than its queue and the requests in flight.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 512 * 1024, "peak resident memory {peak_kib} KiB");
    // Every acknowledged sample reaches the pipeline, and nothing else does.
    wait_until("every accepted sample", || {
        server.json("GET", "/api/v1/pipelines/slow", None).1["samples_in"].as_u64()
            == Some(accepted)
    });
    assert!(server.stop().success());
}

#[test]
fn the_tenant_comes_from_the_credential_never_from_the_sender() {
    use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_server::ingest::proto::{Label, Point, Series, WriteRequest};

    let dir = temp_dir("ingest-tenant");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "token-acme acme\ntoken-plain\n").unwrap();
    let server = Server::start(&["--token-file", tokens.to_str().unwrap()], 0);
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: t\nsources:\n  rw: {{type: remote_write, idle_timeout: 100ms}}\n  g: {{type: grpc, idle_timeout: 100ms}}\n\
         sinks:\n  out: {{type: file, inputs: [rw, g], path: {}}}\n",
        output.display()
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let applied = agent
        .post(&format!("{}/api/v1/pipelines", server.url))
        .header("authorization", "Bearer token-plain")
        .header("content-type", "application/yaml")
        .send(&pipeline)
        .unwrap();
    assert_eq!(applied.status().as_u16(), 201);
    // Remote-write as acme, with a forged tenant label: the credential wins.
    let body = remote_write_body(&[(&[("__name__", "up"), ("tenant", "evil")], &[(1_000, 1.0)])]);
    let r = agent
        .post(&format!("{}/api/v1/write", server.url))
        .header("authorization", "Bearer token-acme")
        .header("content-encoding", "snappy")
        .send(&body[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // gRPC ingest with a token without a tenant: no tenant label is added.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = IngestServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
            .await
            .unwrap();
        let mut request = tonic::Request::new(WriteRequest {
            series: vec![Series {
                name: "plain".into(),
                labels: vec![Label {
                    name: "host".into(),
                    value: "a".into(),
                }],
                points: vec![Point {
                    timestamp_ms: 1_000,
                    value: 2.0,
                }],
            }],
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer token-plain".parse().unwrap());
        assert_eq!(
            client.write(request).await.unwrap().into_inner().accepted,
            1
        );
    });
    assert!(server.stop().success());
    let rows = common::read_rows(&output);
    let up = rows.iter().find(|r| r.name == "up").expect("up");
    assert_eq!(up.labels.get("tenant").map(String::as_str), Some("acme"));
    let plain = rows.iter().find(|r| r.name == "plain").expect("plain");
    assert!(!plain.labels.contains_key("tenant"));
}

#[test]
fn special_values_and_timestamp_bounds_on_every_protocol() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    use prost::Message;
    use tidemark_server::ingest::proto::ingest_service_client::IngestServiceClient;
    use tidemark_server::ingest::proto::{Point, Series, WriteRequest};

    let dir = temp_dir("ingest-special");
    // Samples more than an hour old or ten minutes ahead are refused.
    let server = Server::start(&["--max-age", "1h", "--max-future", "10m"], 0);
    let output = dir.join("out.jsonl");
    let pipeline = format!(
        "name: special\nsources:\n  g: {{type: grpc, idle_timeout: 100ms}}\n  rw: {{type: remote_write, idle_timeout: 100ms}}\n  \
         o: {{type: otlp, idle_timeout: 100ms}}\nsinks:\n  out: {{type: file, inputs: [g, rw, o], path: {}}}\n",
        output.display()
    );
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(&pipeline)).0,
        201
    );
    let now = tidemark_engine::time::now_millis();
    let stale_marker = f64::from_bits(0x7ff0_0000_0000_0002);
    // The same five points on each protocol: NaN, +Inf, -Inf are accepted
    // values; a day ahead and a day behind are refused with their reasons.
    let points = [
        (now - 3, f64::NAN),
        (now - 2, f64::INFINITY),
        (now - 1, f64::NEG_INFINITY),
        (now + 86_400_000, 1.0),
        (now - 86_400_000, 1.0),
    ];

    // gRPC ingest.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply = runtime.block_on(async {
        let mut client = IngestServiceClient::connect(format!("http://127.0.0.1:{}", server.grpc))
            .await
            .unwrap();
        client
            .write(WriteRequest {
                series: vec![Series {
                    name: "via_grpc".into(),
                    labels: vec![],
                    points: points
                        .iter()
                        .map(|&(timestamp_ms, value)| Point {
                            timestamp_ms,
                            value,
                        })
                        .collect(),
                }],
            })
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(reply.accepted, 3, "{reply:?}");
    assert_eq!(reply.rejected_by_reason["timestamp_too_new"], 1);
    assert_eq!(reply.rejected_by_reason["timestamp_too_old"], 1);
    assert!(
        reply
            .examples
            .iter()
            .any(|e| e.message.contains(&(now + 86_400_000).to_string())),
        "{reply:?}"
    );

    // Remote-write, with Prometheus' staleness marker (a NaN) too.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut rw_points = points.to_vec();
    rw_points.push((now, stale_marker));
    let body = remote_write_body(&[(&[("__name__", "via_rw")], &rw_points)]);
    let mut r = agent
        .post(&format!("{}/api/v1/write", server.url))
        .header("content-encoding", "snappy")
        .send(&body[..])
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 400, "{text}");
    assert!(
        text.contains("accepted 4 samples")
            && text.contains("1 timestamp_too_new")
            && text.contains("1 timestamp_too_old"),
        "{text}"
    );

    // OTLP over HTTP, gzip-compressed.
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "via_otlp".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points
                            .iter()
                            .map(|&(t, v)| NumberDataPoint {
                                time_unix_nano: t as u64 * 1_000_000,
                                value: Some(number_data_point::Value::AsDouble(v)),
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &request.encode_to_vec()).unwrap();
    let gzipped = gz.finish().unwrap();
    let post_otlp = |body: &[u8], encoding: &str| {
        let mut r = agent
            .post(&format!("{}/v1/metrics", server.url))
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", encoding)
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_vec().unwrap())
    };
    let (status, reply) = post_otlp(&gzipped, "gzip");
    assert_eq!(status, 200);
    let reply =
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse::decode(
            &reply[..],
        )
        .unwrap();
    let partial = reply.partial_success.expect("partial success");
    assert_eq!(partial.rejected_data_points, 2);
    assert!(
        partial.error_message.contains("1 timestamp_too_new")
            && partial.error_message.contains("1 timestamp_too_old"),
        "{}",
        partial.error_message
    );
    // An encoding the server does not speak is refused, not misread.
    assert_eq!(post_otlp(&gzipped, "br").0, 415);
    // A gzip bomb: small on the wire, over the limit once inflated.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut bomb, &vec![0u8; 64 << 20]).unwrap();
    let bomb = bomb.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    assert_eq!(post_otlp(&bomb, "gzip").0, 413);

    // The counters name the reasons.
    let metrics = server.request("GET", "/metrics", None).unwrap().1;
    for protocol in ["grpc", "remote_write", "otlp"] {
        for reason in ["timestamp_too_new", "timestamp_too_old"] {
            let needle = format!("listener=\"{protocol}\",reason=\"{reason}\"}} 1");
            assert!(
                metrics.lines().any(|l| l.contains(&needle)),
                "{needle} not in\n{metrics}"
            );
        }
    }

    assert!(server.stop().success());
    let text = std::fs::read_to_string(&output).unwrap();
    let values = |name: &str| -> Vec<String> {
        let mut rows: Vec<(i64, String)> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["name"] == name)
            .map(|v| (v["timestamp"].as_i64().unwrap(), v["value"].to_string()))
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, v)| v).collect()
    };
    assert_eq!(values("via_grpc"), [r#""NaN""#, r#""+Inf""#, r#""-Inf""#]);
    assert_eq!(values("via_otlp"), [r#""NaN""#, r#""+Inf""#, r#""-Inf""#]);
    assert_eq!(
        values("via_rw"),
        [r#""NaN""#, r#""+Inf""#, r#""-Inf""#, r#""NaN""#]
    );
}

#[test]
fn loadgen_offers_every_protocol_and_reports_what_was_acknowledged() {
    let server = Server::start(&[], 0);
    let grpc = format!("http://127.0.0.1:{}", server.grpc);
    let loadgen = |protocol: &str, target: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "loadgen",
                "--json",
                "--protocol",
                protocol,
                "--target",
                target,
            ])
            .args(["--rate", "20000", "--duration", "1s", "--batch", "500"])
            .args(["--series", "300", "--connections", "2"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status, report)
    };
    // Nobody reads gRPC yet: every batch fails, the reason is reported, exit 1.
    let (status, report) = loadgen("grpc", &grpc);
    assert!(!status.success());
    assert_eq!(report["batches_failed"], 40, "{report}");
    assert!(
        report["first_error"]
            .as_str()
            .unwrap()
            .contains("apply a pipeline"),
        "{report}"
    );

    let pipeline = "name: load\nsources:\n  g: {type: grpc}\n  rw: {type: remote_write}\n  o: {type: otlp}\n\
                    sinks:\n  out: {type: blackhole, inputs: [g, rw, o]}\n";
    assert_eq!(
        server.json("POST", "/api/v1/pipelines", Some(pipeline)).0,
        201
    );
    let mut total = 0;
    for (protocol, target) in [
        ("grpc", grpc.as_str()),
        ("otlp", grpc.as_str()),
        ("remote-write", server.url.as_str()),
    ] {
        let (status, report) = loadgen(protocol, target);
        assert!(status.success(), "{protocol}: {report}");
        assert_eq!(report["batches"], 40, "{protocol}: {report}");
        assert_eq!(report["samples_acked"], 20_000, "{protocol}: {report}");
        assert_eq!(report["batches_refused"], 0, "{protocol}: {report}");
        let p50 = report["p50_ms"].as_f64().unwrap();
        let p99 = report["p99_ms"].as_f64().unwrap();
        assert!(0.0 < p50 && p50 <= p99, "{protocol}: {report}");
        total += 20_000;
    }
    // Everything acknowledged reached the pipeline.
    wait_until("every acknowledged sample", || {
        server.json("GET", "/api/v1/pipelines/load", None).1["samples_in"].as_u64() == Some(total)
    });
    assert!(server.stop().success());
}
