//! Routing decisions against Alertmanager's own: for random label sets,
//! the receivers the `route` transform's tree picks equal those `amtool
//! config routes test` names for the same configuration file.

#[path = "../../testkit/src/amtool.rs"]
mod amtool;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tidemark_operators::notify::amconfig;

const CONFIG: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['service=~"db|cache"']
      receiver: db
      continue: true
      routes:
        - matchers: [severity="critical", 'team!="dba"']
          receiver: db-pager
        - match_re: {env: "prod|staging"}
          receiver: db-prod
    - match: {severity: critical}
      receiver: pager
      continue: true
    - matchers: ['team=~"web.*"', 'env!~"dev|test"']
      receiver: web
      routes:
        - matchers: ['severity=""']
          receiver: web-unrated
    - matchers: ['{alertname="Watchdog"}']
      receiver: heartbeat
receivers:
  - name: default
  - name: db
  - name: db-pager
  - name: db-prod
  - name: pager
  - name: web
  - name: web-unrated
  - name: heartbeat
"#;

#[test]
fn routing_equals_amtool_on_random_label_sets() {
    let dir = std::env::temp_dir().join(format!("tidemark-route-amtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("alertmanager.yml");
    std::fs::write(&file, CONFIG).unwrap();
    let root = tidemark_engine::yaml::parse(CONFIG).unwrap();
    let routing = amconfig::from_json(&root.to_json()).unwrap();
    let values: [(&str, &[&str]); 5] = [
        ("service", &["db", "cache", "dbx", "web"]),
        ("severity", &["critical", "warning", ""]),
        ("team", &["dba", "web", "webshop", "ops"]),
        ("env", &["prod", "staging", "dev", "test", "production"]),
        ("alertname", &["Watchdog", "Down", "Slow"]),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut distinct = std::collections::BTreeSet::new();
    for case in 0..150 {
        let labels: Vec<(String, String)> = values
            .iter()
            .filter_map(|(n, vs)| {
                let v = vs.choose(&mut rng).unwrap();
                (rng.random_bool(0.7) && !v.is_empty()).then(|| (n.to_string(), v.to_string()))
            })
            .collect();
        let map = labels.iter().cloned().collect();
        let ours: Vec<String> = routing
            .root
            .matching(&map)
            .iter()
            .map(|r| r.receiver.clone())
            .collect();
        let theirs = amtool::routes_test(&file, &labels);
        assert_eq!(ours, theirs, "case {case}: labels {labels:?}");
        distinct.insert(ours);
    }
    // The cases reached most of the tree, continue included.
    assert!(distinct.len() >= 8, "only {distinct:?}");
}

/// Time intervals are accepted and refused as Alertmanager's own check
/// (`amtool check-config`) accepts and refuses them.
#[test]
fn time_intervals_are_checked_as_amtool_checks_them() {
    let dir =
        std::env::temp_dir().join(format!("tidemark-intervals-amtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let periods = [
        "{weekdays: ['monday:friday'], times: [{start_time: '09:00', end_time: '17:00'}]}",
        "{weekdays: [saturday, sunday]}",
        "{weekdays: ['friday:monday']}",
        "{weekdays: [funday]}",
        "{weekdays: [Monday]}",
        "{times: [{start_time: '17:00', end_time: '09:00'}]}",
        "{times: [{start_time: '22:00', end_time: '24:00'}]}",
        "{times: [{start_time: '24:00', end_time: '24:00'}]}",
        "{times: [{start_time: '9:00', end_time: '10:00'}]}",
        "{times: [{start_time: '09:00', end_time: '25:00'}]}",
        "{days_of_month: ['1:5', '-3:-1', '25:-1', 7]}",
        "{days_of_month: ['0']}",
        "{days_of_month: ['32']}",
        "{days_of_month: ['-3:5']}",
        "{days_of_month: ['9:3']}",
        "{days_of_month: ['-1:-3']}",
        "{months: ['january:march', 'may', 12]}",
        "{months: ['december:january']}",
        "{years: ['2026:2030', 2031]}",
        "{years: ['2030:2026']}",
        "{location: Europe/Berlin, weekdays: [monday]}",
        "{location: Mars/Olympus}",
        "{location: Local}",
        "{days_of_month: ['-31:-29']}",
        "{days_of_month: ['30:-1']}",
        "{times: [{start_time: '00:00', end_time: '00:00'}]}",
    ];
    for (i, period) in periods.iter().enumerate() {
        let config = format!(
            "route:\n  receiver: a\n  routes:\n    - receiver: a\n      matchers: [x=\"1\"]\n      mute_time_intervals: [t]\n\
             receivers: [{{name: a}}]\ntime_intervals:\n  - name: t\n    time_intervals: [{period}]\n"
        );
        let file = dir.join(format!("am{i}.yml"));
        std::fs::write(&file, &config).unwrap();
        let ours = amconfig::from_json(&tidemark_engine::yaml::parse(&config).unwrap().to_json());
        let theirs = std::process::Command::new(amtool::amtool())
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            ours.is_ok(),
            theirs.status.success(),
            "{period}: ours {:?}, amtool {}",
            ours.err(),
            String::from_utf8_lossy(&theirs.stdout)
        );
    }
}
