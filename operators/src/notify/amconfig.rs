//! The parts of an Alertmanager configuration file (`alertmanager.yml`)
//! that decide where alerts go and when: the `route` tree and
//! `inhibit_rules`, checked as Alertmanager checks them (every receiver a
//! route names must exist, the root route has no matchers, `...` stands
//! alone in `group_by`). `receivers` are read for their names here; their
//! integrations are the `notify` sink's. Time intervals
//! ([`super::interval`]) are checked here, and every name a route uses
//! must be defined.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use tidemark_engine::component::ConfigError;

use super::interval::{NamedConfig, Period};
use super::matcher::{self, Matcher, Op};
use crate::alert::rules::{deserialize, duration_ms};

/// The top level of `alertmanager.yml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Defaults for receivers (the `notify` sink reads them).
    #[serde(default)]
    pub global: Option<serde_json::Value>,
    /// The routing tree.
    pub route: RouteNodeConfig,
    /// Rules that mute alerts while others fire.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// The receivers (their integrations are the `notify` sink's).
    #[serde(default)]
    pub receivers: Vec<ReceiverName>,
    /// Template files (the `notify` sink reads them).
    #[serde(default)]
    pub templates: Vec<String>,
    /// Named time intervals that routes mute or activate by.
    #[serde(default)]
    pub time_intervals: Vec<NamedConfig>,
    /// The same, under its deprecated name.
    #[serde(default)]
    pub mute_time_intervals: Vec<NamedConfig>,
}

/// A receiver's name; the rest of its entry is for the `notify` sink.
#[derive(Clone, Debug, Deserialize)]
pub struct ReceiverName {
    /// Unique in the file.
    pub name: String,
    /// Its integrations (`webhook_configs`, `slack_configs`, ...).
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// A node of the routing tree, as Alertmanager writes it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteNodeConfig {
    /// Where its alerts go (inherited when absent).
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels that form groups; `['...']` groups by every label.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// Keep matching siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Deprecated equality matchers (`{label: value}`).
    #[serde(default, rename = "match")]
    pub match_: BTreeMap<String, String>,
    /// Deprecated regular-expression matchers.
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    /// Matchers (`'severity=~"critical|page"'`).
    #[serde(default)]
    pub matchers: Vec<String>,
    /// How long a new group waits for more alerts before its first
    /// notification (default 30s).
    #[serde(default)]
    pub group_wait: Option<String>,
    /// How long between notifications about a group that changed
    /// (default 5m).
    #[serde(default)]
    pub group_interval: Option<String>,
    /// How long before a notification about an unchanged group is sent
    /// again (default 4h).
    #[serde(default)]
    pub repeat_interval: Option<String>,
    /// Time intervals in which this route notifies nobody (not
    /// inherited, as in Alertmanager).
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
    /// Time intervals outside which this route notifies nobody (not
    /// inherited).
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    /// Child routes, tried in order.
    #[serde(default)]
    pub routes: Vec<RouteNodeConfig>,
}

/// An inhibition rule.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Deprecated: the muting alert's labels.
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    /// Deprecated: the muting alert's labels, as regular expressions.
    #[serde(default)]
    pub source_match_re: BTreeMap<String, String>,
    /// What a muting (source) alert matches.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// Deprecated: the muted alert's labels.
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    /// Deprecated: the muted alert's labels, as regular expressions.
    #[serde(default)]
    pub target_match_re: BTreeMap<String, String>,
    /// What a muted (target) alert matches.
    #[serde(default)]
    pub target_matchers: Vec<String>,
    /// Labels whose values must be equal in both.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Which labels form groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// Every label (`...`): one group per alert.
    All,
    /// These labels (possibly none: one group for the route).
    Labels(Vec<String>),
}

/// A validated route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Position in a pre-order walk of the tree (0 is the root).
    pub index: usize,
    /// Alertmanager's key of the route (`{}/{severity="page"}`), the
    /// first half of its groups' keys.
    pub key: String,
    /// Its receiver (inherited).
    pub receiver: String,
    /// Its matchers, sorted.
    pub matchers: Vec<Matcher>,
    /// What forms its groups (inherited).
    pub group_by: GroupBy,
    /// Milliseconds (inherited).
    pub group_wait: i64,
    /// Milliseconds (inherited).
    pub group_interval: i64,
    /// Milliseconds (inherited).
    pub repeat_interval: i64,
    /// Whether siblings are tried after it matched.
    pub continue_: bool,
    /// Names of the time intervals it is muted in.
    pub mute: Vec<String>,
    /// Names of the time intervals it is active in (none: always).
    pub active: Vec<String>,
    /// Its children.
    pub routes: Vec<Route>,
}

/// A validated inhibition rule.
#[derive(Clone, Debug)]
pub struct InhibitRule {
    /// What a muting alert matches.
    pub source: Vec<Matcher>,
    /// What a muted alert matches.
    pub target: Vec<Matcher>,
    /// Labels whose values must be equal.
    pub equal: Vec<String>,
}

/// What routing needs of a configuration file.
#[derive(Clone, Debug)]
pub struct Routing {
    /// The root of the tree.
    pub root: Route,
    /// The inhibition rules.
    pub inhibit: Vec<InhibitRule>,
    /// Every receiver's name.
    pub receivers: Vec<String>,
    /// Receivers told of resolutions by some integration (see
    /// [`sends_resolved`]).
    pub send_resolved: HashSet<String>,
    /// Named time intervals.
    pub intervals: HashMap<String, Vec<Period>>,
}

impl Routing {
    /// Whether `route` notifies nobody at `at` (ms): it is in one of the
    /// route's mute intervals, or the route has active intervals and is in
    /// none of them (Alertmanager's time mute and time active stages).
    pub fn time_muted(&self, route: &Route, at: i64) -> bool {
        let holds = |name: &String| {
            self.intervals
                .get(name)
                .is_some_and(|periods| periods.iter().any(|p| p.contains(at)))
        };
        route.mute.iter().any(holds)
            || (!route.active.is_empty() && !route.active.iter().any(holds))
    }
}

/// Alertmanager's defaults.
pub const DEFAULT_GROUP_WAIT: i64 = 30_000;
/// Alertmanager's defaults.
pub const DEFAULT_GROUP_INTERVAL: i64 = 300_000;
/// Alertmanager's defaults.
pub const DEFAULT_REPEAT_INTERVAL: i64 = 4 * 3_600_000;

/// Checks a configuration given as JSON; errors carry the path of their
/// field.
pub fn from_json(json: &serde_json::Value) -> Result<Routing, Vec<ConfigError>> {
    let file: FileConfig = deserialize(json)?;
    let mut errors = Vec::new();
    let mut intervals = HashMap::new();
    for (field, list) in [
        ("time_intervals", &file.time_intervals),
        ("mute_time_intervals", &file.mute_time_intervals),
    ] {
        for (i, (name, periods)) in super::interval::check(list, field, &mut errors)
            .into_iter()
            .enumerate()
        {
            if intervals.insert(name.clone(), periods).is_some() {
                errors.push(at(
                    &[field, &i.to_string(), "name"],
                    format!("time interval {name:?} is defined twice"),
                ));
            }
        }
    }
    let mut names = HashSet::new();
    for (i, r) in file.receivers.iter().enumerate() {
        if r.name.is_empty() || !names.insert(r.name.clone()) {
            errors.push(at(
                &["receivers", &i.to_string(), "name"],
                format!("receiver name {:?} is empty or repeated", r.name),
            ));
        }
    }
    let root_path = vec!["route".to_owned()];
    if file.route.receiver.is_none() {
        errors.push(at(&["route"], "the root route must name a receiver"));
    }
    if !file.route.matchers.is_empty()
        || !file.route.match_.is_empty()
        || !file.route.match_re.is_empty()
    {
        errors.push(at(&["route"], "the root route must not have any matchers"));
    }
    if file.route.continue_ {
        errors.push(at(&["route", "continue"], "the root route cannot continue"));
    }
    if !file.route.mute_time_intervals.is_empty() {
        errors.push(at(
            &["route", "mute_time_intervals"],
            "the root route must not have any mute time intervals",
        ));
    }
    if !file.route.active_time_intervals.is_empty() {
        errors.push(at(
            &["route", "active_time_intervals"],
            "the root route must not have any active time intervals",
        ));
    }
    let defaults = Inherited {
        key: None,
        receiver: String::new(),
        group_by: GroupBy::Labels(Vec::new()),
        group_wait: DEFAULT_GROUP_WAIT,
        group_interval: DEFAULT_GROUP_INTERVAL,
        repeat_interval: DEFAULT_REPEAT_INTERVAL,
    };
    let mut next = 0;
    let known = Known {
        receivers: &names,
        intervals: &intervals.keys().cloned().collect(),
    };
    let root = route(
        &file.route,
        &defaults,
        &root_path,
        &known,
        &mut next,
        &mut errors,
    );
    let inhibit = file
        .inhibit_rules
        .iter()
        .enumerate()
        .map(|(i, rule)| inhibit_rule(rule, &["inhibit_rules".into(), i.to_string()], &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Routing {
        root,
        inhibit,
        send_resolved: file
            .receivers
            .iter()
            .filter(|r| sends_resolved(&r.rest))
            .map(|r| r.name.clone())
            .collect(),
        receivers: file.receivers.into_iter().map(|r| r.name).collect(),
        intervals,
    })
}

/// The names a route may use.
struct Known<'a> {
    receivers: &'a HashSet<String>,
    intervals: &'a HashSet<String>,
}

/// Whether a receiver is told of resolutions by any of its integrations
/// (Alertmanager's defaults: webhook, PagerDuty and most others yes;
/// Slack, email and WeChat no). Such a receiver is notified when an alert
/// of a group resolves; one that is not, only when the firing alerts
/// change (or all resolve) or `repeat_interval` has passed.
pub fn sends_resolved(integrations: &BTreeMap<String, serde_json::Value>) -> bool {
    integrations.iter().any(|(kind, list)| {
        let default = !matches!(
            kind.as_str(),
            "slack_configs" | "email_configs" | "wechat_configs"
        );
        kind.ends_with("_configs")
            && list.as_array().is_some_and(|l| {
                l.iter().any(|c| {
                    c.get("send_resolved")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(default)
                })
            })
    })
}

fn at(path: &[&str], message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: path.iter().map(|s| s.to_string()).collect(),
        message: message.into(),
    }
}

/// What a route takes from its parent.
struct Inherited {
    key: Option<String>,
    receiver: String,
    group_by: GroupBy,
    group_wait: i64,
    group_interval: i64,
    repeat_interval: i64,
}

fn route(
    config: &RouteNodeConfig,
    parent: &Inherited,
    path: &[String],
    known: &Known<'_>,
    next: &mut usize,
    errors: &mut Vec<ConfigError>,
) -> Route {
    let field = |name: &str| {
        let mut p = path.to_vec();
        p.push(name.to_owned());
        p
    };
    let index = *next;
    *next += 1;
    let mut duration = |name: &str, value: &Option<String>, inherited: i64| match value {
        None => inherited,
        Some(text) => match duration_ms(text) {
            Ok(ms) if ms > 0 || name == "group_wait" => ms,
            Ok(_) => {
                errors.push(ConfigError {
                    field: field(name),
                    message: format!("{name} must be greater than 0"),
                });
                inherited
            }
            Err(e) => {
                errors.push(ConfigError {
                    field: field(name),
                    message: e,
                });
                inherited
            }
        },
    };
    let group_wait = duration("group_wait", &config.group_wait, parent.group_wait);
    let group_interval = duration(
        "group_interval",
        &config.group_interval,
        parent.group_interval,
    );
    let repeat_interval = duration(
        "repeat_interval",
        &config.repeat_interval,
        parent.repeat_interval,
    );
    for (name, list) in [
        ("mute_time_intervals", &config.mute_time_intervals),
        ("active_time_intervals", &config.active_time_intervals),
    ] {
        for (i, interval) in list.iter().enumerate() {
            if !known.intervals.contains(interval) {
                let mut f = field(name);
                f.push(i.to_string());
                errors.push(ConfigError {
                    field: f,
                    message: format!("undefined time interval {interval:?} used in route"),
                });
            }
        }
    }
    let receiver = config
        .receiver
        .clone()
        .unwrap_or_else(|| parent.receiver.clone());
    if let Some(name) = &config.receiver
        && !known.receivers.contains(name)
    {
        errors.push(ConfigError {
            field: field("receiver"),
            message: format!("undefined receiver {name:?} used in route"),
        });
    }
    let group_by = match &config.group_by {
        None => parent.group_by.clone(),
        Some(list) => group_by(list, &field("group_by"), errors),
    };
    let mut matchers = route_matchers(config, path, errors);
    matcher::sort(&mut matchers);
    let key = match &parent.key {
        None => matcher::list_string(&matchers),
        Some(parent) => format!("{parent}/{}", matcher::list_string(&matchers)),
    };
    let inherited = Inherited {
        key: Some(key.clone()),
        receiver: receiver.clone(),
        group_by: group_by.clone(),
        group_wait,
        group_interval,
        repeat_interval,
    };
    let routes = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, child)| {
            let mut p = field("routes");
            p.push(i.to_string());
            route(child, &inherited, &p, known, next, errors)
        })
        .collect();
    Route {
        index,
        key,
        receiver,
        matchers,
        group_by,
        group_wait,
        group_interval,
        repeat_interval,
        continue_: config.continue_,
        mute: config.mute_time_intervals.clone(),
        active: config.active_time_intervals.clone(),
        routes,
    }
}

fn group_by(list: &[String], path: &[String], errors: &mut Vec<ConfigError>) -> GroupBy {
    let error = |message: String| ConfigError {
        field: path.to_vec(),
        message,
    };
    if list.iter().any(|l| l == "...") {
        if list.len() > 1 {
            errors.push(error(
                "cannot have wildcard group_by (`...`) and other labels at the same time".into(),
            ));
        }
        return GroupBy::All;
    }
    let mut seen = HashSet::new();
    for l in list {
        if !seen.insert(l) {
            errors.push(error(format!("duplicated label {l:?} in group_by")));
        } else if Matcher::new(l, Op::Equal, "").is_err() {
            errors.push(error(format!("invalid label name {l:?} in group_by")));
        }
    }
    GroupBy::Labels(list.to_vec())
}

/// A route's `match`, `match_re` and `matchers`, as one list.
fn route_matchers(
    config: &RouteNodeConfig,
    path: &[String],
    errors: &mut Vec<ConfigError>,
) -> Vec<Matcher> {
    matchers_of(
        path,
        [
            ("match", &config.match_, Op::Equal),
            ("match_re", &config.match_re, Op::Regex),
        ],
        ("matchers", &config.matchers),
        errors,
    )
}

/// Old-style maps and new-style lists of matchers, checked, as one list.
fn matchers_of(
    path: &[String],
    maps: [(&str, &BTreeMap<String, String>, Op); 2],
    list: (&str, &[String]),
    errors: &mut Vec<ConfigError>,
) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut push = |field: String, result: Result<Vec<Matcher>, String>| match result {
        Ok(ms) => out.extend(ms),
        Err(message) => {
            let mut p = path.to_vec();
            p.push(field);
            errors.push(ConfigError { field: p, message });
        }
    };
    for (field, map, op) in maps {
        for (name, value) in map {
            push(
                field.to_owned(),
                Matcher::new(name, op, value).map(|m| vec![m]),
            );
        }
    }
    let (field, entries) = list;
    for (i, text) in entries.iter().enumerate() {
        push(format!("{field}.{i}"), matcher::parse(text));
    }
    out
}

fn inhibit_rule(
    config: &InhibitRuleConfig,
    path: &[String],
    errors: &mut Vec<ConfigError>,
) -> InhibitRule {
    let source = matchers_of(
        path,
        [
            ("source_match", &config.source_match, Op::Equal),
            ("source_match_re", &config.source_match_re, Op::Regex),
        ],
        ("source_matchers", &config.source_matchers),
        errors,
    );
    let target = matchers_of(
        path,
        [
            ("target_match", &config.target_match, Op::Equal),
            ("target_match_re", &config.target_match_re, Op::Regex),
        ],
        ("target_matchers", &config.target_matchers),
        errors,
    );
    InhibitRule {
        source,
        target,
        equal: config.equal.clone(),
    }
}

impl Route {
    /// The routes an alert with `labels` goes to, as Alertmanager decides
    /// (`amtool config routes test`): the deepest matching routes, the
    /// first matching child of each node and, past a child with
    /// `continue`, its matching siblings.
    pub fn matching<'a>(&'a self, labels: &tidemark_engine::notify::LabelMap) -> Vec<&'a Route> {
        if !matcher::all_match(&self.matchers, labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let found = child.matching(labels);
            let matched = !found.is_empty();
            all.extend(found);
            if matched && !child.continue_ {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// The group labels of an alert on this route.
    pub fn group_labels(
        &self,
        labels: &tidemark_engine::notify::LabelMap,
    ) -> tidemark_engine::notify::LabelMap {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }

    /// Every route of the tree, in pre-order.
    pub fn walk(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for child in &self.routes {
            out.extend(child.walk());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::notify::labels;

    fn parse(yaml: &str) -> Result<Routing, Vec<ConfigError>> {
        let root = tidemark_engine::yaml::parse(yaml).unwrap();
        from_json(&root.to_json())
    }

    const FILE: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['service=~"db|cache"']
      receiver: db
      continue: true
      routes:
        - match: {severity: critical}
          receiver: dba-pager
          group_by: ['...']
    - match: {severity: critical}
      receiver: pager
      repeat_interval: 1h
receivers:
  - name: default
  - name: db
  - name: dba-pager
  - name: pager
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [cluster]
"#;

    #[test]
    fn routes_inherit_and_continue() {
        let r = parse(FILE).unwrap();
        let names = |l: &[(&str, &str)]| -> Vec<String> {
            r.root
                .matching(&labels(l))
                .iter()
                .map(|r| r.receiver.clone())
                .collect()
        };
        assert_eq!(names(&[("service", "db")]), ["db"]);
        assert_eq!(
            names(&[("service", "db"), ("severity", "critical")]),
            ["dba-pager", "pager"]
        );
        assert_eq!(names(&[("service", "web")]), ["default"]);
        let pager = &r.root.routes[1];
        assert_eq!(pager.group_wait, 10_000);
        assert_eq!(pager.repeat_interval, 3_600_000);
        assert_eq!(pager.group_interval, DEFAULT_GROUP_INTERVAL);
        assert_eq!(pager.group_by, GroupBy::Labels(vec!["alertname".into()]));
        assert_eq!(pager.key, r#"{}/{severity="critical"}"#);
        assert_eq!(
            r.root.routes[0].routes[0].key,
            r#"{}/{service=~"db|cache"}/{severity="critical"}"#
        );
        assert_eq!(r.root.walk().len(), 4);
        assert_eq!(r.inhibit[0].equal, ["cluster"]);
    }

    #[test]
    fn refuses_what_alertmanager_refuses() {
        let errors = |yaml: &str| -> Vec<String> {
            parse(yaml)
                .unwrap_err()
                .into_iter()
                .map(|e| format!("{}: {}", e.field.join("."), e.message))
                .collect()
        };
        let e = errors("route: {receiver: nobody}\nreceivers: [{name: a}]\n");
        assert!(e[0].contains("undefined receiver \"nobody\""), "{e:?}");
        let e = errors(
            "route: {receiver: a, routes: [{matchers: ['x=~(']}]}\nreceivers: [{name: a}]\n",
        );
        assert!(e[0].starts_with("route.routes.0.matchers.0:"), "{e:?}");
        let e = errors("route: {receiver: a, group_by: ['...', x]}\nreceivers: [{name: a}]\n");
        assert!(e[0].contains("wildcard"), "{e:?}");
        let e = errors("route: {receiver: a, match: {x: y}}\nreceivers: [{name: a}]\n");
        assert!(
            e[0].contains("root route must not have any matchers"),
            "{e:?}"
        );
        let e = errors("route: {receiver: a, wait: 1s}\nreceivers: [{name: a}]\n");
        assert!(e[0].contains("unknown field"), "{e:?}");
        let e = errors(
            "route: {receiver: a, routes: [{mute_time_intervals: [x]}]}\nreceivers: [{name: a}]\n",
        );
        assert!(
            e[0].starts_with("route.routes.0.mute_time_intervals.0:")
                && e[0].contains("undefined time interval \"x\""),
            "{e:?}"
        );
        let e = errors(
            "route: {receiver: a, active_time_intervals: [x]}\nreceivers: [{name: a}]\n\
             time_intervals: [{name: x, time_intervals: [{weekdays: [saturday]}]}]\n\
             mute_time_intervals: [{name: x}]\n",
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("defined twice"), "{e:?}");
        assert!(
            e[1].contains("root route must not have any active"),
            "{e:?}"
        );
    }
}
