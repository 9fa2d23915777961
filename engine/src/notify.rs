//! Notifications: the records of a `route` transform's output, one per
//! flush of an alert group to a receiver, and what notifier sinks deliver.
//!
//! A [`Notification`] serialises as Alertmanager's webhook payload
//! (version 4: `receiver`, `status`, `alerts`, `groupLabels`,
//! `commonLabels`, `commonAnnotations`, `externalURL`, `groupKey`,
//! `truncatedAlerts`), plus `at`, the event time of the flush, so that a
//! receiver written for Alertmanager's webhooks reads it unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::series::Series;
use crate::time::{format_millis, parse_rfc3339};

/// Labels or annotations, sorted by name.
pub type LabelMap = BTreeMap<String, String>;

/// Whether a notification (or an alert in it) is firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At least one alert of the group fires.
    Firing,
    /// Every alert of the group is resolved.
    Resolved,
}

/// One flush of an alert group to a receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Alertmanager's webhook payload version, `"4"`.
    pub version: String,
    /// `<route key>:<group labels>`, as Alertmanager writes it; stable for
    /// the life of the group (PagerDuty's `dedup_key` is derived from it).
    pub group_key: String,
    /// Alerts left out of `alerts` by a receiver's `max_alerts`.
    pub truncated_alerts: u64,
    /// `firing` if any alert fires.
    pub status: Status,
    /// The receiver's name in the routing configuration.
    pub receiver: String,
    /// The labels the group is formed by.
    pub group_labels: LabelMap,
    /// Labels every alert of the notification has, with equal values.
    pub common_labels: LabelMap,
    /// Annotations every alert has, with equal values.
    pub common_annotations: LabelMap,
    /// The base of links back (the dashboard).
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts, firing first, each group ordered by labels.
    pub alerts: Vec<NotifiedAlert>,
    /// The event time of the flush (ms): the notification's identity
    /// together with `receiver` and `group_key`.
    pub at: i64,
}

/// An alert as a notification carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedAlert {
    /// `firing` or `resolved`.
    pub status: Status,
    /// Its labels (`alertname` among them).
    pub labels: LabelMap,
    /// Its annotations.
    pub annotations: LabelMap,
    /// When it started firing (ms; RFC 3339 on the wire).
    #[serde(with = "rfc3339")]
    pub starts_at: i64,
    /// When it was resolved (ms); `0001-01-01T00:00:00Z` on the wire while
    /// it fires, as Alertmanager writes it.
    #[serde(with = "rfc3339_opt")]
    pub ends_at: Option<i64>,
    /// Where the rule is described.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// Prometheus's fingerprint of its labels, 16 hex digits.
    pub fingerprint: String,
}

impl Notification {
    /// `firing` alerts, then `resolved` ones.
    pub fn counts(&self) -> (usize, usize) {
        let firing = self
            .alerts
            .iter()
            .filter(|a| a.status == Status::Firing)
            .count();
        (firing, self.alerts.len() - firing)
    }
}

/// A label map from name and value pairs.
pub fn labels(pairs: &[(&str, &str)]) -> LabelMap {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// The labels of a series as a map, without `__name__`.
pub fn label_map(series: &Series) -> LabelMap {
    series
        .tags()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// Prometheus's fingerprint of a label set (`model.LabelSet.Fingerprint`):
/// FNV-1a over the labels sorted by name, each name and value followed by
/// a `0xff` byte. Alertmanager identifies alerts by it.
pub fn fingerprint(labels: &LabelMap) -> u64 {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    hash
}

/// Go's `model.LabelSet.String()`: `{a="1", b="2"}`, sorted, values
/// quoted as Go quotes them.
pub fn label_set_string(labels: &LabelMap) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(n, v)| format!("{n}={}", go_quote(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// A string quoted as Go's `%q` quotes printable text.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One delivery attempt's end, as the dashboard lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    /// The pipeline of the sink.
    pub pipeline: String,
    /// The sink.
    pub sink: String,
    /// The receiver.
    pub receiver: String,
    /// The integration (`oncall/slack[0]`).
    pub target: String,
    /// `firing` or `resolved`.
    pub status: Status,
    /// The subject (`[FIRING:2] ApiDown (api page)`).
    pub title: String,
    /// Alerts in it.
    pub alerts: usize,
    /// The notification's event time (ms).
    pub at: i64,
    /// When the attempt ended (wall clock, ms).
    pub done_at: i64,
    /// `sent`, `rejected` or `gave_up`.
    pub outcome: &'static str,
}

/// The most recent deliveries of a process's notifier sinks, newest
/// last, at most [`Recent::CAPACITY`].
#[derive(Debug, Default)]
pub struct Recent(std::sync::Mutex<std::collections::VecDeque<Delivery>>);

impl Recent {
    /// How many are kept.
    pub const CAPACITY: usize = 200;

    /// Records a delivery's end.
    pub fn record(&self, delivery: Delivery) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() == Self::CAPACITY {
            all.pop_front();
        }
        all.push_back(delivery);
    }

    /// Every one kept, oldest first.
    pub fn list(&self) -> Vec<Delivery> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The zero time Alertmanager writes for "not resolved".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

mod rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_millis(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&format_millis(*ms)),
            None => s.serialize_str(ZERO_TIME),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let text = String::deserialize(d)?;
        if text == ZERO_TIME || text.starts_with("0001-01-01") {
            return Ok(None);
        }
        parse_rfc3339(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_prometheus_model_fingerprint() {
        // model.LabelSet{}.Fingerprint() is FNV-1a's offset basis, and
        // {"a": "b"} hashes "a\xffb\xff".
        assert_eq!(fingerprint(&LabelMap::new()), 0xcbf2_9ce4_8422_2325);
        let one: LabelMap = [("a".to_owned(), "b".to_owned())].into();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"a\xffb\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(fingerprint(&one), h);
        let two: LabelMap = [("a".to_owned(), "bb".to_owned())].into();
        assert_ne!(fingerprint(&one), fingerprint(&two));
    }

    #[test]
    fn label_sets_print_as_go_does() {
        let labels: LabelMap = [
            ("b".to_owned(), "x\"y".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]
        .into();
        assert_eq!(label_set_string(&labels), r#"{a="1", b="x\"y"}"#);
        assert_eq!(label_set_string(&LabelMap::new()), "{}");
    }

    #[test]
    fn wire_form_is_alertmanagers_webhook() {
        let n = Notification {
            version: "4".into(),
            group_key: "{}:{alertname=\"A\"}".into(),
            truncated_alerts: 0,
            status: Status::Firing,
            receiver: "team".into(),
            group_labels: [("alertname".to_owned(), "A".to_owned())].into(),
            common_labels: LabelMap::new(),
            common_annotations: LabelMap::new(),
            external_url: "http://x".into(),
            alerts: vec![NotifiedAlert {
                status: Status::Firing,
                labels: [("alertname".to_owned(), "A".to_owned())].into(),
                annotations: LabelMap::new(),
                starts_at: 1_700_000_000_123,
                ends_at: None,
                generator_url: "http://x/graph".into(),
                fingerprint: "0123456789abcdef".into(),
            }],
            at: 1_700_000_030_000,
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["groupKey"], "{}:{alertname=\"A\"}");
        assert_eq!(json["externalURL"], "http://x");
        assert_eq!(json["alerts"][0]["startsAt"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["alerts"][0]["endsAt"], ZERO_TIME);
        assert_eq!(json["alerts"][0]["generatorURL"], "http://x/graph");
        let back: Notification = serde_json::from_value(json).unwrap();
        assert_eq!(back, n);
    }
}
