//! The notifier's side of the HTTP API:
//!
//! - Alertmanager's API v2 for silences, so that `amtool silence` and
//!   other clients of Alertmanager create, list and expire Tidemark's:
//!   `GET|POST /api/v2/silences`, `GET|DELETE /api/v2/silence/{id}`. The
//!   `route` transforms of this process apply them. A tenant's silence
//!   gets the matcher `tenant="<its tenant>"`, so it mutes only its own
//!   alerts, and a tenant sees only its silences.
//! - `GET /api/v1/notifications`: recent deliveries, for the dashboard.
//! - `GET /api/v1/incidents`: the incidents of `correlate` transforms, for
//!   the dashboard and scripts.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use tidemark_codecs::tenant::TENANT_LABEL;
use tidemark_engine::incident::IncidentStatus;
use tidemark_engine::silence::{Silence, SilenceMatcher};
use tidemark_engine::time::{format_millis, now_millis, parse_rfc3339};
use tidemark_operators::notify::matcher::{Matcher, Op};

use crate::auth::Principal;
use crate::control::Control;

/// Alertmanager's `postableSilence`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    #[serde(default)]
    id: Option<String>,
    matchers: Vec<SilenceMatcher>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

fn bad(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(Value::String(message.into())),
    )
        .into_response()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(Value::String(format!("silence {id} not found"))),
    )
        .into_response()
}

/// The matcher that confines a tenant's silence to its alerts.
fn tenant_matcher(tenant: &str) -> SilenceMatcher {
    SilenceMatcher {
        name: TENANT_LABEL.to_owned(),
        value: tenant.to_owned(),
        is_regex: false,
        is_equal: true,
    }
}

fn visible(principal: &Principal, silence: &Silence) -> bool {
    match &principal.tenant {
        None => true,
        Some(t) => silence.matchers.contains(&tenant_matcher(t)),
    }
}

fn gettable(s: &Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now)},
        "updatedAt": format_millis(s.updated_at),
        "matchers": s.matchers,
        "startsAt": format_millis(s.starts_at),
        "endsAt": format_millis(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// Checks a posted silence as Alertmanager does.
fn check(p: PostableSilence, principal: &Principal, now: i64) -> Result<Silence, String> {
    if p.matchers.is_empty() {
        return Err("silence invalid: at least one matcher required".into());
    }
    for m in &p.matchers {
        let op = if m.is_regex { Op::Regex } else { Op::Equal };
        Matcher::new(&m.name, op, &m.value).map_err(|e| format!("silence invalid: {e}"))?;
    }
    let starts_at = parse_rfc3339(&p.starts_at).map_err(|e| format!("startsAt: {e}"))?;
    let ends_at = parse_rfc3339(&p.ends_at).map_err(|e| format!("endsAt: {e}"))?;
    if ends_at < starts_at {
        return Err("silence invalid: end time must not be before start time".into());
    }
    if ends_at <= now {
        return Err("silence invalid: end time can't be in the past".into());
    }
    let mut matchers = p.matchers;
    if let Some(t) = &principal.tenant {
        let own = tenant_matcher(t);
        matchers.retain(|m| m.name != TENANT_LABEL);
        matchers.push(own);
    }
    Ok(Silence {
        id: p.id.unwrap_or_default(),
        matchers,
        starts_at,
        ends_at,
        created_by: p.created_by,
        comment: p.comment,
        updated_at: now,
    })
}

/// `GET /api/v1/notifications`: the latest deliveries of this process's
/// `notify` sinks (at most 200), of the pipelines the caller may see,
/// newest first, for the dashboard.
pub async fn notifications(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let mut all: Vec<Value> = control
        .notifications
        .list()
        .into_iter()
        .filter(|d| control.may_see(&principal, &d.pipeline))
        .map(|d| {
            json!({
                "pipeline": d.pipeline,
                "sink": d.sink,
                "receiver": d.receiver,
                "target": d.target,
                "status": d.status,
                "title": d.title,
                "alerts": d.alerts,
                "at": format_millis(d.at),
                "doneAt": format_millis(d.done_at),
                "outcome": d.outcome,
            })
        })
        .collect();
    all.reverse();
    axum::Json(json!({"status": "success", "data": {"notifications": all}})).into_response()
}

/// `GET /api/v1/incidents`: every incident this process's `correlate`
/// transforms hold (open, and the latest resolved ones), of the pipelines
/// the caller may see: each as its latest record (the `incidents`
/// output's fields) with `pipeline` and `transform`. Open ones first,
/// then resolved; the latest change first within each.
pub async fn incidents(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let mut all: Vec<(bool, i64, Value)> = control
        .incidents
        .list()
        .into_iter()
        .filter(|(pipeline, _, _)| control.may_see(&principal, pipeline))
        .map(|(pipeline, transform, incident)| {
            let open = incident.status != IncidentStatus::Resolved;
            let mut v = serde_json::to_value(&incident).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("pipeline".into(), Value::String(pipeline));
                m.insert("transform".into(), Value::String(transform));
            }
            (open, incident.at, v)
        })
        .collect();
    all.sort_by_key(|(open, at, _)| std::cmp::Reverse((*open, *at)));
    let all: Vec<Value> = all.into_iter().map(|(_, _, v)| v).collect();
    axum::Json(json!({"status": "success", "data": {"incidents": all}})).into_response()
}

/// `GET /api/v2/silences`.
pub async fn list(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let now = now_millis();
    let all: Vec<Value> = control
        .silences
        .list(now)
        .iter()
        .filter(|s| visible(&principal, s))
        .map(|s| gettable(s, now))
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

/// `POST /api/v2/silences`: creates a silence, or replaces the one whose
/// `id` it gives; answers `{"silenceID": ...}`.
pub async fn post(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let posted: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(format!("invalid silence: {e}")),
    };
    let now = now_millis();
    if let Some(id) = posted.id.as_deref().filter(|id| !id.is_empty()) {
        if own(&control, &principal, id).is_none() {
            return not_found(id);
        }
        // As Alertmanager: the old one ends, the new one replaces it.
        control.silences.expire(id, now);
    }
    match check(posted, &principal, now) {
        Ok(mut silence) => {
            silence.id.clear();
            let id = control.silences.put(silence);
            control.save_silences().await;
            axum::Json(json!({"silenceID": id})).into_response()
        }
        Err(e) => bad(e),
    }
}

/// The silence `id`, if the caller may see it.
fn own(control: &Control, principal: &Principal, id: &str) -> Option<Silence> {
    control.silences.get(id).filter(|s| visible(principal, s))
}

/// `GET /api/v2/silence/{id}`.
pub async fn get_one(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match own(&control, &principal, &id) {
        Some(s) => axum::Json(gettable(&s, now_millis())).into_response(),
        None => not_found(&id),
    }
}

/// `DELETE /api/v2/silence/{id}`: expires it now.
pub async fn expire(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    match own(&control, &principal, &id) {
        Some(_) => {
            control.silences.expire(&id, now_millis());
            control.save_silences().await;
            StatusCode::OK.into_response()
        }
        None => not_found(&id),
    }
}
