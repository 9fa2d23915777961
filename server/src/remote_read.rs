//! Prometheus remote read (`POST /api/v1/read`): a snappy-compressed
//! protobuf `ReadRequest`, answered from the `memory` sinks' history (as
//! the query API reads it) with a snappy-compressed `ReadResponse` of the
//! SAMPLES type, so that a Prometheus with Tidemark in `remote_read`
//! answers its own queries from Tidemark's data. A client that accepts only
//! streamed chunks is told so. Staleness markers are sent as they are, as
//! Prometheus's own storage would.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use tidemark_codecs::remote_write::proto::{
    Label, LabelMatcher, QueryResult, ReadRequest, ReadResponse, Sample, TimeSeries, label_matcher,
    read_request,
};
use tidemark_engine::memstore::Storage;

use crate::auth::Principal;
use crate::control::Control;

/// Largest decompressed request accepted.
pub const MAX_REQUEST: usize = 1 << 20;
/// Samples one response may carry (Prometheus's
/// `storage.remote.read-sample-limit` default).
pub const MAX_SAMPLES: usize = 50_000_000;

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

/// A remote-read label matcher as PromQL selector text.
fn matcher_text(m: &LabelMatcher) -> String {
    let op = match label_matcher::Type::try_from(m.r#type) {
        Ok(label_matcher::Type::Eq) => "=",
        Ok(label_matcher::Type::Neq) => "!=",
        Ok(label_matcher::Type::Re) => "=~",
        Ok(label_matcher::Type::Nre) => "!~",
        Err(_) => "?",
    };
    // A PromQL string: backslashes, quotes and line breaks escaped.
    let value = m
        .value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{}{op}\"{value}\"", m.name)
}

/// The matchers of one query as a selector.
fn selector(matchers: &[LabelMatcher]) -> Result<promql_parser::parser::VectorSelector, String> {
    let text = format!(
        "{{{}}}",
        matchers
            .iter()
            .map(matcher_text)
            .collect::<Vec<_>>()
            .join(",")
    );
    match promql_parser::parser::parse(&text) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) => Ok(vs),
        Ok(_) => Err(format!("the matchers {text} are not a series selector")),
        Err(e) => Err(format!("invalid matchers {text}: {e}")),
    }
}

/// `POST /api/v1/read`.
pub async fn read(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let request = match snap::raw::decompress_len(&body) {
        Ok(n) if n > MAX_REQUEST => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a read request of {n} bytes is over the limit of {MAX_REQUEST}"),
            );
        }
        Ok(_) => snap::raw::Decoder::new().decompress_vec(&body),
        Err(e) => Err(e),
    };
    let request = match request
        .map_err(|e| format!("invalid snappy block: {e}"))
        .and_then(|raw| {
            ReadRequest::decode(raw.as_slice())
                .map_err(|e| format!("invalid protobuf ReadRequest: {e}"))
        }) {
        Ok(r) => r,
        Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
    };
    let samples_ok = request.accepted_response_types.is_empty()
        || request
            .accepted_response_types
            .contains(&(read_request::ResponseType::Samples as i32));
    if !samples_ok {
        return refuse(
            StatusCode::BAD_REQUEST,
            "only the SAMPLES response type is supported; accept it (Prometheus does by default)",
        );
    }
    let mut selectors = Vec::with_capacity(request.queries.len());
    for q in &request.queries {
        match selector(&q.matchers) {
            Ok(vs) => selectors.push((vs, q.start_timestamp_ms, q.end_timestamp_ms)),
            Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
        }
    }
    let visible = match crate::query::visible(&control, &principal) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let answered = tokio::task::spawn_blocking(move || {
        let mut results = Vec::with_capacity(selectors.len());
        let mut total = 0usize;
        let deadline = std::time::Instant::now() + crate::query::DEFAULT_TIMEOUT;
        for (vs, start, end) in &selectors {
            // Remote read has no warnings: an archive that cannot be read
            // is logged, and the answer holds what the rest hold.
            let wanted = [tidemark_engine::history::Wanted {
                selector: vs.clone(),
                start: *start,
                end: *end,
            }];
            let (archived, _warnings) =
                crate::query::from_archives(&visible.archives, &wanted, deadline)
                    .map_err(|e| e.to_string())?;
            let union = crate::query::Union::new(&visible.histories, archived.as_ref());
            let mut timeseries = Vec::new();
            union.select(vs, *start, *end, &mut |series, points| {
                total += points.len();
                timeseries.push(TimeSeries {
                    labels: series
                        .labels()
                        .iter()
                        .map(|(n, v)| Label {
                            name: n.to_string(),
                            value: v.to_string(),
                        })
                        .collect(),
                    samples: points
                        .iter()
                        .map(|p| Sample {
                            value: p.v,
                            timestamp: p.t,
                        })
                        .collect(),
                });
            });
            if total > MAX_SAMPLES {
                return Err(format!(
                    "exceeded sample limit ({MAX_SAMPLES}): narrow the query"
                ));
            }
            timeseries.sort_by(|a, b| {
                let key = |t: &TimeSeries| {
                    t.labels
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect::<Vec<_>>()
                };
                key(a).cmp(&key(b))
            });
            results.push(QueryResult { timeseries });
        }
        let raw = ReadResponse { results }.encode_to_vec();
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .map_err(|e| format!("cannot compress the response: {e}"))
    })
    .await;
    match answered {
        Ok(Ok(body)) => (
            [
                (header::CONTENT_TYPE, "application/x-protobuf"),
                (header::CONTENT_ENCODING, "snappy"),
            ],
            body,
        )
            .into_response(),
        Ok(Err(message)) => refuse(StatusCode::BAD_REQUEST, message),
        Err(e) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the read failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_become_a_selector_with_their_values_escaped() {
        let m = |t: label_matcher::Type, n: &str, v: &str| LabelMatcher {
            r#type: t as i32,
            name: n.into(),
            value: v.into(),
        };
        let vs = selector(&[
            m(label_matcher::Type::Eq, "__name__", "up"),
            m(label_matcher::Type::Re, "job", "a.*|b\"c"),
            m(label_matcher::Type::Neq, "x", "back\\slash"),
        ])
        .unwrap();
        let up = tidemark_engine::Series::new("up", [("job", "b\"c"), ("x", "y")]);
        assert!(tidemark_engine::memstore::selects(&vs, &up));
        let other = tidemark_engine::Series::new("up", [("job", "b\"c"), ("x", "back\\slash")]);
        assert!(!tidemark_engine::memstore::selects(&vs, &other));
        assert!(selector(&[]).is_err());
    }
}
