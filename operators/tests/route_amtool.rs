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
