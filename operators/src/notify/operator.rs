//! The `route` operator: every alert of the pipeline goes to one worker
//! (worker 0, as Alertmanager is one process), which runs the
//! [`Dispatcher`] in event time. Alerts are applied in time order once the
//! frontier has passed their time; a flush due at `T` runs once the
//! frontier has passed `T`, after the alerts stamped `T`, and its
//! notification is stamped `T`. When the input ends, the flushes still
//! due run once more without repeats (so a replay's last changes are told).
//! The process's silences are read again whenever they change.
//!
//! In a checkpointed pipeline the dispatcher's state is cut like an alert
//! unit's: alerts at or after the next cut wait (`Gate`); once the
//! frontier reaches the cut, everything before it is applied and the
//! flushes due before it run, and the state is written as one entry. A
//! restore brings it back to worker 0 before any alert is applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;

use tidemark_engine::alert::Alert;
use tidemark_engine::checkpoint::{Cut, Entry, Gate, Step, encode, restore_entries, restore_input};
use tidemark_engine::notify::Notification;
use tidemark_engine::runtime::{AlertStream, NotificationStream, frontier_min, raise};
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::Time;

use super::amconfig::Routing;
use super::dispatch::{ActiveSilence, Dispatcher};
use tidemark_engine::silence::SilenceHub;

/// Routes an alert stream into notifications.
pub trait Route<'scope> {
    /// Groups, inhibits and routes the alerts as `routing` says; the
    /// output is one notification per flush that has something to tell.
    fn route_alerts(
        self,
        name: &str,
        routing: Arc<Routing>,
        external_url: &str,
        silences: Arc<SilenceHub>,
        stats: Arc<ComponentStats>,
        checkpoint: Option<Cut>,
    ) -> NotificationStream<'scope>;
}

impl<'scope> Route<'scope> for AlertStream<'scope> {
    fn route_alerts(
        self,
        name: &str,
        routing: Arc<Routing>,
        external_url: &str,
        silences: Arc<SilenceHub>,
        stats: Arc<ComponentStats>,
        checkpoint: Option<Cut>,
    ) -> NotificationStream<'scope> {
        let external_url = external_url.to_owned();
        // The restored state (one entry) comes to worker 0 too.
        let restore = restore_input(self.scope(), name, checkpoint.as_ref());
        let index = self.scope().index();
        self.binary_frontier(
            restore,
            Exchange::new(|_: &Alert| 0u64),
            Exchange::new(|_: &Entry| 0u64),
            name,
            move |capability, _info| {
                let mut held = Some(capability);
                let mut pending: BTreeMap<Time, Vec<Alert>> = BTreeMap::new();
                let mut dispatcher = Dispatcher::new(routing, &external_url);
                let (mut inhibited, mut silenced) = (0u64, 0u64);
                let mut seen_version = None;
                let mut gate: Gate<Vec<Alert>> = Gate::new(checkpoint);
                move |(input, frontier), (restored, restored_frontier), output| {
                    restored.for_each(|_cap, data| {
                        restore_entries(data, &stats, |_key, bytes| dispatcher.restore(bytes));
                    });
                    if restored_frontier.frontier().is_empty()
                        && let Some(x) = gate.restored()
                        && let Some(cap) = held.as_mut()
                    {
                        raise(cap, x);
                    }
                    dispatcher.set_now(tidemark_engine::time::now_millis());
                    let version = silences.version();
                    if seen_version != Some(version) {
                        seen_version = Some(version);
                        let now = tidemark_engine::time::now_millis();
                        dispatcher.set_silences(
                            silences
                                .list(now)
                                .iter()
                                .filter_map(ActiveSilence::new)
                                .collect(),
                        );
                    }
                    input.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        add(&stats.received, data.len() as u64);
                        if !gate.wait(time, data) {
                            pending.entry(time).or_default().append(data);
                        }
                    });
                    let Some(cap) = held.as_mut() else {
                        pending.clear();
                        return;
                    };
                    if gate.restoring() {
                        return;
                    }
                    let f = frontier_min(frontier);
                    let mut out: Vec<Notification> = Vec::new();
                    gate.advance(f, &mut |step| match step {
                        Step::Apply(t, mut alerts) => {
                            pending.entry(t).or_default().append(&mut alerts);
                            Vec::new()
                        }
                        Step::Cut(x) => {
                            // Everything before the cut, flushes included;
                            // what is left is at or after it.
                            apply(&mut dispatcher, &mut pending, x, &mut out);
                            out.extend(dispatcher.fire(x as i64 - 1));
                            // (The other workers' parts are empty.)
                            let entries: Vec<Entry> = if index == 0 {
                                vec![(0, dispatcher.save())]
                            } else {
                                Vec::new()
                            };
                            encode(&entries)
                        }
                    });
                    apply(
                        &mut dispatcher,
                        &mut pending,
                        f.unwrap_or(Time::MAX),
                        &mut out,
                    );
                    match f {
                        Some(f) => out.extend(dispatcher.fire(f as i64 - 1)),
                        None => out.extend(dispatcher.finish()),
                    }
                    add(&stats.sent, out.len() as u64);
                    for n in out {
                        let at = cap.delayed(&(n.at.max(0) as Time).max(*cap.time()));
                        output.session(&at).give(n);
                    }
                    let counts = dispatcher.counts();
                    stats.dropped(DropReason::Inhibited, counts.inhibited - inhibited);
                    stats.dropped(DropReason::Silenced, counts.silenced - silenced);
                    (inhibited, silenced) = (counts.inhibited, counts.silenced);
                    for ((receiver, what), n) in dispatcher.take_muted() {
                        stats.notified(&receiver, what, "", n);
                    }
                    // (Input the gate holds is after the frontier.)
                    let next = [
                        f,
                        pending.keys().next().copied(),
                        dispatcher.next_due().map(|t| t.max(0) as Time),
                    ]
                    .into_iter()
                    .flatten()
                    .min();
                    match next {
                        Some(t) if f.is_some() => {
                            raise(cap, t);
                        }
                        _ => held = None,
                    }
                }
            },
        )
    }
}

/// Applies the alerts of `pending` stamped before `limit`, in time order,
/// each time's after the flushes due before it.
fn apply(
    dispatcher: &mut Dispatcher,
    pending: &mut BTreeMap<Time, Vec<Alert>>,
    limit: Time,
    out: &mut Vec<Notification>,
) {
    while let Some(entry) = pending.first_entry() {
        if *entry.key() >= limit {
            break;
        }
        let (t, alerts) = entry.remove_entry();
        let t = t as i64;
        out.extend(dispatcher.fire(t - 1));
        for alert in &alerts {
            dispatcher.insert(alert, t);
        }
    }
}
