//! The dispatcher under a simulated clock (event time): group_wait,
//! group_interval, repeat_interval, resolution and inhibition, each with
//! the notification times Alertmanager's own timers would give.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tidemark_engine::Series;
use tidemark_engine::alert::{Alert, AlertState};
use tidemark_engine::notify::{Notification, Status};

use super::amconfig::{self, Routing};
use super::dispatch::Dispatcher;

const S: i64 = 1000;

fn routing(yaml: &str) -> Arc<Routing> {
    let root = tidemark_engine::yaml::parse(yaml).unwrap();
    Arc::new(amconfig::from_json(&root.to_json()).unwrap())
}

fn alert(name: &str, labels: &[(&str, &str)], state: AlertState, starts: i64, at: i64) -> Alert {
    let mut all = vec![("alertname", name)];
    all.extend_from_slice(labels);
    Alert {
        labels: Series::new("", all),
        annotations: Arc::from(vec![("summary".to_owned(), format!("{name} fires"))]),
        state,
        active_at: starts,
        starts_at: starts,
        ends_at: (state == AlertState::Resolved).then_some(at),
        value: 1.0,
        at,
        generator_url: "/graph".into(),
    }
}

fn firing(name: &str, labels: &[(&str, &str)], starts: i64) -> Alert {
    alert(name, labels, AlertState::Firing, starts, starts)
}

fn resolved(name: &str, labels: &[(&str, &str)], starts: i64, at: i64) -> Alert {
    alert(name, labels, AlertState::Resolved, starts, at)
}

/// Feeds `(time, alert)` in time order and fires timers as a frontier
/// moving past each time would, up to `end`.
fn run(d: &mut Dispatcher, mut events: Vec<(i64, Alert)>, end: i64) -> Vec<Notification> {
    events.sort_by_key(|(t, _)| *t);
    let mut out = Vec::new();
    for (t, a) in events {
        out.extend(d.fire(t - 1));
        d.insert(&a, t);
    }
    out.extend(d.fire(end));
    out
}

fn summary(ns: &[Notification]) -> Vec<(i64, String, Vec<String>)> {
    ns.iter()
        .map(|n| {
            let alerts = n
                .alerts
                .iter()
                .map(|a| {
                    let s = if a.status == Status::Firing { "" } else { "-" };
                    let host = a.labels.get("host").cloned().unwrap_or_default();
                    format!("{s}{}{host}", a.labels["alertname"])
                })
                .collect();
            (n.at / S, n.receiver.clone(), alerts)
        })
        .collect()
}

const TIMERS: &str = r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
receivers: [{name: team, webhook_configs: [{url: "http://hooks"}]}]
"#;

#[test]
fn group_wait_collects_then_group_interval_paces_changes() {
    let mut d = Dispatcher::new(routing(TIMERS), "http://tidemark");
    let events = vec![
        (0, firing("Down", &[("host", "a")], 0)),
        (10 * S, firing("Down", &[("host", "b")], 10 * S)),
        // After the first flush: told at the next group_interval tick.
        (60 * S, firing("Down", &[("host", "c")], 60 * S)),
        (100 * S, resolved("Down", &[("host", "a")], 0, 100 * S)),
    ];
    let ns = run(&mut d, events, 3700 * S);
    assert_eq!(
        summary(&ns),
        vec![
            (30, "team".into(), vec!["Downa".into(), "Downb".into()]),
            (
                330,
                "team".into(),
                vec!["Downb".into(), "Downc".into(), "-Downa".into()]
            ),
            // Unchanged: repeated one repeat_interval after the last
            // notification, at the next group_interval tick.
            (
                330 + 3600 + 30 - 30,
                "team".into(),
                vec!["Downb".into(), "Downc".into()]
            ),
        ]
        .into_iter()
        .filter(|(t, _, _)| *t <= 3700)
        .collect::<Vec<_>>()
    );
    let n = &ns[0];
    assert_eq!(n.group_key, r#"{}:{alertname="Down"}"#);
    assert_eq!(n.status, Status::Firing);
    assert_eq!(n.common_labels["alertname"], "Down");
    assert!(!n.common_labels.contains_key("host"));
    assert_eq!(n.common_annotations["summary"], "Down fires");
    assert_eq!(n.external_url, "http://tidemark");
}

#[test]
fn resolution_is_told_once_and_the_group_ends() {
    let mut d = Dispatcher::new(routing(TIMERS), "");
    let events = vec![
        (0, firing("Down", &[("host", "a")], 0)),
        (40 * S, resolved("Down", &[("host", "a")], 0, 40 * S)),
    ];
    let ns = run(&mut d, events, 10_000 * S);
    assert_eq!(
        summary(&ns),
        vec![
            (30, "team".into(), vec!["Downa".into()]),
            (330, "team".into(), vec!["-Downa".into()]),
        ]
    );
    assert_eq!(ns[1].status, Status::Resolved);
    assert_eq!(ns[1].alerts[0].ends_at, Some(40 * S));
    assert_eq!(d.groups(), 0);
    assert_eq!(d.next_due(), None);
}

#[test]
fn a_receiver_without_resolutions_hears_only_of_firing_changes() {
    let quiet = TIMERS.replace(
        r#"webhook_configs: [{url: "http://hooks"}]"#,
        r#"slack_configs: [{api_url: "http://slack"}]"#,
    );
    let events = vec![
        (0, firing("Down", &[("host", "a")], 0)),
        (0, firing("Down", &[("host", "b")], 0)),
        (100 * S, resolved("Down", &[("host", "a")], 0, 100 * S)),
    ];
    let mut d = Dispatcher::new(routing(&quiet), "");
    let ns = run(&mut d, events.clone(), 1000 * S);
    assert_eq!(
        summary(&ns),
        vec![(30, "team".into(), vec!["Downa".into(), "Downb".into()])]
    );
    let mut d = Dispatcher::new(routing(TIMERS), "");
    let ns = run(&mut d, events, 1000 * S);
    assert_eq!(ns.len(), 2, "a webhook is told of the resolution");
}

#[test]
fn fired_and_resolved_between_flushes_is_not_told() {
    let mut d = Dispatcher::new(routing(TIMERS), "");
    let events = vec![
        (0, firing("Blip", &[], 0)),
        (10 * S, resolved("Blip", &[], 0, 10 * S)),
    ];
    assert!(run(&mut d, events, 1000 * S).is_empty());
    assert_eq!(d.groups(), 0);
}

#[test]
fn an_alert_firing_longer_than_group_wait_is_not_held_back() {
    let mut d = Dispatcher::new(routing(TIMERS), "");
    // A restart: the alert stream says it fires since long ago.
    let ns = run(
        &mut d,
        vec![(500 * S, alert("Down", &[], AlertState::Firing, 0, 500 * S))],
        600 * S,
    );
    assert_eq!(summary(&ns)[0].0, 500);
}

#[test]
fn pending_alerts_are_not_notified() {
    let mut d = Dispatcher::new(routing(TIMERS), "");
    let ns = run(
        &mut d,
        vec![(0, alert("Down", &[], AlertState::Pending, 0, 0))],
        600 * S,
    );
    assert!(ns.is_empty());
}

const INHIBIT: &str = r#"
route:
  receiver: team
  group_by: ['...']
  group_wait: 10s
  group_interval: 1m
  routes:
    - matchers: [severity="critical"]
      receiver: pager
receivers: [{name: team}, {name: pager}]
inhibit_rules:
  - source_matchers: [alertname="ClusterDown"]
    target_matchers: [severity="warning"]
    equal: [cluster]
"#;

/// The same alerts in any arrival order within a time give the same
/// notifications: inhibition is decided at the flush's event time.
#[test]
fn inhibition_does_not_depend_on_arrival_order() {
    let events = vec![
        (
            0,
            firing(
                "ClusterDown",
                &[("cluster", "a"), ("severity", "critical")],
                0,
            ),
        ),
        (
            0,
            firing("Slow", &[("cluster", "a"), ("severity", "warning")], 0),
        ),
        (
            0,
            firing("Slow", &[("cluster", "b"), ("severity", "warning")], 0),
        ),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut seen = None;
    for _ in 0..20 {
        let mut shuffled = events.clone();
        shuffled.shuffle(&mut rng);
        let mut d = Dispatcher::new(routing(INHIBIT), "");
        let mut out = Vec::new();
        for (t, a) in &shuffled {
            d.insert(a, *t);
        }
        out.extend(d.fire(50 * S));
        let mut got = summary(&out);
        got.sort();
        assert_eq!(d.counts().inhibited, 1);
        match &seen {
            None => seen = Some(got),
            Some(first) => assert_eq!(&got, first),
        }
    }
    let got = seen.unwrap();
    assert_eq!(
        got,
        vec![
            (10, "pager".into(), vec!["ClusterDown".into()]),
            (10, "team".into(), vec!["Slow".into()]),
        ]
    );
}

#[test]
fn an_inhibited_alert_is_told_once_its_source_resolves() {
    let mut d = Dispatcher::new(routing(INHIBIT), "");
    let cd = &[("cluster", "a"), ("severity", "critical")];
    let slow = &[("cluster", "a"), ("severity", "warning")];
    let events = vec![
        (0, firing("ClusterDown", cd, 0)),
        (0, firing("Slow", slow, 0)),
        (100 * S, resolved("ClusterDown", cd, 0, 100 * S)),
    ];
    let ns = run(&mut d, events, 200 * S);
    let got = summary(&ns);
    assert!(got.contains(&(10, "pager".into(), vec!["ClusterDown".into()])));
    assert!(got.contains(&(130, "pager".into(), vec!["-ClusterDown".into()])));
    // Muted until ClusterDown resolved at 100 s; its group's next tick is
    // 10 + 2 * 60 = 130 s.
    assert!(
        got.contains(&(130, "team".into(), vec!["Slow".into()])),
        "{got:?}"
    );
}

/// Random alert histories: each notification is a fair account (the
/// alerts it calls firing fire at its time), no two notifications of a
/// group are closer than group_interval, and every alert that fired for
/// longer than group_wait + group_interval was told.
#[test]
fn random_histories_keep_alertmanagers_promises() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..50 {
        let mut d = Dispatcher::new(routing(TIMERS), "");
        let mut events = Vec::new();
        let mut spans = Vec::new();
        for i in 0..rng.random_range(1..8) {
            let host = format!("{i}");
            let start = rng.random_range(0..2000) * S;
            let len = rng.random_range(1..1500) * S;
            spans.push((host.clone(), start, start + len));
            let labels = vec![("host", host.as_str())];
            events.push((start, firing("Down", &labels, start)));
            events.push((start + len, resolved("Down", &labels, start, start + len)));
        }
        let ns = run(&mut d, events, 100_000 * S);
        // A group lives until all its alerts are resolved and told; a
        // new one may start right after.
        let mut last: Option<i64> = None;
        for n in &ns {
            if let Some(l) = last {
                assert!(n.at - l >= 300 * S, "round {round}: {l} then {}", n.at);
            }
            last = (n.status == Status::Firing).then_some(n.at);
            for a in &n.alerts {
                let (_, start, end) = spans
                    .iter()
                    .find(|(h, _, _)| a.labels["host"] == *h)
                    .unwrap();
                match a.status {
                    Status::Firing => assert!(*start <= n.at && n.at < *end),
                    Status::Resolved => assert!(*end <= n.at),
                }
            }
        }
        for (host, start, end) in &spans {
            if end - start >= 330 * S {
                assert!(
                    ns.iter()
                        .any(|n| n.alerts.iter().any(|a| a.labels["host"] == *host)),
                    "round {round}: {host} fired {start}..{end} and was never told"
                );
            }
        }
        assert_eq!(d.groups(), 0, "round {round}: a group outlived its alerts");
    }
}

#[test]
fn a_silence_mutes_matching_alerts_while_it_lasts_in_event_time() {
    use super::dispatch::ActiveSilence;
    use tidemark_engine::silence::{Silence, SilenceMatcher};
    let mut d = Dispatcher::new(routing(TIMERS), "");
    let silence = Silence {
        id: "s".into(),
        matchers: vec![SilenceMatcher {
            name: "host".into(),
            value: "a|c".into(),
            is_regex: true,
            is_equal: true,
        }],
        starts_at: 0,
        ends_at: 100 * S,
        created_by: "me".into(),
        comment: "maintenance".into(),
        updated_at: 0,
    };
    d.set_silences(vec![ActiveSilence::new(&silence).unwrap()]);
    let events = vec![
        (0, firing("Down", &[("host", "a")], 0)),
        (0, firing("Down", &[("host", "b")], 0)),
    ];
    let ns = run(&mut d, events, 400 * S);
    assert_eq!(
        summary(&ns),
        vec![
            (30, "team".into(), vec!["Downb".into()]),
            // The silence ended at 100 s: a is news at the next tick.
            (330, "team".into(), vec!["Downa".into(), "Downb".into()]),
        ]
    );
    assert_eq!(d.counts().silenced, 1);
    let muted = d.take_muted();
    assert_eq!(muted.get(&("team".to_owned(), "silenced")), Some(&1));
    assert!(d.take_muted().is_empty());
}

/// As [`run`], with the dispatcher saved at `cut` (after the flushes due
/// before it, as the operator does) and restored into a new one.
fn run_across_a_restore(
    routing: &Arc<Routing>,
    mut events: Vec<(i64, Alert)>,
    cut: i64,
    end: i64,
) -> Vec<Notification> {
    events.sort_by_key(|(t, _)| *t);
    let split = events.partition_point(|(t, _)| *t < cut);
    let later = events.split_off(split);
    let mut d = Dispatcher::new(Arc::clone(routing), "");
    let mut out = run(&mut d, events, cut - 1);
    let saved = d.save();
    let mut d = Dispatcher::new(Arc::clone(routing), "");
    d.restore(&saved).unwrap();
    out.extend(run(&mut d, later, end));
    out
}

/// A dispatcher saved and restored at any point of random histories
/// (groups waiting, told, repeating, resolving; inhibition in force) tells
/// exactly what one that ran through tells, at the same times.
#[test]
fn a_restored_dispatcher_tells_what_one_that_ran_through_tells() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for (routing, names) in [
        (routing(TIMERS), ["Down", "Down"]),
        (routing(INHIBIT), ["ClusterDown", "Slow"]),
    ] {
        for round in 0..40 {
            let mut events = Vec::new();
            for i in 0..rng.random_range(1..8) {
                let host = format!("{i}");
                let severity = if i % 2 == 0 { "critical" } else { "warning" };
                let labels = [
                    ("host", host.as_str()),
                    ("cluster", "a"),
                    ("severity", severity),
                ];
                let name = names[i % 2];
                let start = rng.random_range(0..2000) * S;
                let end = start + rng.random_range(1..1500) * S;
                events.push((start, firing(name, &labels, start)));
                events.push((end, resolved(name, &labels, start, end)));
            }
            let through = run(
                &mut Dispatcher::new(Arc::clone(&routing), ""),
                events.clone(),
                5000 * S,
            );
            assert!(!through.is_empty());
            let cut = rng.random_range(1..3500) * S;
            let restored = run_across_a_restore(&routing, events, cut, 5000 * S);
            let json = |ns: &[Notification]| serde_json::to_string(ns).unwrap();
            assert_eq!(
                json(&restored),
                json(&through),
                "round {round}, cut at {cut}"
            );
        }
    }
    let mut d = Dispatcher::new(routing(TIMERS), "");
    assert!(d.restore(b"\xff\xff").is_err(), "garbage is refused");
    let inhibiting = Dispatcher::new(routing(INHIBIT), "").save();
    assert!(
        Dispatcher::new(routing(TIMERS), "")
            .restore(&inhibiting)
            .is_ok(),
        "no group: nothing to refuse"
    );
}

/// Routes muted by a time interval tell nobody inside it and what is new
/// at their first flush outside it; a route with active intervals only
/// inside them; the root and other routes are not affected.
#[test]
fn time_intervals_mute_and_activate_routes_at_the_flushs_event_time() {
    // 2026-12-05 is a Saturday; times in UTC.
    let day = |h: i64, m: i64| {
        chrono::DateTime::parse_from_rfc3339("2026-12-05T00:00:00Z")
            .unwrap()
            .timestamp_millis()
            + (h * 60 + m) * 60 * S
    };
    let r = routing(
        r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 12h
  routes:
    - matchers: [severity="page"]
      receiver: oncall
      repeat_interval: 1h
      mute_time_intervals: [night]
    - matchers: [severity="ticket"]
      receiver: office
      active_time_intervals: [hours]
receivers: [{name: team}, {name: oncall}, {name: office}]
time_intervals:
  - name: night
    time_intervals: [{times: [{start_time: "22:00", end_time: "24:00"}]}]
mute_time_intervals:
  - name: hours
    time_intervals: [{times: [{start_time: "08:00", end_time: "18:00"}]}]
"#,
    );
    let mut d = Dispatcher::new(r, "http://tidemark");
    let events = vec![
        // Paged at 21:50 (before the night), then again at 22:50 (the
        // repeat falls in the night: muted) and at 00:00 (the next day).
        (
            day(21, 50),
            firing("Down", &[("severity", "page")], day(21, 50)),
        ),
        // A ticket at 06:00: told at 08:00, the first flush in hours.
        (
            day(6, 0),
            firing("Disk", &[("severity", "ticket")], day(6, 0)),
        ),
        // The root route's group is never muted.
        (day(23, 0), firing("Other", &[], day(23, 0))),
    ];
    let got = summary(&run(&mut d, events, day(24, 10)));
    let at = |h, m, receiver: &str, alert: &str| {
        (
            (day(h, m) + 30 * S) / S,
            receiver.to_owned(),
            vec![alert.to_owned()],
        )
    };
    assert_eq!(
        got,
        vec![
            // Flushes every 5 minutes from 06:00:30; the first in hours.
            at(8, 0, "office", "Disk"),
            at(21, 50, "oncall", "Down"),
            at(23, 0, "team", "Other"),
            // The repeat was due at 22:50:30, in the night.
            at(24, 0, "oncall", "Down"),
        ]
    );
    assert!(d.counts().time_muted > 0);
}
