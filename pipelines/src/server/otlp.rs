//! OTLP metrics: `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`
//! on the gRPC listener and `POST /v1/metrics` (protobuf) on the HTTP
//! listener, feeding `type: otlp` sources. Points map to series the way
//! Prometheus maps them (docs/server.md, "OTLP"):
//!
//! - names and attribute keys are sanitised to Prometheus names (other
//!   characters become `_`);
//! - resource `service.name` (with `service.namespace/`) becomes `job`,
//!   `service.instance.id` becomes `instance`, other resource attributes and
//!   point attributes become labels (point attributes win); the scope's name
//!   and version become `otel_scope_name` and `otel_scope_version`;
//! - gauges and non-monotonic sums keep their name; cumulative monotonic sums
//!   are counters named `<name>_total`; cumulative histograms become
//!   `<name>_bucket{le=...}` (cumulative), `<name>_sum` and `<name>_count`;
//!   summaries `<name>{quantile=...}`, `<name>_sum` and `<name>_count`;
//! - delta sums and histograms and exponential histograms are rejected
//!   (`unsupported_metric`) and reported in the partial-success reply.

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use tonic::{Request, Response, Status};

use tidemark_engine::Sample;
use tidemark_engine::ingest::{OfferError, Protocol};
use tidemark_engine::stats::DropReason;
use tidemark_engine::validate::{Check, RejectReason};

use super::control::Control;
use super::http::{TENANT_LABEL, Tenant};

const CUMULATIVE: i32 = 2;

/// A Prometheus-safe name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (`:` only if `colons`).
fn sanitize(name: &str, colons: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn value_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn add_attributes(labels: &mut BTreeMap<String, String>, attributes: &[KeyValue]) {
    for kv in attributes {
        let mut key = sanitize(&kv.key, false);
        if key.starts_with("__") {
            key = format!("key{key}");
        }
        labels.insert(key, value_string(&kv.value));
    }
}

fn resource_labels(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let get = |k: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| value_string(&kv.value))
    };
    let others: Vec<KeyValue> = attributes
        .iter()
        .filter(|kv| {
            !matches!(
                kv.key.as_str(),
                "service.name" | "service.namespace" | "service.instance.id"
            )
        })
        .cloned()
        .collect();
    let mut labels = BTreeMap::new();
    add_attributes(&mut labels, &others);
    if let Some(name) = get("service.name") {
        let job = match get("service.namespace") {
            Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
            _ => name,
        };
        labels.insert("job".into(), job);
    }
    if let Some(instance) = get("service.instance.id") {
        labels.insert("instance".into(), instance);
    }
    labels
}

/// Maps an export request to samples, counting rejected points by reason.
pub fn decode(
    request: ExportMetricsServiceRequest,
    control: &impl Check,
    tenant: Option<&str>,
    rejected: &mut BTreeMap<RejectReason, u64>,
) -> Vec<Sample> {
    let mut out = Vec::new();
    let now = tidemark_engine::time::now_millis();
    let mut push = |name: &str,
                    base: &BTreeMap<String, String>,
                    extra: Option<(&str, String)>,
                    time_nanos: u64,
                    value: f64| {
        let mut labels = base.clone();
        if let Some((k, v)) = extra {
            labels.insert(k.to_owned(), v);
        }
        if let Some(t) = tenant {
            labels.insert(TENANT_LABEL.to_owned(), t.to_owned());
        }
        let ts = (time_nanos / 1_000_000) as i64;
        match control.check_series(name, labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(series) => match control.check_timestamp(ts, now) {
                Ok(ts) => out.push(Sample::new(series, ts, value)),
                Err(r) => *rejected.entry(r).or_default() += 1,
            },
            Err(r) => *rejected.entry(r).or_default() += 1,
        }
    };
    let mut unsupported = 0u64;
    for rm in request.resource_metrics {
        let resource = resource_labels(rm.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        for sm in rm.scope_metrics {
            let mut scope_labels = resource.clone();
            if let Some(scope) = &sm.scope {
                if !scope.name.is_empty() {
                    scope_labels.insert("otel_scope_name".into(), scope.name.clone());
                }
                if !scope.version.is_empty() {
                    scope_labels.insert("otel_scope_version".into(), scope.version.clone());
                }
            }
            for m in sm.metrics {
                let name = sanitize(&m.name, true);
                match m.data {
                    Some(metric::Data::Gauge(g)) => {
                        for p in g.data_points {
                            let mut labels = scope_labels.clone();
                            add_attributes(&mut labels, &p.attributes);
                            push(&name, &labels, None, p.time_unix_nano, number(p.value));
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        if s.aggregation_temporality != CUMULATIVE && s.is_monotonic {
                            unsupported += s.data_points.len() as u64;
                            continue;
                        }
                        let name = if s.is_monotonic && !name.ends_with("_total") {
                            format!("{name}_total")
                        } else {
                            name.clone()
                        };
                        for p in s.data_points {
                            let mut labels = scope_labels.clone();
                            add_attributes(&mut labels, &p.attributes);
                            push(&name, &labels, None, p.time_unix_nano, number(p.value));
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        if h.aggregation_temporality != CUMULATIVE {
                            unsupported += h.data_points.len() as u64;
                            continue;
                        }
                        for p in h.data_points {
                            let mut labels = scope_labels.clone();
                            add_attributes(&mut labels, &p.attributes);
                            let mut cumulative = 0u64;
                            for (i, bound) in p.explicit_bounds.iter().enumerate() {
                                cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                                let le = Some(("le", format_bound(*bound)));
                                push(
                                    &format!("{name}_bucket"),
                                    &labels,
                                    le,
                                    p.time_unix_nano,
                                    cumulative as f64,
                                );
                            }
                            let inf = Some(("le", "+Inf".to_owned()));
                            push(
                                &format!("{name}_bucket"),
                                &labels,
                                inf,
                                p.time_unix_nano,
                                p.count as f64,
                            );
                            if let Some(sum) = p.sum {
                                push(&format!("{name}_sum"), &labels, None, p.time_unix_nano, sum);
                            }
                            push(
                                &format!("{name}_count"),
                                &labels,
                                None,
                                p.time_unix_nano,
                                p.count as f64,
                            );
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        for p in s.data_points {
                            let mut labels = scope_labels.clone();
                            add_attributes(&mut labels, &p.attributes);
                            for q in &p.quantile_values {
                                let quantile = Some(("quantile", format_bound(q.quantile)));
                                push(&name, &labels, quantile, p.time_unix_nano, q.value);
                            }
                            push(
                                &format!("{name}_sum"),
                                &labels,
                                None,
                                p.time_unix_nano,
                                p.sum,
                            );
                            push(
                                &format!("{name}_count"),
                                &labels,
                                None,
                                p.time_unix_nano,
                                p.count as f64,
                            );
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(e)) => {
                        unsupported += e.data_points.len() as u64
                    }
                    None => {}
                }
            }
        }
    }
    if unsupported > 0 {
        *rejected.entry(RejectReason::UnsupportedMetric).or_default() += unsupported;
    }
    out
}

fn number(v: Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}

fn format_bound(b: f64) -> String {
    if b.is_infinite() {
        if b > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        b.to_string()
    }
}

/// Decodes, offers and counts one export; the reply's partial success names
/// what was rejected.
pub fn export(
    control: &Control,
    request: ExportMetricsServiceRequest,
    tenant: Option<&str>,
) -> Result<ExportMetricsServiceResponse, OfferError> {
    let mut rejected = BTreeMap::new();
    let samples = decode(request, &control.edge, tenant, &mut rejected);
    if !samples.is_empty() {
        control.ingest.offer(Protocol::Otlp, &samples)?;
    }
    control.count_accepted("otlp", samples.len() as u64);
    let counts: Vec<_> = rejected
        .iter()
        .map(|(r, n)| (DropReason::Rejected(*r), *n))
        .collect();
    control.count_rejects("otlp", &counts);
    let total: u64 = rejected.values().sum();
    let partial_success = (total > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: total as i64,
        error_message: rejected
            .iter()
            .map(|(r, n)| format!("{n} {}", r.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    });
    Ok(ExportMetricsServiceResponse { partial_success })
}

/// The gRPC service.
pub struct Otlp {
    /// The process's control plane.
    pub control: Arc<Control>,
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        if self.control.shutdown.is_triggered() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let tenant = request.extensions().get::<Tenant>().map(|t| t.0.clone());
        match export(&self.control, request.into_inner(), tenant.as_deref()) {
            Ok(reply) => Ok(Response::new(reply)),
            Err(e @ OfferError::Full { .. }) => Err(Status::resource_exhausted(e.to_string())),
            Err(e @ OfferError::NoSubscriber(_)) => Err(Status::unavailable(format!(
                "{e}: apply a pipeline with a `type: otlp` source"
            ))),
        }
    }
}

/// `POST /v1/metrics`: OTLP over HTTP with a protobuf body.
pub async fn http(
    axum::extract::State(control): axum::extract::State<Arc<Control>>,
    tenant: Option<axum::extract::Extension<Tenant>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let tenant = tenant.map(|axum::extract::Extension(t)| t.0);
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use prost::Message;
    let request = match ExportMetricsServiceRequest::decode(body.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            control.count_rejects(
                "otlp",
                &[(DropReason::Rejected(RejectReason::Malformed), 1)],
            );
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid ExportMetricsServiceRequest: {e}\n"),
            )
                .into_response();
        }
    };
    match export(&control, request, tenant.as_deref()) {
        Ok(reply) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            reply.encode_to_vec(),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("{e}\n"),
        )
            .into_response(),
    }
}
