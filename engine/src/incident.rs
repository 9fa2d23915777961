//! Incidents: the records of a `correlate` transform's `incidents` output,
//! one per change of an incident (opened, updated, merged, resolved), with
//! its members and why each belongs, for the dashboard, notifiers and
//! anything else that takes `incidents`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::Series;
use crate::alert::{Alert, AlertState};

/// The `alertname` of an incident as an alert ([`Incident::as_alert`]).
pub const INCIDENT_ALERTNAME: &str = "Incident";

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
    /// The member that tie is to: its index in the incident's `members`
    /// (absent for an incident of one alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tied_to: Option<usize>,
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

impl Incident {
    /// The incident as one alert, so that a `route` transform pages once
    /// per incident: labels `alertname="Incident"` and `incident="<id>"`
    /// (the same for the incident's whole life, so each change updates
    /// the same alert), firing while it is open, resolved once it is
    /// resolved or merged into another (which then holds its members).
    /// Annotations: `summary`, `root`, `root_reason` and `members` (one
    /// line each: labels, since when, why it belongs). `None` for a
    /// retired incident (it was resolved before).
    pub fn as_alert(&self) -> Option<Alert> {
        let state = match self.status {
            IncidentStatus::Opened | IncidentStatus::Updated => AlertState::Firing,
            IncidentStatus::Resolved | IncidentStatus::Merged => AlertState::Resolved,
            IncidentStatus::Retired => return None,
        };
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let labels: Vec<String> =
                    m.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                let mut line = format!("{{{}}} since {}", labels.join(", "), m.starts_at);
                if m.ends_at.is_some() {
                    line.push_str(" (resolved)");
                }
                if !m.tied_by.is_empty() {
                    line.push_str(": ");
                    line.push_str(&m.tied_by);
                }
                line
            })
            .collect();
        let mut annotations = vec![("summary".to_owned(), self.summary.clone())];
        if let Some(into) = &self.merged_into {
            annotations.push(("merged_into".to_owned(), into.clone()));
        }
        for (name, value) in [("root", &self.root), ("root_reason", &self.root_reason)] {
            if !value.is_empty() {
                annotations.push((name.to_owned(), value.clone()));
            }
        }
        if !members.is_empty() {
            annotations.push(("members".to_owned(), members.join("\n")));
        }
        Some(Alert {
            labels: Series::new(
                "",
                [
                    ("alertname", INCIDENT_ALERTNAME),
                    ("incident", self.id.as_str()),
                ],
            ),
            annotations: Arc::from(annotations),
            state,
            active_at: self.opened_at,
            starts_at: self.opened_at,
            ends_at: (state == AlertState::Resolved).then_some(self.at),
            value: self.members.len() as f64,
            at: self.at,
            generator_url: String::new(),
        })
    }
}

/// An incident's key: pipeline, component and id.
type Key = (String, String, String);

/// Incidents by key, with their publisher, and the resolved ones by the
/// time of their record (to drop the oldest without a scan).
#[derive(Debug, Default)]
struct Held {
    incidents: BTreeMap<Key, (u64, Incident)>,
    resolved: BTreeSet<(i64, Key)>,
}

impl Held {
    fn remove(&mut self, key: &Key) {
        if let Some((_, old)) = self.incidents.remove(key)
            && old.status == IncidentStatus::Resolved
        {
            self.resolved.remove(&(old.at, key.clone()));
        }
    }

    fn insert(&mut self, key: Key, publisher: u64, incident: Incident) {
        self.remove(&key);
        if incident.status == IncidentStatus::Resolved {
            self.resolved.insert((incident.at, key.clone()));
        }
        self.incidents.insert(key, (publisher, incident));
    }
}

/// The incidents of every `correlate` transform of the process, as their
/// latest records tell them: open ones, and resolved ones until they
/// retire (at most [`IncidentBoard::RESOLVED`] of those, the latest), for
/// the server's incidents API and the dashboard. A merged or retired
/// incident leaves the board.
#[derive(Debug, Default)]
pub struct IncidentBoard {
    held: Mutex<Held>,
    next: AtomicU64,
}

impl IncidentBoard {
    /// Resolved incidents kept, the latest.
    pub const RESOLVED: usize = 100;

    /// A token that identifies one publisher (an operator instance), so
    /// that a replaced pipeline's operator, dropped after its successor
    /// published, withdraws only its own incidents.
    pub fn publisher(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records a change of an incident of `component` in `pipeline`.
    pub fn record(&self, publisher: u64, pipeline: &str, component: &str, incident: &Incident) {
        let key = (
            pipeline.to_owned(),
            component.to_owned(),
            incident.id.clone(),
        );
        let mut held = self.lock();
        match incident.status {
            IncidentStatus::Merged | IncidentStatus::Retired => held.remove(&key),
            _ => held.insert(key, publisher, incident.clone()),
        }
        while held.resolved.len() > Self::RESOLVED {
            let Some((_, oldest)) = held.resolved.pop_first() else {
                break;
            };
            held.incidents.remove(&oldest);
        }
    }

    /// Removes what `publisher` recorded.
    pub fn withdraw(&self, publisher: u64) {
        let mut held = self.lock();
        let theirs: Vec<Key> = held
            .incidents
            .iter()
            .filter(|(_, (p, _))| *p == publisher)
            .map(|(k, _)| k.clone())
            .collect();
        for key in theirs {
            held.remove(&key);
        }
    }

    /// Every incident held, with its pipeline and component.
    pub fn list(&self) -> Vec<(String, String, Incident)> {
        self.lock()
            .incidents
            .iter()
            .map(|((p, c, _), (_, i))| (p.clone(), c.clone(), i.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
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
                tied_to: None,
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

    #[test]
    fn an_incident_is_one_alert_with_the_same_labels_for_its_whole_life() {
        let member = |name: &str, ends_at| Member {
            labels: BTreeMap::from([("alertname".to_owned(), name.to_owned())]),
            starts_at: 10,
            ends_at,
            entity: None,
            tied_by: "depends on service=db".into(),
            tied_to: Some(0),
        };
        let incident = |status, members: Vec<Member>| Incident {
            id: "abc".into(),
            status,
            merged_into: None,
            split_from: None,
            opened_at: 10,
            at: 40,
            members,
            root: "service=db".into(),
            root_reason: "the earliest alert".into(),
            summary: "2 alerts".into(),
        };
        let opened = incident(IncidentStatus::Opened, vec![member("A", None)])
            .as_alert()
            .unwrap();
        let updated = incident(
            IncidentStatus::Updated,
            vec![member("A", None), member("B", Some(30))],
        )
        .as_alert()
        .unwrap();
        let resolved = incident(IncidentStatus::Resolved, vec![member("A", Some(35))])
            .as_alert()
            .unwrap();
        let merged = incident(IncidentStatus::Merged, vec![]).as_alert().unwrap();
        assert_eq!(
            opened.labels.to_string(),
            "{alertname=\"Incident\", incident=\"abc\"}"
        );
        for a in [&updated, &resolved, &merged] {
            assert_eq!(a.labels, opened.labels);
        }
        assert_eq!(
            (opened.state, updated.state, resolved.state, merged.state),
            (
                AlertState::Firing,
                AlertState::Firing,
                AlertState::Resolved,
                AlertState::Resolved
            )
        );
        assert_eq!((opened.starts_at, resolved.ends_at), (10, Some(40)));
        let members = &updated
            .annotations
            .iter()
            .find(|(k, _)| k == "members")
            .unwrap()
            .1;
        assert_eq!(members.lines().count(), 2, "{members}");
        assert!(
            members.contains("(resolved): depends on service=db"),
            "{members}"
        );
        assert!(
            incident(IncidentStatus::Retired, vec![])
                .as_alert()
                .is_none()
        );
    }

    #[test]
    fn the_board_holds_open_and_recently_resolved_incidents() {
        let board = IncidentBoard::default();
        let (a, b) = (board.publisher(), board.publisher());
        let incident = |id: &str, status, at| Incident {
            id: id.into(),
            status,
            merged_into: None,
            split_from: None,
            opened_at: 0,
            at,
            members: Vec::new(),
            root: String::new(),
            root_reason: String::new(),
            summary: String::new(),
        };
        let ids = |board: &IncidentBoard| {
            board
                .list()
                .into_iter()
                .map(|(_, _, i)| (i.id, i.status))
                .collect::<Vec<_>>()
        };
        board.record(a, "p", "inc", &incident("x", IncidentStatus::Opened, 1));
        board.record(a, "p", "inc", &incident("y", IncidentStatus::Opened, 1));
        board.record(a, "p", "inc", &incident("x", IncidentStatus::Updated, 2));
        board.record(a, "p", "inc", &incident("y", IncidentStatus::Merged, 2));
        board.record(b, "q", "inc", &incident("z", IncidentStatus::Opened, 1));
        assert_eq!(
            ids(&board),
            [
                ("x".into(), IncidentStatus::Updated),
                ("z".into(), IncidentStatus::Opened)
            ]
        );
        board.withdraw(b);
        board.record(a, "p", "inc", &incident("x", IncidentStatus::Retired, 3));
        assert!(board.list().is_empty());
        // The latest resolved ones are kept.
        for n in 0..IncidentBoard::RESOLVED + 5 {
            let id = format!("r{n:03}");
            board.record(
                a,
                "p",
                "inc",
                &incident(&id, IncidentStatus::Resolved, n as i64),
            );
        }
        let kept = ids(&board);
        assert_eq!(kept.len(), IncidentBoard::RESOLVED);
        assert_eq!(kept[0].0, "r005");
        // One reopens: it is open, not among the resolved, and stays
        // when more resolve.
        board.record(
            a,
            "p",
            "inc",
            &incident("r050", IncidentStatus::Updated, 200),
        );
        board.record(a, "p", "inc", &incident("s", IncidentStatus::Resolved, 201));
        board.record(a, "p", "inc", &incident("t", IncidentStatus::Resolved, 202));
        let kept = ids(&board);
        assert_eq!(kept.len(), IncidentBoard::RESOLVED + 1);
        assert_eq!(kept[0].0, "r006");
        assert!(kept.contains(&("r050".into(), IncidentStatus::Updated)));
    }
}
