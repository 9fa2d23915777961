//! Incidents: the records of a `correlate` transform's `incidents` output,
//! one per change of an incident (opened, updated, merged, resolved), with
//! its members and why each belongs, for the dashboard, notifiers and
//! anything else that takes `incidents`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happened to an incident at this step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// It appeared: a new alert not tied to any open incident, or the part
    /// of an incident that split off from it.
    Opened,
    /// Its members or its explanation changed.
    Updated,
    /// It was merged into another incident (`mergedInto`), which keeps its
    /// own id: the older one survives a merge.
    Merged,
    /// Every member is resolved (it may reopen while it is kept).
    Resolved,
    /// Its last member retired (resolved longer than the horizon ago): it
    /// is gone for good.
    Retired,
}

/// One alert of an incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The alert's labels (those of its `ALERTS` series without
    /// `__name__` and `alertstate`), a JSON object.
    pub labels: BTreeMap<String, String>,
    /// When this episode of the alert started firing (event time, ms).
    pub starts_at: i64,
    /// When it stopped, once it has.
    pub ends_at: Option<i64>,
    /// The topology entity it was matched to, if any (`service=checkout`).
    pub entity: Option<String>,
    /// Why it belongs: the strongest tie to another member, in words
    /// (`depends on service=payments (1 hop), started 40s after`); empty
    /// for an incident of one alert.
    pub tied_by: String,
}

/// A state change of one incident.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// Its stable id: it stays when the incident grows, and the older id
    /// stays when two merge.
    pub id: String,
    /// What happened.
    pub status: IncidentStatus,
    /// The incident this one was merged into, for `merged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// The incident this one split from, for an `opened` split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_from: Option<String>,
    /// When its earliest member started (event time, ms).
    pub opened_at: i64,
    /// The step of this change (event time, ms).
    pub at: i64,
    /// Its members, earliest first (empty for `merged` and `retired`).
    pub members: Vec<Member>,
    /// The probable root: an entity (`host=node-3`) or the earliest
    /// alert's labels.
    pub root: String,
    /// Why that is the probable root.
    pub root_reason: String,
    /// One line: how many alerts on how many entities, since when, and
    /// the probable root.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_camel_case() {
        let incident = Incident {
            id: "a".into(),
            status: IncidentStatus::Merged,
            merged_into: Some("b".into()),
            split_from: None,
            opened_at: 1,
            at: 2,
            members: vec![Member {
                labels: BTreeMap::from([("alertname".to_owned(), "A".to_owned())]),
                starts_at: 1,
                ends_at: None,
                entity: None,
                tied_by: String::new(),
            }],
            root: String::new(),
            root_reason: String::new(),
            summary: String::new(),
        };
        let json = serde_json::to_value(&incident).unwrap();
        for key in [
            "id",
            "status",
            "mergedInto",
            "openedAt",
            "at",
            "members",
            "rootReason",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert!(json.get("splitFrom").is_none());
        assert_eq!(json["status"], "merged");
        assert!(json["members"][0].get("startsAt").is_some());
        assert_eq!(json["members"][0]["labels"]["alertname"], "A");
    }
}
