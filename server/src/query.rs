//! The Prometheus HTTP query API over the recent history that `memory`
//! sinks keep (`engine::history`): `/api/v1/query`, `/api/v1/query_range`
//! (GET and POST), `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`, `/api/v1/metadata`,
//! `/api/v1/query_exemplars` and `/api/v1/status/buildinfo`, with
//! Prometheus's parameters, JSON shapes, error types and status codes, so
//! that Grafana's Prometheus data source and `promtool query` work
//! unchanged. Expressions are evaluated by `tidemark-promql`.
//!
//! A caller reads the histories of the pipelines it may see (a tenant its
//! own). Where two sinks hold the same series, their points are merged.
//! Past what a history holds, a query reads the archives those pipelines'
//! `parquet` and `timescaledb` sinks write ([`from_archives`]): each only
//! before the time a `memory` sink reading the same streams covers, so the
//! two meet without a seam. An archive that cannot be read gives a
//! warning, and the answer holds what the rest hold.
//!
//! Queries never hold up ingest: they run on tokio's blocking threads, at
//! most [`CONCURRENT`] at once (others wait their turn, as in Prometheus),
//! and take each store's read lock for one evaluation step at a time, while
//! the sinks write only when the lock is free. A query past its `timeout`
//! (default and most [`DEFAULT_TIMEOUT`]) stops between steps and answers
//! `timeout`; one that would read more than [`MAX_SAMPLES`] samples in a
//! step, or return more than [`MAX_POINTS`] points per series, is refused.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLockReadGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, VectorSelector};
use rustc_hash::FxHashMap;
use serde_json::{Value as Json, json};

use tidemark_engine::Series;
use tidemark_engine::history::{ArchiveError, ArchiveTier, History, Wanted};
use tidemark_engine::memstore::{MemStore, Point, Storage};
use tidemark_promql::{Evaluator, Value, gofmt};

use crate::auth::Principal;
use crate::control::Control;

/// Queries evaluated at once; the rest wait.
pub const CONCURRENT: usize = 4;
/// The longest a query may run (Prometheus's `query.timeout` default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Samples one evaluation step may read (Prometheus's `query.max-samples`
/// default).
pub const MAX_SAMPLES: usize = 50_000_000;
/// Points a range query may return per series (Prometheus's limit).
pub const MAX_POINTS: i64 = 11_000;

/// A refusal in Prometheus's shape: `{"status":"error","errorType",
/// "error"}` with its status code.
#[derive(Debug)]
pub struct ApiError {
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: "bad_data",
            message: message.into(),
        }
    }

    fn execution(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: "execution",
            message: message.into(),
        }
    }

    fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: "timeout",
            message: message.into(),
        }
    }

    /// Asked of a process that holds no history: in a cluster the
    /// `memory` sinks gather on the first process.
    fn elsewhere() -> ApiError {
        ApiError {
            kind: "unavailable",
            message: "this process holds no query history: in a cluster the memory sinks keep it on process 0 (the first of the host file); query that one".into(),
        }
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            kind: "internal",
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            axum::Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

fn success(data: Json, warnings: Vec<String>) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    axum::Json(body).into_response()
}

/// The request's parameters: the URL's, then a form body's (POST), in
/// order; a name's first value counts, as in Prometheus.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Reads the URL query and, for a form body, the body.
    pub fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Params, ApiError> {
        let mut pairs: Vec<(String, String)> = match query {
            Some(q) => serde_urlencoded::from_str(q)
                .map_err(|e| ApiError::bad_data(format!("invalid query string: {e}")))?,
            None => Vec::new(),
        };
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form && !body.is_empty() {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_data("the form body is not UTF-8"))?;
            let more: Vec<(String, String)> = serde_urlencoded::from_str(text)
                .map_err(|e| ApiError::bad_data(format!("invalid form body: {e}")))?;
            pairs.extend(more);
        }
        Ok(Params(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A parameter read by `parse` (`None` when absent or empty); one that
    /// does not parse is `bad_data`, naming it and what it should be.
    fn parsed(
        &self,
        name: &str,
        parse: fn(&str) -> Option<i64>,
        what: &str,
    ) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                parse(v).ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "invalid parameter {name:?}: cannot parse {v:?} to a valid {what}"
                    ))
                })
            })
            .transpose()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.parsed(name, parse_time, "timestamp")
    }

    fn duration(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.parsed(name, parse_duration, "duration")
    }

    fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.get("limit").filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(ApiError::bad_data(format!(
                    "invalid parameter \"limit\": {v:?} is not a non-negative integer"
                ))),
            },
        }
    }

    fn timeout(&self) -> Result<Duration, ApiError> {
        Ok(match self.duration("timeout")? {
            Some(ms) if ms > 0 => Duration::from_millis(ms as u64).min(DEFAULT_TIMEOUT),
            _ => DEFAULT_TIMEOUT,
        })
    }
}

/// What every query endpoint reads from its request: the caller (the
/// gate's [`Principal`]) and the parameters, from the URL and a form body.
pub struct Call {
    principal: Principal,
    params: Params,
}

impl<S: Send + Sync> FromRequest<S> for Call {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Call, ApiError> {
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the request passed no gate"))?;
        let query = request.uri().query().map(str::to_owned);
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::bad_data(format!("cannot read the body: {e}")))?;
        let params = Params::read(query.as_deref(), &headers, &body)?;
        Ok(Call { principal, params })
    }
}

/// A time as Prometheus's API takes it: seconds since the epoch (with a
/// fraction) or RFC 3339. Milliseconds, rounded.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        let ms = (seconds * 1000.0).round();
        return (ms.is_finite() && ms.abs() < 9.2e18).then_some(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A duration as Prometheus's API takes it: seconds (with a fraction) or
/// Prometheus's units (`1h30m`, `15s`, `500ms`; `y`, `w`, `d` too).
/// Milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        let ms = (seconds * 1000.0).round();
        return (ms.is_finite() && ms.abs() < 9.2e18).then_some(ms as i64);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

/// A time in seconds as Prometheus's JSON writes it: a number, with
/// milliseconds when there are any.
fn seconds(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn point(t: i64, v: f64) -> Json {
    json!([seconds(t), gofmt::f(v)])
}

fn metric(series: &Series) -> Json {
    Json::Object(
        series
            .labels()
            .iter()
            .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
            .collect(),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a caller may read: the `memory` sinks' histories and the archives
/// past them, of the pipelines it may see.
pub(crate) struct Visible {
    pub(crate) histories: Vec<Arc<History>>,
    pub(crate) archives: Vec<ArchiveTier>,
}

/// What `principal` may read; an error on any process but the first,
/// which holds it all.
pub(crate) fn visible(control: &Control, principal: &Principal) -> Result<Visible, ApiError> {
    if control.process != 0 {
        return Err(ApiError::elsewhere());
    }
    Ok(Visible {
        histories: control
            .history
            .list()
            .into_iter()
            .filter(|(pipeline, _, _)| control.may_see(principal, pipeline))
            .map(|(_, _, h)| h)
            .collect(),
        archives: control
            .history
            .archives()
            .into_iter()
            .filter(|a| control.may_see(principal, &a.pipeline))
            .collect(),
    })
}

/// What the archives hold of `wanted`, each read only before the time its
/// `memory` sink covers, as one store (`None` when no archive was read),
/// with a warning for each archive that could not be read. Runs on the
/// query's blocking thread: decoding is work, and ingest must not wait for
/// it. Past `deadline` it answers `timeout`; more than [`MAX_SAMPLES`]
/// samples, `execution`.
pub(crate) fn from_archives(
    archives: &[ArchiveTier],
    wanted: &[Wanted],
    deadline: Instant,
) -> Result<(Option<MemStore>, Vec<String>), ApiError> {
    let mut store: Option<MemStore> = None;
    let mut warnings = Vec::new();
    let mut total = 0usize;
    for tier in archives {
        let clipped: Vec<Wanted> = wanted
            .iter()
            .filter_map(|w| {
                let end = tier
                    .covered_from
                    .map_or(w.end, |covered| w.end.min(covered.saturating_sub(1)));
                (w.start <= end).then(|| Wanted {
                    selector: w.selector.clone(),
                    start: w.start,
                    end,
                })
            })
            .collect();
        if clipped.is_empty() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tier.archive.select(&clipped, MAX_SAMPLES - total);
        let answer = tokio::runtime::Handle::current().block_on(tokio::time::timeout(left, read));
        match answer {
            Err(_) => {
                return Err(ApiError::timeout(format!(
                    "query timed out reading the archive {}",
                    tier.archive.describe()
                )));
            }
            Ok(Err(ArchiveError::TooMany(message))) => {
                return Err(ApiError::execution(format!(
                    "query processing would load too many samples into memory in query execution: {message}"
                )));
            }
            Ok(Err(ArchiveError::Unreadable(message))) => {
                tracing::warn!(pipeline = %tier.pipeline, sink = %tier.sink, error = %message, "A query could not read an archive; it answered from the rest.");
                warnings.push(message);
            }
            Ok(Ok(found)) => {
                let held = store.get_or_insert_default();
                for (series, points) in found {
                    total += points.len();
                    for p in points {
                        held.insert(&series, p.t, p.v);
                    }
                }
            }
        }
    }
    Ok((store, warnings))
}

/// Several stores read as one: a series held by more than one has its
/// points merged (one per time). Counts the points it hands out.
pub(crate) struct Union<'a> {
    guards: Vec<RwLockReadGuard<'a, MemStore>>,
    archived: Option<&'a MemStore>,
    read: Cell<usize>,
}

impl<'a> Union<'a> {
    /// The histories, and what was read from the archives.
    pub(crate) fn new(histories: &'a [Arc<History>], archived: Option<&'a MemStore>) -> Union<'a> {
        Union {
            guards: histories.iter().map(|h| h.read()).collect(),
            archived,
            read: Cell::new(0),
        }
    }
}

impl Storage for Union<'_> {
    fn select(
        &self,
        selector: &VectorSelector,
        start: i64,
        end: i64,
        each: &mut dyn FnMut(&Series, &[Point]),
    ) {
        // Called for every selector at every step: no allocation.
        let stores = || self.guards.iter().map(|g| &**g).chain(self.archived);
        let mut first_two = stores();
        if let (Some(store), None) = (first_two.next(), first_two.next()) {
            store.select(selector, start, end, &mut |s, points| {
                self.read.set(self.read.get() + points.len());
                each(s, points);
            });
            return;
        }
        let mut merged: FxHashMap<tidemark_engine::SeriesId, (Series, Vec<Point>)> =
            FxHashMap::default();
        for store in stores() {
            store.select(selector, start, end, &mut |s, points| {
                merged
                    .entry(s.id())
                    .or_insert_with(|| (s.clone(), Vec::new()))
                    .1
                    .extend_from_slice(points);
            });
        }
        for (series, mut points) in merged.into_values() {
            points.sort_by_key(|p| p.t);
            points.dedup_by_key(|p| p.t);
            self.read.set(self.read.get() + points.len());
            each(&series, &points);
        }
    }
}

/// Parses and checks an expression (`query`).
fn expression(params: &Params) -> Result<Expr, ApiError> {
    let text = params.get("query").unwrap_or_default();
    tidemark_promql::parse(text)
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// Whether the result keeps the order the expression gave it (`sort` and
/// friends); others are sorted by labels, as Prometheus's storage returns
/// them.
fn keeps_order(expr: &Expr) -> bool {
    match expr {
        Expr::Paren(p) => keeps_order(&p.expr),
        Expr::Call(c) => c.func.name.starts_with("sort"),
        _ => false,
    }
}

/// Runs `work` on a blocking thread once a query slot is free, within
/// `timeout`.
async fn run<T: Send + 'static>(
    control: &Control,
    timeout: Duration,
    work: impl FnOnce(Instant) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let deadline = Instant::now() + timeout;
    let waiting = tokio::time::timeout(timeout, control.query_slots.acquire()).await;
    let _permit = match waiting {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Err(ApiError::internal("the server is stopping")),
        Err(_) => {
            return Err(ApiError::timeout(
                "query timed out waiting for a free query slot",
            ));
        }
    };
    match tokio::task::spawn_blocking(move || work(deadline)).await {
        Ok(result) => result,
        Err(e) => Err(ApiError::internal(format!("the query failed: {e}"))),
    }
}

fn too_many_samples(read: usize) -> Result<(), ApiError> {
    if read > MAX_SAMPLES {
        return Err(ApiError::execution(format!(
            "query processing would load too many samples into memory in query execution (more than {MAX_SAMPLES})"
        )));
    }
    Ok(())
}

/// `/api/v1/query`.
pub async fn instant(State(control): State<Arc<Control>>, call: Call) -> Response {
    instant_query(&control, &call)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn instant_query(control: &Control, call: &Call) -> Result<Response, ApiError> {
    let (params, principal) = (&call.params, &call.principal);
    let expr = expression(params)?;
    let t = params.time("time")?.unwrap_or_else(now_ms);
    let limit = params.limit()?;
    let timeout = params.timeout()?;
    let visible = visible(control, principal)?;
    let (value, read, mut warnings) = run(control, timeout, move |deadline| {
        let wanted = tidemark_promql::reads(&expr, t, t, tidemark_promql::DEFAULT_LOOKBACK);
        let (archived, warnings) = from_archives(&visible.archives, &wanted, deadline)?;
        let union = Union::new(&visible.histories, archived.as_ref());
        let value = Evaluator::new(&union)
            .eval(&expr, t)
            .map_err(|e| ApiError::execution(e.0))?;
        let read = union.read.get();
        Ok(((value, keeps_order(&expr)), read, warnings))
    })
    .await?;
    too_many_samples(read)?;
    let (value, ordered) = value;
    let data = match value {
        Value::Scalar(v) => json!({"resultType": "scalar", "result": point(t, v)}),
        Value::String(s) => json!({"resultType": "string", "result": [seconds(t), s]}),
        Value::Vector(mut v) => {
            if !ordered {
                v.sort_by(|a, b| a.series.cmp(&b.series));
            }
            truncate(&mut v, limit, &mut warnings);
            let result: Vec<Json> = v
                .iter()
                .map(|e| json!({"metric": metric(&e.series), "value": point(t, e.v)}))
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Value::Matrix(mut m) => {
            m.sort_by(|a, b| a.series.cmp(&b.series));
            truncate(&mut m, limit, &mut warnings);
            let result: Vec<Json> = m
                .iter()
                .map(|s| {
                    json!({
                        "metric": metric(&s.series),
                        "values": s.points.iter().map(|p| point(p.t, p.v)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    };
    Ok(success(data, warnings))
}

fn truncate<T>(items: &mut Vec<T>, limit: Option<usize>, warnings: &mut Vec<String>) {
    if let Some(n) = limit
        && items.len() > n
    {
        items.truncate(n);
        warnings.push("results truncated due to limit".into());
    }
}

/// `/api/v1/query_range`.
pub async fn range(State(control): State<Arc<Control>>, call: Call) -> Response {
    range_query(&control, &call)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn required(value: Option<i64>, name: &str) -> Result<i64, ApiError> {
    value.ok_or_else(|| ApiError::bad_data(format!("invalid parameter {name:?}: missing")))
}

async fn range_query(control: &Control, call: &Call) -> Result<Response, ApiError> {
    let (params, principal) = (&call.params, &call.principal);
    let start = required(params.time("start")?, "start")?;
    let end = required(params.time("end")?, "end")?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = required(params.duration("step")?, "step")?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let expr = expression(params)?;
    match expr.value_type() {
        ValueType::Scalar | ValueType::Vector => {}
        ValueType::Matrix | ValueType::String => {
            let name = if expr.value_type() == ValueType::Matrix {
                "range vector"
            } else {
                "string"
            };
            return Err(ApiError::bad_data(format!(
                "invalid expression type {name:?} for range query, must be Scalar or instant Vector"
            )));
        }
    }
    let limit = params.limit()?;
    let timeout = params.timeout()?;
    let visible = visible(control, principal)?;
    let (series, mut warnings) = run(control, timeout, move |deadline| {
        let wanted = tidemark_promql::reads(&expr, start, end, tidemark_promql::DEFAULT_LOOKBACK);
        let (archived, warnings) = from_archives(&visible.archives, &wanted, deadline)?;
        let mut out: BTreeMap<Series, Vec<(i64, f64)>> = BTreeMap::new();
        let mut t = start;
        while t <= end {
            if Instant::now() > deadline {
                return Err(ApiError::timeout(format!(
                    "query timed out in query execution (after {} of {} steps)",
                    (t - start) / step,
                    (end - start) / step + 1
                )));
            }
            // The stores are locked for one step at a time.
            let union = Union::new(&visible.histories, archived.as_ref());
            let value = Evaluator::new(&union)
                .eval(&expr, t)
                .map_err(|e| ApiError::execution(e.0))?;
            too_many_samples(union.read.get())?;
            drop(union);
            match value {
                Value::Scalar(v) => out
                    .entry(Series::from_labels(Vec::new()))
                    .or_default()
                    .push((t, v)),
                Value::Vector(v) => {
                    for e in v {
                        out.entry(e.series).or_default().push((t, e.v));
                    }
                }
                other => {
                    return Err(ApiError::execution(format!(
                        "a range query's step evaluated to a {}",
                        other.type_name()
                    )));
                }
            }
            t += step;
        }
        Ok((out, warnings))
    })
    .await?;
    let mut result: Vec<(Series, Vec<(i64, f64)>)> = series.into_iter().collect();
    truncate(&mut result, limit, &mut warnings);
    let result: Vec<Json> = result
        .iter()
        .map(|(s, points)| {
            json!({
                "metric": metric(s),
                "values": points.iter().map(|&(t, v)| point(t, v)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(success(
        json!({"resultType": "matrix", "result": result}),
        warnings,
    ))
}

/// The `match[]` selectors; `default` when there are none and that is
/// allowed.
fn selectors(params: &Params, required: bool) -> Result<Vec<VectorSelector>, ApiError> {
    let given = params.all("match[]");
    if given.is_empty() {
        if required {
            return Err(ApiError::bad_data("no match[] parameter provided"));
        }
        return Ok(vec![every_series()]);
    }
    given
        .into_iter()
        .map(|text| match promql_parser::parser::parse(text) {
            Ok(Expr::VectorSelector(vs)) if vs.offset.is_none() && vs.at.is_none() => Ok(vs),
            Ok(_) => Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {text:?} is not a series selector"
            ))),
            Err(e) => Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {e}"
            ))),
        })
        .collect()
}

fn every_series() -> VectorSelector {
    match promql_parser::parser::parse(r#"{__name__=~".+"}"#) {
        Ok(Expr::VectorSelector(vs)) => vs,
        _ => unreachable!("a fixed selector parses"),
    }
}

/// The series that `match[]` selects with a point in `[start, end]`
/// (default: everything held), with the archives' warnings. The archives
/// are read only when `start` is given (Grafana always gives it): without
/// it a listing would read every file ever archived.
async fn matching(
    control: &Control,
    principal: &Principal,
    params: &Params,
    required: bool,
) -> Result<(BTreeSet<Series>, Vec<String>), ApiError> {
    let selectors = selectors(params, required)?;
    let given = params.time("start")?;
    let start = given.unwrap_or(i64::MIN);
    let end = params.time("end")?.unwrap_or(i64::MAX);
    let timeout = params.timeout()?;
    let visible = visible(control, principal)?;
    run(control, timeout, move |deadline| {
        let (archived, warnings) = match given {
            Some(_) => {
                let end = end.min(now_ms());
                let wanted: Vec<Wanted> = selectors
                    .iter()
                    .map(|vs| Wanted {
                        selector: vs.clone(),
                        start,
                        end,
                    })
                    .collect();
                from_archives(&visible.archives, &wanted, deadline)?
            }
            None => (None, Vec::new()),
        };
        let union = Union::new(&visible.histories, archived.as_ref());
        let mut out = BTreeSet::new();
        for vs in &selectors {
            union.select(vs, start, end, &mut |s, _| {
                out.insert(s.clone());
            });
        }
        Ok((out, warnings))
    })
    .await
}

/// A listing of what `match[]` selects (`series`, `labels`, label
/// values): `list` turns the matching series into the answer's sorted
/// items, cut at `limit`.
async fn listing(
    control: &Control,
    call: &Call,
    required: bool,
    list: impl FnOnce(BTreeSet<Series>) -> Vec<Json>,
) -> Response {
    let answer = async {
        let limit = call.params.limit()?;
        let (found, mut warnings) =
            matching(control, &call.principal, &call.params, required).await?;
        let mut items = list(found);
        truncate(&mut items, limit, &mut warnings);
        Ok::<_, ApiError>(success(json!(items), warnings))
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// Distinct strings, sorted, as JSON.
fn sorted(items: impl Iterator<Item = String>) -> Vec<Json> {
    items
        .collect::<BTreeSet<String>>()
        .into_iter()
        .map(Json::String)
        .collect()
}

/// `/api/v1/series`.
pub async fn series(State(control): State<Arc<Control>>, call: Call) -> Response {
    listing(&control, &call, true, |found| {
        found.iter().map(metric).collect()
    })
    .await
}

/// `/api/v1/labels`.
pub async fn labels(State(control): State<Arc<Control>>, call: Call) -> Response {
    listing(&control, &call, false, |found| {
        sorted(found.iter().flat_map(|s| {
            s.labels()
                .iter()
                .map(|(k, _)| k.to_string())
                .collect::<Vec<_>>()
        }))
    })
    .await
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `/api/v1/label/<name>/values`.
pub async fn label_values(
    State(control): State<Arc<Control>>,
    Path(name): Path<String>,
    call: Call,
) -> Response {
    if !valid_label_name(&name) {
        return ApiError::bad_data(format!("invalid label name: {name:?}")).into_response();
    }
    listing(&control, &call, false, |found| {
        sorted(found.iter().filter_map(|s| s.get(&name).map(str::to_owned)))
    })
    .await
}

/// `/api/v1/metadata`: Tidemark keeps no metric metadata (types, help);
/// the answer is Prometheus's for a server that has none.
pub async fn metadata() -> Response {
    success(json!({}), Vec::new())
}

/// `/api/v1/query_exemplars`: Tidemark keeps no exemplars.
pub async fn exemplars() -> Response {
    success(json!([]), Vec::new())
}

/// `/api/v1/status/buildinfo`.
pub async fn buildinfo() -> Response {
    success(
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "revision": option_env!("TIDEMARK_REVISION").unwrap_or("unknown"),
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "none (Tidemark is written in Rust)",
        }),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_as_prometheus_reads_them() {
        assert_eq!(parse_time("1435781451.781"), Some(1_435_781_451_781));
        assert_eq!(parse_time("1435781451"), Some(1_435_781_451_000));
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z"),
            Some(1_435_781_451_781)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_duration("15"), Some(15_000));
        assert_eq!(parse_duration("0.5"), Some(500));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("1y"), Some(365 * 86_400_000));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("m"), None);
    }

    #[test]
    fn seconds_are_whole_when_they_can_be() {
        assert_eq!(seconds(1_000).to_string(), "1");
        assert_eq!(seconds(1_435_781_451_781).to_string(), "1435781451.781");
        assert_eq!(point(1500, f64::INFINITY).to_string(), r#"[1.5,"+Inf"]"#);
    }

    #[test]
    fn a_union_merges_a_series_held_twice() {
        let limits = tidemark_engine::history::HistoryLimits {
            retention: 3_600_000,
            max_series: 10,
            max_bytes: 1 << 20,
        };
        let (a, b) = (History::new(limits), History::new(limits));
        let s = Series::new("m", [("k", "v")]);
        a.insert(&mut vec![tidemark_engine::Sample::new(
            s.clone(),
            1000,
            1.0,
        )]);
        b.insert(&mut vec![
            tidemark_engine::Sample::new(s.clone(), 1000, 1.0),
            tidemark_engine::Sample::new(s.clone(), 2000, 2.0),
        ]);
        let histories = vec![Arc::new(a), Arc::new(b)];
        let union = Union::new(&histories, None);
        let mut seen = Vec::new();
        union.select(&every_series(), 0, 5000, &mut |s, points| {
            seen.push((s.clone(), points.iter().map(|p| p.t).collect::<Vec<_>>()));
        });
        assert_eq!(seen, vec![(s, vec![1000, 2000])]);
        assert_eq!(union.read.get(), 2);
    }

    /// Records what it is asked; answers one point at each range's start,
    /// or fails.
    struct Recording {
        asked: std::sync::Mutex<Vec<(i64, i64)>>,
        fail: bool,
    }

    impl tidemark_engine::history::Archive for Recording {
        fn select<'a>(
            &'a self,
            wanted: &'a [Wanted],
            _max_points: usize,
        ) -> std::pin::Pin<
            Box<
                dyn Future<Output = Result<tidemark_engine::history::Found, ArchiveError>>
                    + Send
                    + 'a,
            >,
        > {
            Box::pin(async move {
                let mut asked = self.asked.lock().unwrap();
                asked.extend(wanted.iter().map(|w| (w.start, w.end)));
                if self.fail {
                    return Err(ArchiveError::Unreadable(
                        "the archive x cannot be read".into(),
                    ));
                }
                Ok(wanted
                    .iter()
                    .map(|w| {
                        (
                            Series::new("m", [("at", w.start.to_string())]),
                            vec![Point { t: w.start, v: 1.0 }],
                        )
                    })
                    .collect())
            })
        }

        fn describe(&self) -> String {
            "recording".into()
        }
    }

    #[test]
    fn archives_are_read_only_before_their_cover_and_failures_are_warnings() {
        let tier = |covered_from: Option<i64>, fail: bool| {
            let archive = Arc::new(Recording {
                asked: std::sync::Mutex::new(Vec::new()),
                fail,
            });
            let tier = ArchiveTier {
                pipeline: "p".into(),
                sink: "a".into(),
                archive: Arc::clone(&archive) as Arc<dyn tidemark_engine::history::Archive>,
                covered_from,
            };
            (archive, tier)
        };
        let (covered, a) = tier(Some(5_000), false);
        let (whole, b) = tier(None, false);
        let (broken, c) = tier(None, true);
        let wanted: Vec<Wanted> = [(1_000, 9_000), (6_000, 9_000)]
            .into_iter()
            .map(|(start, end)| Wanted {
                selector: every_series(),
                start,
                end,
            })
            .collect();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (store, warnings) = runtime
            .block_on(async move {
                tokio::task::spawn_blocking(move || {
                    from_archives(&[a, b, c], &wanted, Instant::now() + Duration::from_secs(5))
                })
                .await
            })
            .unwrap()
            .unwrap();
        // Clipped to the cover; a range wholly covered is not asked.
        assert_eq!(*covered.asked.lock().unwrap(), [(1_000, 4_999)]);
        assert_eq!(
            *whole.asked.lock().unwrap(),
            [(1_000, 9_000), (6_000, 9_000)]
        );
        assert_eq!(broken.asked.lock().unwrap().len(), 2);
        assert_eq!(warnings, ["the archive x cannot be read"]);
        let store = store.unwrap();
        assert_eq!((store.series_count(), store.point_count()), (2, 2));
    }

    #[test]
    fn label_names() {
        assert!(valid_label_name("__name__"));
        assert!(valid_label_name("job2"));
        assert!(!valid_label_name("2job"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
    }
}
