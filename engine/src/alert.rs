//! Alerts: the records of an `alert` transform's `alerts` output, one per
//! state change of an alert instance, for notifiers (the notification
//! issue) and anything else that takes `alerts`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::series::Series;

/// An alert instance's state, as Prometheus names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Its condition holds, not yet for `for`.
    Pending,
    /// Its condition has held for `for` (or is kept by `keep_firing_for`).
    Firing,
    /// It fired and its condition no longer holds.
    Resolved,
}

impl AlertState {
    /// The word Prometheus uses (`pending`, `firing`, `inactive` for a
    /// resolved alert in its API; `resolved` here).
    pub fn word(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// A state change of one alert instance. Serialised with Alertmanager's
/// field names (`startsAt`, `endsAt`, `generatorURL`; `activeAt` as in
/// Prometheus's API).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The instance's labels: the result's without `__name__`, the rule's
    /// labels, and `alertname` (a JSON object).
    #[serde(with = "crate::series::as_map")]
    pub labels: Series,
    /// Annotations, expanded at this step.
    pub annotations: Arc<[(String, String)]>,
    /// The new state.
    pub state: AlertState,
    /// When its condition started to hold (event time, ms).
    pub active_at: i64,
    /// When it started firing (`startsAt` for Alertmanager), or
    /// `active_at` while pending.
    pub starts_at: i64,
    /// When it was resolved (`endsAt`), if it was.
    pub ends_at: Option<i64>,
    /// The value of the rule's expression for it at this step.
    pub value: f64,
    /// The evaluation step (event time, ms) of this change.
    pub at: i64,
    /// Where the rule is described (`generatorURL`).
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_have_alertmanagers_names() {
        let alert = Alert {
            labels: Series::new("", [("alertname", "A")]),
            annotations: Arc::from(vec![]),
            state: AlertState::Firing,
            active_at: 1,
            starts_at: 2,
            ends_at: None,
            value: 1.0,
            at: 2,
            generator_url: "/graph".into(),
        };
        let json = serde_json::to_value(&alert).unwrap();
        for key in [
            "labels",
            "annotations",
            "state",
            "activeAt",
            "startsAt",
            "endsAt",
            "generatorURL",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["state"], "firing");
        assert_eq!(json["labels"], serde_json::json!({"alertname": "A"}));
        let back: Alert = serde_json::from_value(json).unwrap();
        assert_eq!(back, alert);
    }
}
