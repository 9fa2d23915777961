//! `GET /api/v1/rules` and `GET /api/v1/alerts` in Prometheus's JSON
//! shapes, from the rule groups this process's `alert` transforms publish
//! (`engine::rules::RulesHub`), so that tools that read Prometheus's (the
//! Grafana alert list, promtool, scripts) read Tidemark's. A caller sees
//! the groups of the pipelines it may see. Groups carry two fields
//! Prometheus does not have, `pipeline` and `transform`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use tidemark_engine::Series;
use tidemark_engine::rules::{AlertSnapshot, GroupSnapshot, RuleSnapshot, RuleType};
use tidemark_engine::time::format_millis;

use crate::auth::Principal;
use crate::control::Control;

/// Query parameters of `/api/v1/rules`.
#[derive(Debug, Deserialize)]
pub struct RulesQuery {
    /// `alert` or `record`: only rules of that type.
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn labels(series: &Series) -> Value {
    Value::Object(
        series
            .labels()
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

fn pairs(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// A time as Prometheus writes it; the zero time when there is none.
fn time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), format_millis)
}

fn alert_json(a: &AlertSnapshot) -> Value {
    json!({
        "labels": labels(&a.labels),
        "annotations": pairs(&a.annotations),
        "state": a.state.word(),
        "activeAt": format_millis(a.active_at),
        "value": tidemark_promql::gofmt::e(a.value),
    })
}

fn health(rule: &RuleSnapshot) -> &'static str {
    match (&rule.last_error, rule.last_evaluation) {
        (Some(_), _) => "err",
        (None, Some(_)) => "ok",
        (None, None) => "unknown",
    }
}

fn rule_json(rule: &RuleSnapshot) -> Value {
    let mut v = json!({
        "name": rule.name,
        "query": rule.query,
        "labels": pairs(&rule.labels),
        "health": health(rule),
        "lastError": rule.last_error.clone().unwrap_or_default(),
        "evaluationTime": rule.evaluation_seconds,
        "lastEvaluation": time(rule.last_evaluation),
    });
    match &rule.kind {
        RuleType::Recording => v["type"] = json!("recording"),
        RuleType::Alerting {
            hold,
            keep_firing,
            annotations,
            alerts,
        } => {
            let state = if alerts.iter().any(|a| a.state.word() == "firing") {
                "firing"
            } else if alerts.is_empty() {
                "inactive"
            } else {
                "pending"
            };
            v["type"] = json!("alerting");
            v["state"] = json!(state);
            v["duration"] = json!(*hold as f64 / 1000.0);
            v["keepFiringFor"] = json!(*keep_firing as f64 / 1000.0);
            v["annotations"] = pairs(annotations);
            v["alerts"] = Value::Array(alerts.iter().map(alert_json).collect());
        }
    }
    v
}

fn group_json(g: &GroupSnapshot, kind: Option<&str>) -> Value {
    let rules: Vec<Value> = g
        .rules
        .iter()
        .filter(|r| {
            !matches!(
                (kind, &r.kind),
                (Some("alert"), RuleType::Recording) | (Some("record"), RuleType::Alerting { .. })
            )
        })
        .map(rule_json)
        .collect();
    json!({
        "name": g.name,
        "file": g.file,
        "pipeline": g.pipeline,
        "transform": g.transform,
        "interval": g.interval as f64 / 1000.0,
        "limit": g.limit,
        "rules": rules,
        "evaluationTime": g.evaluation_seconds,
        "lastEvaluation": time(g.last_evaluation),
    })
}

fn visible(control: &Control, principal: &Principal) -> Vec<GroupSnapshot> {
    control
        .rules
        .groups()
        .into_iter()
        .filter(|g| control.may_see(principal, &g.pipeline))
        .collect()
}

fn bad(message: String) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        axum::Json(json!({"status": "error", "errorType": "bad_data", "error": message})),
    )
        .into_response()
}

/// `GET /api/v1/rules[?type=alert|record]`.
pub async fn rules(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<RulesQuery>,
) -> Response {
    let kind = query.kind.as_deref();
    if kind.is_some_and(|k| k != "alert" && k != "record") {
        return bad(format!(
            "unsupported type {:?}: use alert or record",
            kind.unwrap_or_default()
        ));
    }
    let groups: Vec<Value> = visible(&control, &principal)
        .iter()
        .map(|g| group_json(g, kind))
        .collect();
    axum::Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

/// `GET /api/v1/alerts`: every active alert (pending or firing).
pub async fn alerts(
    State(control): State<Arc<Control>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let alerts: Vec<Value> = visible(&control, &principal)
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| match &r.kind {
            RuleType::Alerting { alerts, .. } => alerts.iter().map(alert_json).collect(),
            RuleType::Recording => Vec::new(),
        })
        .collect();
    axum::Json(json!({"status": "success", "data": {"alerts": alerts}})).into_response()
}
