//! OTLP metrics (`ExportMetricsServiceRequest`), as the server's gRPC and
//! HTTP listeners and Kafka (`format: otlp`) receive them. Points map to
//! series the way Prometheus maps them (docs/server.md, "OTLP"):
//!
//! - names and attribute keys are sanitised to Prometheus names by
//!   [`crate::names`];
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

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{HistogramDataPoint, metric, number_data_point};

use tidemark_engine::Sample;
use tidemark_engine::validate::{Check, EdgeCheck, RejectReason};

use crate::wire::Field;
use crate::{Arrival, Rejects, names, tenant};

/// The OTLP messages, for senders and the gRPC service.
pub use opentelemetry_proto::tonic as proto;

const CUMULATIVE: i32 = 2;

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
        let mut key = names::label_name(&kv.key);
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

/// A message of the OTLP metrics schema, as far as [`decoded_bound`] needs
/// to know it.
#[derive(Clone, Copy)]
enum Msg {
    Request,
    ResourceMetrics,
    Resource,
    EntityRef,
    ScopeMetrics,
    Scope,
    Metric,
    Points(Point),
    NumberPoint,
    HistogramPoint,
    ExponentialPoint,
    Buckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// The kind of point a metric's data holds.
#[derive(Clone, Copy)]
enum Point {
    Number,
    Histogram,
    Exponential,
    Summary,
}

/// What one field of a message builds when prost decodes it.
enum Builds {
    /// An element of a list of messages: the struct (counted twice, for a
    /// `Vec` that doubled as it grew) and what its fields build.
    Element(Msg, usize),
    /// A message held in its parent (optional or a oneof): its fields.
    Inline(Msg),
    /// A string or bytes: its length.
    Text,
    /// An element of a list of strings.
    TextElement,
    /// Packed varints: up to 8 bytes (a `u64`) for each byte, counted twice.
    PackedVarints,
    /// Packed 64-bit numbers: their bytes, counted twice.
    PackedFixed,
    /// A number held in its parent, or a field prost skips.
    Nothing,
}

fn builds(msg: Msg, field: u32) -> Builds {
    use Builds::*;
    use opentelemetry_proto::tonic::common::v1 as c;
    use opentelemetry_proto::tonic::metrics::v1 as m;
    let kv = Element(Msg::KeyValue, size_of::<KeyValue>());
    let exemplar = Element(Msg::Exemplar, size_of::<m::Exemplar>());
    match (msg, field) {
        (Msg::Request, 1) => Element(Msg::ResourceMetrics, size_of::<m::ResourceMetrics>()),
        (Msg::ResourceMetrics, 1) => Inline(Msg::Resource),
        (Msg::ResourceMetrics, 2) => Element(Msg::ScopeMetrics, size_of::<m::ScopeMetrics>()),
        (Msg::Resource, 1) => kv,
        (Msg::Resource, 3) => Element(Msg::EntityRef, size_of::<c::EntityRef>()),
        (Msg::EntityRef, 3 | 4) => TextElement,
        (Msg::ScopeMetrics, 1) => Inline(Msg::Scope),
        (Msg::ScopeMetrics, 2) => Element(Msg::Metric, size_of::<m::Metric>()),
        (Msg::Scope, 3) => kv,
        (Msg::Metric, 5 | 7) => Inline(Msg::Points(Point::Number)),
        (Msg::Metric, 9) => Inline(Msg::Points(Point::Histogram)),
        (Msg::Metric, 10) => Inline(Msg::Points(Point::Exponential)),
        (Msg::Metric, 11) => Inline(Msg::Points(Point::Summary)),
        (Msg::Metric, 12) => kv,
        (Msg::Points(p), 1) => match p {
            Point::Number => Element(Msg::NumberPoint, size_of::<m::NumberDataPoint>()),
            Point::Histogram => Element(Msg::HistogramPoint, size_of::<HistogramDataPoint>()),
            Point::Exponential => Element(
                Msg::ExponentialPoint,
                size_of::<m::ExponentialHistogramDataPoint>(),
            ),
            Point::Summary => Element(Msg::SummaryPoint, size_of::<m::SummaryDataPoint>()),
        },
        (Msg::NumberPoint, 7) => kv,
        (Msg::NumberPoint, 5) => exemplar,
        (Msg::HistogramPoint, 9) => kv,
        (Msg::HistogramPoint, 6 | 7) => PackedFixed,
        (Msg::HistogramPoint, 8) => exemplar,
        (Msg::ExponentialPoint, 1) => kv,
        (Msg::ExponentialPoint, 8 | 9) => Inline(Msg::Buckets),
        (Msg::ExponentialPoint, 11) => exemplar,
        (Msg::Buckets, 2) => PackedVarints,
        (Msg::SummaryPoint, 7) => kv,
        (Msg::SummaryPoint, 6) => Element(
            Msg::Quantile,
            size_of::<m::summary_data_point::ValueAtQuantile>(),
        ),
        (Msg::Exemplar, 7) => kv,
        (Msg::KeyValue, 2) => Inline(Msg::AnyValue),
        (Msg::AnyValue, 5) => Inline(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Inline(Msg::KeyValueList),
        (Msg::ArrayValue, 1) => Element(Msg::AnyValue, size_of::<AnyValue>()),
        (Msg::KeyValueList, 1) => kv,
        (Msg::ResourceMetrics | Msg::ScopeMetrics, 3)
        | (Msg::EntityRef, 1 | 2)
        | (Msg::Scope, 1 | 2)
        | (Msg::Metric, 1..=3)
        | (Msg::Exemplar, 4 | 5)
        | (Msg::KeyValue, 1)
        | (Msg::AnyValue, 1 | 7) => Text,
        _ => Nothing,
    }
}

/// How deep messages may nest (prost's own limit).
const MAX_DEPTH: u32 = 100;

/// An upper bound of the memory that decoding an encoded export request
/// builds (prost's structs, strings and lists), read from its wire shape
/// with the OTLP schema, without building anything; the server charges it
/// with the payload to its decoding budget before it decodes. An error
/// when the payload does not parse as protobuf.
pub fn decoded_bound(payload: &[u8]) -> Result<usize, String> {
    bound(Msg::Request, payload, 0)
}

fn bound(msg: Msg, mut bytes: &[u8], depth: u32) -> Result<usize, String> {
    const WHAT: &str = "ExportMetricsServiceRequest";
    if depth > MAX_DEPTH {
        return Err(format!(
            "invalid protobuf {WHAT}: messages nested too deeply"
        ));
    }
    let mut total = 0usize;
    while let Some((tag, field)) = crate::wire::next_field(&mut bytes, WHAT)? {
        let more = match (builds(msg, tag), field) {
            (Builds::Element(m, size), Field::Len(b)) => {
                (2 * size).saturating_add(bound(m, b, depth + 1)?)
            }
            (Builds::Inline(m), Field::Len(b)) => bound(m, b, depth + 1)?,
            (Builds::Text, Field::Len(b)) => b.len(),
            (Builds::TextElement, Field::Len(b)) => 2 * size_of::<String>() + b.len(),
            (Builds::PackedVarints, Field::Len(b)) => b.len().saturating_mul(16),
            (Builds::PackedFixed, Field::Len(b)) => b.len().saturating_mul(2),
            // One element of a list sent unpacked.
            (Builds::PackedVarints | Builds::PackedFixed, _) => 16,
            _ => 0,
        };
        total = total.saturating_add(more);
    }
    Ok(total)
}

/// Samples a decoded export request maps to, at most: a point of a gauge
/// or sum is one, a histogram's a bucket for each bound and `+Inf`, its
/// sum and its count, a summary's a quantile each and its sum and count.
pub fn samples_in(request: &ExportMetricsServiceRequest) -> usize {
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics);
    metrics
        .map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Histogram(h)) => h
                .data_points
                .iter()
                .map(|p| p.explicit_bounds.len() + 3)
                .sum(),
            Some(metric::Data::Summary(s)) => s
                .data_points
                .iter()
                .map(|p| p.quantile_values.len() + 2)
                .sum(),
            Some(metric::Data::ExponentialHistogram(_)) | None => 0,
        })
        .sum()
}

/// Decodes an encoded export request.
pub fn decode(
    payload: &[u8],
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    let what = "ExportMetricsServiceRequest";
    if let Some(request) = crate::message::<ExportMetricsServiceRequest>(payload, what, rejects) {
        decode_request(request, arrival, check, out, rejects);
    }
}

/// Maps a decoded export request (as gRPC hands it over) to samples.
pub fn decode_request(
    request: ExportMetricsServiceRequest,
    arrival: Arrival<'_>,
    check: &EdgeCheck,
    out: &mut Vec<Sample>,
    rejects: &mut Rejects,
) {
    let mut index = 0usize;
    let mut push = |name: &str,
                    base: &BTreeMap<String, String>,
                    extra: Option<(&str, String)>,
                    time_nanos: u64,
                    value: f64| {
        let i = index;
        index += 1;
        let mut labels = base.clone();
        if let Some((k, v)) = extra {
            labels.insert(k.to_owned(), v);
        }
        if time_nanos == 0 {
            // Unset, not 1970: the point cannot be placed in time.
            rejects.add(RejectReason::TimestampOutOfRange, 1, i, || {
                format!("a point of {name:?} has no time_unix_nano")
            });
            return;
        }
        let ts = (time_nanos / 1_000_000) as i64;
        let pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match check.check_series(name, tenant::apply(pairs, arrival.tenant)) {
            Ok(series) => match check.check_timestamp(ts, arrival.now_ms) {
                Ok(ts) => out.push(Sample::new(series, ts, value)),
                Err(r) => rejects.add(r, 1, i, || format!("timestamp {ts} of {series}")),
            },
            Err(r) => rejects.add(r, 1, i, || format!("{r} in a point of {name:?}")),
        }
    };
    let mut unsupported = 0u64;
    let mut malformed: (u64, Option<String>) = (0, None);
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
                let name = names::metric_name(&m.name);
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
                            if let Some(problem) = histogram_problem(&p) {
                                malformed.0 += 1;
                                malformed.1.get_or_insert_with(|| {
                                    format!("histogram {name:?}: {problem}")
                                });
                                continue;
                            }
                            let mut labels = scope_labels.clone();
                            add_attributes(&mut labels, &p.attributes);
                            let mut cumulative = 0u64;
                            for (i, bound) in p.explicit_bounds.iter().enumerate() {
                                // Checked not to overflow above.
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
    rejects.add(RejectReason::Malformed, malformed.0, 0, || {
        malformed.1.unwrap_or_default()
    });
    rejects.add(RejectReason::UnsupportedMetric, unsupported, 0, || {
        "delta sums and histograms and exponential histograms are not mapped".into()
    });
}

/// Why a histogram point cannot be mapped: bounds must be increasing
/// numbers, there is one more bucket count than bounds (or none), and the
/// counts must add up without overflowing.
fn histogram_problem(p: &HistogramDataPoint) -> Option<String> {
    let bounds = &p.explicit_bounds;
    if bounds.iter().any(|b| b.is_nan()) {
        return Some("a bucket bound is NaN".into());
    }
    if bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Some("bucket bounds are not increasing".into());
    }
    if !p.bucket_counts.is_empty() && p.bucket_counts.len() != bounds.len() + 1 {
        return Some(format!(
            "{} bucket counts for {} bounds (expected {})",
            p.bucket_counts.len(),
            bounds.len(),
            bounds.len() + 1
        ));
    }
    let total = p
        .bucket_counts
        .iter()
        .try_fold(0u64, |sum, n| sum.checked_add(*n));
    match total {
        None => Some("bucket counts overflow".into()),
        Some(total) if !p.bucket_counts.is_empty() && total != p.count => Some(format!(
            "bucket counts add up to {total}, but count is {}",
            p.count
        )),
        Some(_) => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn point(value: f64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: vec![string("http.route", "/a"), string("tenant", "forged")],
            time_unix_nano: 1_700_000_000_000_000_000,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        }
    }

    #[test]
    fn points_map_as_prometheus_maps_them() {
        let metric = |name: &str, data| Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        };
        let sum = |temporality, monotonic| {
            metric::Data::Sum(Sum {
                data_points: vec![point(2.0)],
                aggregation_temporality: temporality,
                is_monotonic: monotonic,
            })
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![string("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        metric(
                            "queue.depth",
                            metric::Data::Gauge(Gauge {
                                data_points: vec![point(1.0)],
                            }),
                        ),
                        metric("requests", sum(CUMULATIVE, true)),
                        metric("deltas", sum(1, true)),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        let arrival = Arrival {
            now_ms: 1_700_000_000_000,
            tenant: Some("acme"),
        };
        decode(
            &request.encode_to_vec(),
            arrival,
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        let got: Vec<String> = out.iter().map(|s| s.series.to_string()).collect();
        assert_eq!(
            got,
            [
                "queue_depth{http_route=\"/a\", job=\"checkout\", tenant=\"acme\"}",
                "requests_total{http_route=\"/a\", job=\"checkout\", tenant=\"acme\"}",
            ]
        );
        assert_eq!(rejects.counts[&RejectReason::UnsupportedMetric], 1);
    }

    #[test]
    fn bad_histograms_and_unset_times_are_rejected() {
        use opentelemetry_proto::tonic::metrics::v1::Histogram;
        let point = |bounds: Vec<f64>, counts: Vec<u64>, count, time| HistogramDataPoint {
            explicit_bounds: bounds,
            bucket_counts: counts,
            count,
            time_unix_nano: time,
            ..Default::default()
        };
        let t = 1_700_000_000_000_000_000;
        let points = vec![
            point(vec![1.0, 2.0], vec![1, 1, 1], 3, t),
            point(vec![1.0, f64::NAN], vec![1, 1, 1], 3, t),
            point(vec![2.0, 1.0], vec![1, 1, 1], 3, t),
            point(vec![1.0], vec![u64::MAX, 2], 1, t),
            point(vec![1.0], vec![1, 1, 1], 3, t),
            point(vec![1.0], vec![1, 1], 2, 0),
        ];
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "latency".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: points,
                            aggregation_temporality: CUMULATIVE,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let (mut out, mut rejects) = (Vec::new(), Rejects::default());
        decode_request(
            request,
            Arrival::at(1_700_000_000_000),
            &EdgeCheck::default(),
            &mut out,
            &mut rejects,
        );
        // The good point: 3 buckets, sum-less, count.
        assert_eq!(out.len(), 4, "{out:?}");
        assert_eq!(rejects.counts[&RejectReason::Malformed], 4);
        // The unset time: every sample of the point (2 buckets and count).
        assert_eq!(rejects.counts[&RejectReason::TimestampOutOfRange], 3);
        assert!(rejects.summary().contains("4 malformed"));
    }

    /// The bound covers what prost builds for many empty fields (the
    /// amplification an attacker would use), and stays within a small
    /// multiple of the size of an ordinary request.
    #[test]
    fn the_decoding_bound_covers_empty_fields_and_is_modest_for_real_requests() {
        let request = |points: usize, attributes: usize| ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![string("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "queue.depth".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: (0..points)
                                .map(|i| {
                                    let mut p = point(i as f64);
                                    p.attributes
                                        .extend((0..attributes).map(|_| KeyValue::default()));
                                    p
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
        // 100 000 empty attributes: at least what their structs take.
        let bomb = request(1, 100_000).encode_to_vec();
        let bound = decoded_bound(&bomb).unwrap();
        assert!(
            bound >= 100_000 * size_of::<KeyValue>() * 2,
            "{bound} for {} bytes",
            bomb.len()
        );
        // An ordinary request: 1 000 points with two attributes each.
        let real = request(1_000, 0).encode_to_vec();
        let bound = decoded_bound(&real).unwrap();
        assert!(bound < 16 * real.len(), "{bound} for {} bytes", real.len());
        assert!(bound > real.len());
        assert_eq!(samples_in(&request(1_000, 0)), 1_000);
        // Not a message at all.
        assert!(decoded_bound(&[0xff; 8]).is_err());
    }
}
