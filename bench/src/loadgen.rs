//! `tidemark loadgen`: an open-loop load generator for the three ingest
//! protocols (Tidemark gRPC, Prometheus remote-write, OTLP over gRPC).
//!
//! Open loop: batch `i` is due at `start + i * batch / rate`, whatever
//! happened to the batches before it. Connection `k` sends batches
//! `k, k + C, k + 2C, ...`, one request in flight at a time (as a
//! remote-write shard or an OTLP exporter consumer does). A batch's latency
//! runs from when it was due to its acknowledgement, so a server that stalls
//! cannot hide its delay behind a sender that waits for it (coordinated
//! omission): if the connection was still busy when the batch fell due, the
//! wait counts. Only when the connection was idle does the clock start at
//! the actual send, so that the generator's own timer slack (tokio's timer
//! has millisecond resolution) is not charged to the server.
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde::Serialize;

use tidemark_codecs::remote_write::proto as rw;
use tidemark_server::ingest::proto as ingest;

/// Which protocol to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadProtocol {
    /// `tidemark.ingest.v1.IngestService/Write` on the gRPC listener.
    Grpc,
    /// Prometheus remote-write 1.0 (`POST /api/v1/write`, snappy) on the HTTP listener.
    RemoteWrite,
    /// OTLP `MetricsService/Export` on the gRPC listener.
    Otlp,
}

impl LoadProtocol {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LoadProtocol::Grpc => "grpc",
            LoadProtocol::RemoteWrite => "remote-write",
            LoadProtocol::Otlp => "otlp",
        }
    }
}

/// What to send, where, and how fast.
#[derive(Clone, Debug, clap::Args)]
pub struct LoadOptions {
    /// Protocol.
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: LoadProtocol,
    /// Server address: the gRPC listener for grpc and otlp, the HTTP listener for remote-write.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub target: String,
    /// Offered load in samples per second.
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    /// Distinct series, sent round robin.
    #[arg(long, default_value_t = 10_000)]
    pub series: u64,
    /// Samples per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to offer load, such as `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Metric name of the generated series.
    #[arg(long, default_value = "loadgen_value")]
    pub metric: String,
    /// Bearer token (also `TIDEMARK_TOKEN`).
    #[arg(long, env = "TIDEMARK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    tidemark_engine::time::parse_duration(text).map_err(|e| e.to_string())
}

/// What a run achieved. Latencies are in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Protocol sent.
    pub protocol: Option<LoadProtocol>,
    /// Samples per second offered.
    pub offered_rate: f64,
    /// Samples acknowledged per second of the run.
    pub achieved_rate: f64,
    /// Seconds from the first batch's due time to the last acknowledgement.
    pub elapsed_s: f64,
    /// Batches due in the run.
    pub batches: u64,
    /// Samples the server acknowledged as accepted.
    pub samples_acked: u64,
    /// Samples the server acknowledged but rejected (invalid; should be 0).
    pub samples_rejected: u64,
    /// Batches refused for backpressure (RESOURCE_EXHAUSTED, 503).
    pub batches_refused: u64,
    /// Batches that failed otherwise (connection errors, other statuses).
    pub batches_failed: u64,
    /// The first failure or refusal, for the operator.
    pub first_error: Option<String>,
    /// Latency percentiles of acknowledged batches.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest latency.
    pub max_ms: f64,
}

impl LoadReport {
    /// A human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "offered {:.0} samples/s, achieved {:.0} samples/s over {:.1} s; {} batches, {} samples acknowledged\n\
             latency from due time to ack: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            self.offered_rate,
            self.achieved_rate,
            self.elapsed_s,
            self.batches,
            self.samples_acked,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
        );
        if self.batches_refused + self.batches_failed + self.samples_rejected > 0 {
            s += &format!(
                "\nrefused {} batches (backpressure), failed {}, rejected {} samples; first: {}",
                self.batches_refused,
                self.batches_failed,
                self.samples_rejected,
                self.first_error.as_deref().unwrap_or("-")
            );
        }
        s
    }
}

enum Outcome {
    Acked { accepted: u64, rejected: u64 },
    Refused(String),
    Failed(String),
}

enum Client {
    Grpc(tonic::transport::Channel),
    Otlp(
        opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient<
            tonic::transport::Channel,
        >,
    ),
    RemoteWrite {
        sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        uri: hyper::Uri,
    },
}

/// Series labels, built once and shared by every batch.
struct Catalog {
    metric: String,
    series: Vec<String>,
    /// Each series as an encoded `WriteRequest.series` entry with one point,
    /// for the gRPC protocol: a batch is these copied end to end with the
    /// point's timestamp and value written in place, so the generator spends
    /// its time sending rather than allocating and encoding.
    grpc: Vec<Template>,
}

/// An encoded series entry and where its point's fields sit.
struct Template {
    bytes: Vec<u8>,
    timestamp_at: usize,
    value_at: usize,
}

/// Timestamps in `[2^35, 2^42)` ms (years 1971 to 2109) are 6-byte varints,
/// so a template's length does not depend on the time it is sent.
const TIMESTAMP_VARINT: std::ops::Range<i64> = (1 << 35)..(1 << 42);

impl Template {
    fn new(metric: &str, series: &str) -> Template {
        // Marker values, found again in the encoding.
        let (ts, value) = ((1i64 << 41) + 0x1234_5678, 1234.5678f64);
        let bytes = ingest::WriteRequest {
            series: vec![ingest::Series {
                name: metric.to_owned(),
                labels: vec![ingest::Label {
                    name: "series".into(),
                    value: series.to_owned(),
                }],
                points: vec![ingest::Point {
                    timestamp_ms: ts,
                    value,
                }],
            }],
        }
        .encode_to_vec();
        let mut varint = Vec::new();
        prost::encoding::encode_varint(ts as u64, &mut varint);
        let find = |needle: &[u8]| {
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .expect("marker in the encoding")
        };
        Template {
            timestamp_at: find(&varint),
            value_at: find(&value.to_le_bytes()),
            bytes,
        }
    }

    fn append(&self, out: &mut Vec<u8>, timestamp_ms: i64, value: f64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let mut slot = &mut out[start + self.timestamp_at..start + self.timestamp_at + 6];
        prost::encoding::encode_varint(timestamp_ms as u64, &mut slot);
        out[start + self.value_at..start + self.value_at + 8].copy_from_slice(&value.to_le_bytes());
    }
}

/// Sends an already-encoded `WriteRequest` and decodes the `WriteResponse`.
#[derive(Clone, Copy, Default)]
struct RawWriteCodec;

impl tonic::codec::Codec for RawWriteCodec {
    type Encode = Bytes;
    type Decode = ingest::WriteResponse;
    type Encoder = RawWriteCodec;
    type Decoder = RawWriteCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawWriteCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawWriteCodec
    }
}

impl tonic::codec::Encoder for RawWriteCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawWriteCodec {
    type Item = ingest::WriteResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ingest::WriteResponse>, tonic::Status> {
        ingest::WriteResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Catalog {
    fn indexes(&self, index: u64, batch: usize) -> impl Iterator<Item = (usize, f64)> {
        let n = self.series.len() as u64;
        (0..batch as u64).map(move |j| {
            let k = (index * batch as u64 + j) % n;
            (k as usize, (index % 1000) as f64 + j as f64)
        })
    }

    fn samples(&self, index: u64, batch: usize) -> impl Iterator<Item = (&str, f64)> {
        self.indexes(index, batch)
            .map(|(k, v)| (self.series[k].as_str(), v))
    }
}

impl Client {
    async fn connect(options: &LoadOptions) -> anyhow::Result<Client> {
        let target = options.target.trim_end_matches('/').to_owned();
        Ok(match options.protocol {
            LoadProtocol::Grpc | LoadProtocol::Otlp => {
                let channel = tonic::transport::Endpoint::from_shared(target.clone())?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {e}"))?;
                if options.protocol == LoadProtocol::Grpc {
                    Client::Grpc(channel)
                } else {
                    Client::Otlp(
                        opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::new(channel),
                    )
                }
            }
            LoadProtocol::RemoteWrite => {
                let uri: hyper::Uri = format!("{target}/api/v1/write").parse()?;
                let authority = uri
                    .authority()
                    .ok_or_else(|| anyhow::anyhow!("--target needs host:port: {target}"))?
                    .to_string();
                anyhow::ensure!(
                    uri.scheme_str() == Some("http"),
                    "remote-write load is sent over plain http:// ({target})"
                );
                let stream = tokio::net::TcpStream::connect(&authority)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot connect to {authority}: {e}"))?;
                stream.set_nodelay(true)?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await?;
                tokio::spawn(connection);
                Client::RemoteWrite { sender, uri }
            }
        })
    }

    async fn send(
        &mut self,
        catalog: &Catalog,
        index: u64,
        batch: usize,
        timestamp_ms: i64,
        token: Option<&str>,
    ) -> Outcome {
        let bearer = token.map(|t| format!("Bearer {t}"));
        match self {
            Client::Grpc(channel) if TIMESTAMP_VARINT.contains(&timestamp_ms) => {
                let mut body = Vec::with_capacity(batch * catalog.grpc[0].bytes.len());
                for (k, v) in catalog.indexes(index, batch) {
                    catalog.grpc[k].append(&mut body, timestamp_ms, v);
                }
                let request = grpc_request(Bytes::from(body), bearer.as_deref());
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                if let Err(e) = grpc.ready().await {
                    return Outcome::Failed(format!("connection: {e}"));
                }
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/tidemark.ingest.v1.IngestService/Write",
                );
                ingest_outcome(grpc.unary(request, path, RawWriteCodec).await)
            }
            Client::Grpc(channel) => {
                let mut client =
                    ingest::ingest_service_client::IngestServiceClient::new(channel.clone());
                let request = ingest::WriteRequest {
                    series: catalog
                        .samples(index, batch)
                        .map(|(value, v)| ingest::Series {
                            name: catalog.metric.clone(),
                            labels: vec![ingest::Label {
                                name: "series".into(),
                                value: value.to_owned(),
                            }],
                            points: vec![ingest::Point {
                                timestamp_ms,
                                value: v,
                            }],
                        })
                        .collect(),
                };
                let request = grpc_request(request, bearer.as_deref());
                ingest_outcome(client.write(request).await)
            }
            Client::Otlp(client) => {
                use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
                use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
                use opentelemetry_proto::tonic::metrics::v1::{
                    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric,
                    number_data_point,
                };
                let points = catalog
                    .samples(index, batch)
                    .map(|(value, v)| NumberDataPoint {
                        attributes: vec![KeyValue {
                            key: "series".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(value.to_owned())),
                            }),
                            ..Default::default()
                        }],
                        time_unix_nano: timestamp_ms as u64 * 1_000_000,
                        value: Some(number_data_point::Value::AsDouble(v)),
                        ..Default::default()
                    })
                    .collect();
                let request = ExportMetricsServiceRequest {
                    resource_metrics: vec![ResourceMetrics {
                        scope_metrics: vec![ScopeMetrics {
                            metrics: vec![Metric {
                                name: catalog.metric.clone(),
                                data: Some(metric::Data::Gauge(Gauge {
                                    data_points: points,
                                })),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                };
                let request = grpc_request(request, bearer.as_deref());
                match client.export(request).await {
                    Ok(r) => {
                        let rejected = r
                            .into_inner()
                            .partial_success
                            .map_or(0, |p| p.rejected_data_points.max(0) as u64);
                        Outcome::Acked {
                            accepted: batch as u64 - rejected.min(batch as u64),
                            rejected,
                        }
                    }
                    Err(s) => grpc_outcome(s),
                }
            }
            Client::RemoteWrite { sender, uri } => {
                let request = rw::WriteRequest {
                    timeseries: catalog
                        .samples(index, batch)
                        .map(|(value, v)| rw::TimeSeries {
                            labels: vec![
                                rw::Label {
                                    name: "__name__".into(),
                                    value: catalog.metric.clone(),
                                },
                                rw::Label {
                                    name: "series".into(),
                                    value: value.to_owned(),
                                },
                            ],
                            samples: vec![rw::Sample {
                                value: v,
                                timestamp: timestamp_ms,
                            }],
                        })
                        .collect(),
                };
                let body = match snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()) {
                    Ok(b) => b,
                    Err(e) => return Outcome::Failed(format!("snappy: {e}")),
                };
                let mut builder = hyper::Request::post(uri.clone())
                    .header("host", uri.authority().map_or("", |a| a.as_str()))
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0");
                if let Some(b) = &bearer {
                    builder = builder.header("authorization", b);
                }
                let request = match builder.body(Full::new(Bytes::from(body))) {
                    Ok(r) => r,
                    Err(e) => return Outcome::Failed(e.to_string()),
                };
                if let Err(e) = sender.ready().await {
                    return Outcome::Failed(format!("connection: {e}"));
                }
                match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response
                            .into_body()
                            .collect()
                            .await
                            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                            .unwrap_or_default();
                        match status.as_u16() {
                            204 | 200 => Outcome::Acked {
                                accepted: batch as u64,
                                rejected: 0,
                            },
                            503 | 429 => Outcome::Refused(format!("{status}: {}", body.trim())),
                            _ => Outcome::Failed(format!("{status}: {}", body.trim())),
                        }
                    }
                    Err(e) => Outcome::Failed(format!("request: {e}")),
                }
            }
        }
    }
}

fn grpc_request<T>(message: T, bearer: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(v) = bearer.and_then(|b| b.parse().ok()) {
        request.metadata_mut().insert("authorization", v);
    }
    request
}

fn ingest_outcome(reply: Result<tonic::Response<ingest::WriteResponse>, tonic::Status>) -> Outcome {
    match reply {
        Ok(r) => {
            let r = r.into_inner();
            Outcome::Acked {
                accepted: r.accepted,
                rejected: r.rejected,
            }
        }
        Err(s) => grpc_outcome(s),
    }
}

fn grpc_outcome(status: tonic::Status) -> Outcome {
    match status.code() {
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable => {
            Outcome::Refused(format!("{:?}: {}", status.code(), status.message()))
        }
        code => Outcome::Failed(format!("{code:?}: {}", status.message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_encode_what_prost_encodes() {
        let catalog = Catalog {
            metric: "m".into(),
            series: vec!["s0".into(), "s1".into()],
            grpc: vec![Template::new("m", "s0"), Template::new("m", "s1")],
        };
        let now = tidemark_engine::time::now_millis();
        assert!(TIMESTAMP_VARINT.contains(&now));
        let mut raw = Vec::new();
        for (k, v) in catalog.indexes(3, 5) {
            catalog.grpc[k].append(&mut raw, now, v);
        }
        let expected = ingest::WriteRequest {
            series: catalog
                .samples(3, 5)
                .map(|(s, v)| ingest::Series {
                    name: "m".into(),
                    labels: vec![ingest::Label {
                        name: "series".into(),
                        value: s.into(),
                    }],
                    points: vec![ingest::Point {
                        timestamp_ms: now,
                        value: v,
                    }],
                })
                .collect(),
        };
        assert_eq!(ingest::WriteRequest::decode(&raw[..]).unwrap(), expected);
    }
}

#[derive(Default)]
struct Tally {
    acked: u64,
    rejected: u64,
    refused: u64,
    failed: u64,
    first_error: Option<String>,
    last_ack: Option<Instant>,
}

/// Runs the load and reports what it achieved.
pub fn run_load(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        options.rate > 0.0 && options.rate.is_finite(),
        "--rate must be positive"
    );
    anyhow::ensure!(options.series > 0, "--series must be positive");
    anyhow::ensure!(options.batch > 0, "--batch must be positive");
    anyhow::ensure!(options.connections > 0, "--connections must be positive");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.connections.min(2))
        .enable_all()
        .build()?;
    runtime.block_on(run_async(options))
}

async fn run_async(options: &LoadOptions) -> anyhow::Result<LoadReport> {
    let catalog = Arc::new(Catalog {
        metric: options.metric.clone(),
        series: (0..options.series).map(|k| format!("s{k}")).collect(),
        grpc: if options.protocol == LoadProtocol::Grpc {
            (0..options.series)
                .map(|k| Template::new(&options.metric, &format!("s{k}")))
                .collect()
        } else {
            Vec::new()
        },
    });
    let mut clients = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        clients.push(Client::connect(options).await?);
    }
    let interval = Duration::from_secs_f64(options.batch as f64 / options.rate);
    let batches = ((options.duration.as_secs_f64() * options.rate / options.batch as f64).round()
        as u64)
        .max(1);
    let start = Instant::now() + Duration::from_millis(20);
    let wall_start = tidemark_engine::time::now_millis() + 20;
    let connections = options.connections as u64;
    let mut tasks = Vec::new();
    for (k, mut client) in clients.into_iter().enumerate() {
        let catalog = Arc::clone(&catalog);
        let token = options.token.clone();
        let batch = options.batch;
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds");
            let mut tally = Tally::default();
            let mut free_since = start;
            let mut index = k as u64;
            while index < batches {
                let due = start + interval.mul_f64(index as f64);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
                let sent = Instant::now();
                // Idle when it fell due: the clock starts at the send.
                let clock = if free_since <= due {
                    sent.max(due)
                } else {
                    due
                };
                let timestamp = wall_start + (due - start).as_millis() as i64;
                let outcome = client
                    .send(&catalog, index, batch, timestamp, token.as_deref())
                    .await;
                let done = Instant::now();
                free_since = done;
                match outcome {
                    Outcome::Acked { accepted, rejected } => {
                        histogram.saturating_record((done - clock).as_micros() as u64);
                        tally.acked += accepted;
                        tally.rejected += rejected;
                        tally.last_ack = Some(done);
                    }
                    Outcome::Refused(e) => {
                        tally.refused += 1;
                        tally.first_error.get_or_insert(e);
                    }
                    Outcome::Failed(e) => {
                        tally.failed += 1;
                        tally.first_error.get_or_insert(e);
                    }
                }
                index += connections;
            }
            (histogram, tally)
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut total = Tally::default();
    for task in tasks {
        let (h, t) = task.await?;
        histogram.add(&h)?;
        total.acked += t.acked;
        total.rejected += t.rejected;
        total.refused += t.refused;
        total.failed += t.failed;
        if total.first_error.is_none() {
            total.first_error = t.first_error;
        }
        total.last_ack = total.last_ack.max(t.last_ack);
    }
    let end = total.last_ack.unwrap_or_else(Instant::now).max(start);
    // The run lasts at least its schedule, so a fast server is not credited
    // with more than the offered rate.
    let elapsed = (end - start)
        .as_secs_f64()
        .max(interval.as_secs_f64() * batches as f64);
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        protocol: Some(options.protocol),
        offered_rate: options.rate,
        achieved_rate: total.acked as f64 / elapsed,
        elapsed_s: elapsed,
        batches,
        samples_acked: total.acked,
        samples_rejected: total.rejected,
        batches_refused: total.refused,
        batches_failed: total.failed,
        first_error: total.first_error,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}
