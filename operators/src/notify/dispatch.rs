//! Routing, grouping and inhibition as a plain state machine in event
//! time: Alertmanager's dispatcher and notification pipeline with timers
//! that are event times, so that a replay gives the same notifications at
//! the same times.
//!
//! - [`Dispatcher::insert`] takes an alert state change at its event
//!   time: the alert joins a group on every route it matches (the group is
//!   formed by the route's `group_by` labels), and a new group's first
//!   flush is due `group_wait` later (at once if the alert has been firing
//!   longer than that).
//! - [`Dispatcher::fire`] runs the flushes due up to a time, oldest first.
//!   A flush leaves out muted (silenced or inhibited) alerts, firing or
//!   resolved, as Alertmanager's mute stage does, and sends a notification
//!   when Alertmanager's notification log would: a firing alert not in the
//!   last notification, a resolved alert the last one showed firing or not
//!   at all, or `repeat_interval` since the last one. Resolved alerts then
//!   leave the group, an empty group is dropped, and the next flush is due
//!   `group_interval` later.
//!
//! Pending alerts are not notified (Prometheus sends only firing ones).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tidemark_engine::alert::{Alert, AlertState};
use tidemark_engine::notify::{
    LabelMap, Notification, NotifiedAlert, Status, fingerprint, label_map, label_set_string,
};

use serde::{Deserialize, Serialize};

use super::amconfig::{Route, Routing};
use super::inhibit::{Inhibitor, Sources};

/// A silence, its matchers compiled: it mutes the alerts they all match
/// at event times in `[starts_at, ends_at)`.
#[derive(Clone, Debug)]
pub struct ActiveSilence {
    /// From (ms).
    pub starts_at: i64,
    /// Until (ms).
    pub ends_at: i64,
    /// Every one must match.
    pub matchers: Vec<super::matcher::Matcher>,
}

impl ActiveSilence {
    /// A silence from the server's hub; `None` if a matcher does not
    /// compile (the API refuses such silences).
    pub fn new(s: &tidemark_engine::silence::Silence) -> Option<ActiveSilence> {
        use super::matcher::{Matcher, Op};
        let matchers = s
            .matchers
            .iter()
            .map(|m| {
                let op = match (m.is_regex, m.is_equal) {
                    (false, true) => Op::Equal,
                    (false, false) => Op::NotEqual,
                    (true, true) => Op::Regex,
                    (true, false) => Op::NotRegex,
                };
                Matcher::new(&m.name, op, &m.value).ok()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ActiveSilence {
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            matchers,
        })
    }

    /// Whether it mutes `labels` at the event time `at` or the wall-clock
    /// time `now`.
    fn mutes(&self, labels: &LabelMap, at: i64, now: i64) -> bool {
        let during = |t: i64| self.starts_at <= t && t < self.ends_at;
        (during(at) || during(now)) && super::matcher::all_match(&self.matchers, labels)
    }
}

/// A group's identity: its route's index and its labels' fingerprint.
type GroupId = (usize, u64);

/// An alert as a group holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Held {
    labels: LabelMap,
    annotations: LabelMap,
    starts_at: i64,
    ends_at: Option<i64>,
    generator_url: String,
}

/// What the last notification about a group said.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Sent {
    firing: BTreeSet<u64>,
    resolved: BTreeSet<u64>,
    at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Group {
    key: String,
    labels: LabelMap,
    alerts: BTreeMap<u64, Held>,
    next: i64,
    flushed: bool,
    last: Option<Sent>,
}

/// Counts of what flushes left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Alerts left out of a flush because an inhibition rule muted them.
    pub inhibited: u64,
    /// Alerts left out of a flush because a silence muted them.
    pub silenced: u64,
    /// Flushes that found nothing new to say.
    pub deduplicated: u64,
    /// Alerts left out of a flush because its route was muted by a time
    /// interval at the flush's event time.
    pub time_muted: u64,
}

/// The routing state of one `route` transform (on one worker: every
/// alert of the pipeline comes to it).
#[derive(Debug)]
pub struct Dispatcher {
    routing: Arc<Routing>,
    routes: Vec<Route>,
    external_url: String,
    inhibitor: Inhibitor,
    silences: Vec<ActiveSilence>,
    /// The wall clock as last told (ms): silences are wall-clock objects.
    now: i64,
    /// Muted alerts by receiver and cause, since [`Self::take_muted`].
    muted: BTreeMap<(String, &'static str), u64>,
    groups: BTreeMap<GroupId, Group>,
    /// Flushes due: (time, group).
    timers: BTreeSet<(i64, GroupId)>,
    counts: Counts,
}

impl Dispatcher {
    /// A dispatcher for a routing configuration.
    pub fn new(routing: Arc<Routing>, external_url: &str) -> Dispatcher {
        let routes = routing.root.walk().into_iter().cloned().collect();
        Dispatcher {
            inhibitor: Inhibitor::new(routing.inhibit.clone()),
            silences: Vec::new(),
            now: i64::MIN,
            muted: BTreeMap::new(),
            routing,
            routes,
            external_url: external_url.to_owned(),
            groups: BTreeMap::new(),
            timers: BTreeSet::new(),
            counts: Counts::default(),
        }
    }

    /// Replaces the silences applied from now on.
    pub fn set_silences(&mut self, silences: Vec<ActiveSilence>) {
        self.silences = silences;
    }

    /// Tells the wall-clock time (ms). A silence mutes an alert at a
    /// flush if it is in force at the flush's event time (a replay) or at
    /// the wall-clock time (a silence made now also covers notifications
    /// a lagging watermark is still to send).
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    /// Takes an alert's state change at event time `t` (not earlier than
    /// the last flush fired).
    pub fn insert(&mut self, alert: &Alert, t: i64) {
        if alert.state == AlertState::Pending {
            return;
        }
        let labels = label_map(&alert.labels);
        let fp = fingerprint(&labels);
        let firing = alert.state == AlertState::Firing;
        self.inhibitor.set(fp, &labels, firing);
        let held = Held {
            labels: labels.clone(),
            annotations: alert.annotations.iter().cloned().collect(),
            starts_at: alert.starts_at,
            ends_at: if firing {
                None
            } else {
                Some(alert.ends_at.unwrap_or(t))
            },
            generator_url: alert.generator_url.clone(),
        };
        let routing = Arc::clone(&self.routing);
        for route in routing.root.matching(&labels) {
            let group_labels = route.group_labels(&labels);
            let id = (route.index, fingerprint(&group_labels));
            let group = self.groups.entry(id).or_insert_with(|| {
                let next = t + route.group_wait;
                self.timers.insert((next, id));
                Group {
                    key: format!("{}:{}", route.key, label_set_string(&group_labels)),
                    labels: group_labels,
                    alerts: BTreeMap::new(),
                    next,
                    flushed: false,
                    last: None,
                }
            });
            group.alerts.insert(fp, held.clone());
            // An alert that has fired for longer than group_wait (a
            // restart, a late start) is not held back further.
            if !group.flushed && held.starts_at + route.group_wait < t && group.next > t {
                self.timers.remove(&(group.next, id));
                group.next = t;
                self.timers.insert((t, id));
            }
        }
    }

    /// The earliest flush due, if any.
    pub fn next_due(&self) -> Option<i64> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Runs every flush due at or before `t`, in time order; returns the
    /// notifications they send.
    pub fn fire(&mut self, t: i64) -> Vec<Notification> {
        let mut out = Vec::new();
        while let Some(&(due, id)) = self.timers.first() {
            if due > t {
                break;
            }
            self.timers.pop_first();
            out.extend(self.flush(id, due, true));
        }
        out
    }

    /// Runs, once, every flush that is due some time and would send
    /// something (new firing or resolved alerts): the end of a finite
    /// input, whose last changes would otherwise never be told. Repeats of
    /// unchanged groups are not sent.
    pub fn finish(&mut self) -> Vec<Notification> {
        let timers = std::mem::take(&mut self.timers);
        let out = timers
            .into_iter()
            .filter_map(|(due, id)| self.flush(id, due, false))
            .collect();
        self.timers.clear();
        out
    }

    /// What flushes have left out so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Alerts muted since the last call, by receiver and cause
    /// (`silenced`, `inhibited`).
    pub fn take_muted(&mut self) -> BTreeMap<(String, &'static str), u64> {
        std::mem::take(&mut self.muted)
    }

    /// Groups alive.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// The state a checkpoint keeps (bincode): every group with its
    /// alerts, what it last told and its next flush, and the inhibition
    /// rules' firing sources. Silences are the server's, and counts are
    /// counters: neither is kept.
    pub fn save(&self) -> Vec<u8> {
        let groups: Vec<(&GroupId, &Group)> = self.groups.iter().collect();
        tidemark_engine::checkpoint::encode(&(groups, self.inhibitor.sources()))
    }

    /// Takes back what [`Self::save`] wrote, in place of any state (the
    /// routing is the same, or the state would not be restored).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (groups, sources): (Vec<(GroupId, Group)>, Vec<Sources>) =
            tidemark_engine::checkpoint::decode(bytes)?;
        if let Some(((route, _), _)) = groups.iter().find(|((r, _), _)| *r >= self.routes.len()) {
            return Err(format!(
                "a group of route {route}, which this routing does not have"
            ));
        }
        self.timers = groups.iter().map(|(id, g)| (g.next, *id)).collect();
        self.groups = groups.into_iter().collect();
        self.inhibitor.restore(sources);
        Ok(())
    }

    fn flush(&mut self, id: GroupId, at: i64, repeats: bool) -> Option<Notification> {
        let route = &self.routes[id.0];
        let group = self.groups.get_mut(&id)?;
        let mut shown: Vec<(u64, &Held)> = Vec::new();
        let (mut silenced, mut inhibited) = (0, 0);
        for (fp, held) in &group.alerts {
            if self
                .silences
                .iter()
                .any(|s| s.mutes(&held.labels, at, self.now))
            {
                silenced += 1;
            } else if self.inhibitor.mutes(&held.labels) {
                inhibited += 1;
            } else {
                shown.push((*fp, held));
            }
        }
        self.counts.silenced += silenced;
        self.counts.inhibited += inhibited;
        for (what, n) in [("silenced", silenced), ("inhibited", inhibited)] {
            if n > 0 {
                *self
                    .muted
                    .entry((route.receiver.clone(), what))
                    .or_default() += n;
            }
        }
        // A route muted by a time interval tells nobody at this flush and
        // records nothing (the next flush out of the interval tells what
        // is new then); resolved alerts are let go as after any flush.
        let time_muted = !shown.is_empty() && self.routing.time_muted(route, at);
        if time_muted {
            self.counts.time_muted += shown.len() as u64;
            *self
                .muted
                .entry((route.receiver.clone(), "time_muted"))
                .or_default() += shown.len() as u64;
        }
        let firing: BTreeSet<u64> = shown
            .iter()
            .filter(|(_, h)| h.ends_at.is_none())
            .map(|(fp, _)| *fp)
            .collect();
        let resolved: BTreeSet<u64> = shown
            .iter()
            .filter(|(_, h)| h.ends_at.is_some())
            .map(|(fp, _)| *fp)
            .collect();
        let send = !time_muted
            && needs_update(
                group.last.as_ref(),
                &firing,
                &resolved,
                self.routing.send_resolved.contains(&route.receiver),
                at,
                repeats.then_some(route.repeat_interval),
            );
        let notification =
            send.then(|| notification(group, &shown, &route.receiver, &self.external_url, at));
        if send {
            group.last = Some(Sent {
                firing,
                resolved,
                at,
            });
        } else if !time_muted {
            self.counts.deduplicated += 1;
        }
        group.flushed = true;
        group.alerts.retain(|_, h| h.ends_at.is_none());
        if group.alerts.is_empty() {
            self.groups.remove(&id);
        } else {
            group.next = at + route.group_interval;
            self.timers.insert((group.next, id));
        }
        notification
    }
}

/// Alertmanager's deduplication (`DedupStage.needsUpdate`).
fn needs_update(
    last: Option<&Sent>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    now: i64,
    repeat: Option<i64>,
) -> bool {
    let Some(last) = last else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&last.firing) {
        return true;
    }
    if firing.is_empty() {
        return !last.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&last.resolved) {
        return true;
    }
    repeat.is_some_and(|r| last.at + r <= now)
}

fn notification(
    group: &Group,
    shown: &[(u64, &Held)],
    receiver: &str,
    external_url: &str,
    at: i64,
) -> Notification {
    let mut alerts: Vec<NotifiedAlert> = shown
        .iter()
        .map(|(fp, h)| NotifiedAlert {
            status: if h.ends_at.is_none() {
                Status::Firing
            } else {
                Status::Resolved
            },
            labels: h.labels.clone(),
            annotations: h.annotations.clone(),
            starts_at: h.starts_at,
            ends_at: h.ends_at,
            generator_url: h.generator_url.clone(),
            fingerprint: format!("{fp:016x}"),
        })
        .collect();
    alerts.sort_by(|a, b| {
        (a.status != Status::Firing, &a.labels).cmp(&(b.status != Status::Firing, &b.labels))
    });
    let common = |get: fn(&NotifiedAlert) -> &LabelMap| -> LabelMap {
        let mut iter = alerts.iter();
        let Some(first) = iter.next() else {
            return LabelMap::new();
        };
        let mut common = get(first).clone();
        for a in iter {
            common.retain(|k, v| get(a).get(k) == Some(v));
        }
        common
    };
    Notification {
        version: "4".into(),
        group_key: group.key.clone(),
        truncated_alerts: 0,
        status: if alerts.iter().any(|a| a.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        },
        receiver: receiver.to_owned(),
        group_labels: group.labels.clone(),
        common_labels: common(|a| &a.labels),
        common_annotations: common(|a| &a.annotations),
        external_url: external_url.to_owned(),
        alerts,
        at,
    }
}
