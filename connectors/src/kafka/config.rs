//! Configuration of the `kafka` source and sink.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use tidemark_codecs::Codec;

use tidemark_engine::component::ConfigError;
use tidemark_engine::time::{Millis, parse_duration};

/// How a message's payload is read or written.
/// Where a partition without a committed offset starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced from now on.
    Latest,
    /// The first message with a timestamp at or after this (ms since epoch).
    Time(Millis),
}

/// librdkafka properties Tidemark sets itself; an `options` entry naming one
/// is an error.
const MANAGED: [&str; 6] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
];

/// `type: kafka` as a source.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// Topics to read. Give `topics` or `topic_pattern`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// A regular expression matched against whole topic names; topics
    /// created later are picked up at the next `metadata_refresh`.
    #[serde(default)]
    pub topic_pattern: Option<String>,
    /// The consumer group whose committed offsets are the source's position.
    pub group: String,
    /// Where a partition with no committed offset starts: `earliest`
    /// (default), `latest`, or a time (RFC 3339 such as
    /// `2026-11-25T00:00:00Z`, or milliseconds since the epoch).
    #[serde(default = "earliest")]
    pub start: String,
    /// Payload format: `json` (default), `protobuf`, `remote_write`, `influx`,
    /// `otlp` (an `ExportMetricsServiceRequest`).
    #[serde(default)]
    pub format: Codec,
    /// Messages that do not parse are copied here (same key and payload,
    /// with headers saying why and where from). Default: only counted.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Where the source stores what a restart needs beside each committed
    /// offset (created if missing: one partition, compacted). Default
    /// `tidemark-checkpoints`; one topic serves every group.
    #[serde(default = "checkpoint_topic")]
    pub checkpoint_topic: String,
    /// A partition's watermark is the largest timestamp read from it minus
    /// this. Default `0s`.
    #[serde(default = "zero")]
    pub max_out_of_orderness: String,
    /// A partition with no new message for this long, and nothing left to
    /// read, stops holding the watermark back. Default `10s`.
    #[serde(default = "ten_seconds")]
    pub idle_timeout: String,
    /// How often offsets whose samples are durable in every sink are
    /// committed. Default `1s`.
    #[serde(default = "one_second")]
    pub commit_interval: String,
    /// How often topic metadata is read again for new partitions and
    /// topics. Default `30s`.
    #[serde(default = "thirty_seconds")]
    pub metadata_refresh: String,
    /// Samples the consumer thread may have decoded and not yet handed to
    /// the dataflow; beyond this it pauses its partitions (and keeps
    /// polling, so nothing times out) until there is room. Default 65536.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// librdkafka properties passed as they are: security
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, ...) and tuning. The properties
    /// Tidemark manages (`group.id`, offsets, idempotence) are refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `type: kafka` as a sink.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic to write to; it must exist.
    pub topic: String,
    /// `json` (default: one sample per message, as the `file` sink writes
    /// it) or `protobuf` (a Tidemark `WriteRequest` with one point).
    #[serde(default)]
    pub format: Codec,
    /// librdkafka producer properties passed as they are (security,
    /// `compression.type`, `linger.ms`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn earliest() -> String {
    "earliest".into()
}
fn default_queue() -> usize {
    65_536
}
fn checkpoint_topic() -> String {
    "tidemark-checkpoints".into()
}
fn zero() -> String {
    "0s".into()
}
fn one_second() -> String {
    "1s".into()
}
fn ten_seconds() -> String {
    "10s".into()
}
fn thirty_seconds() -> String {
    "30s".into()
}

/// Which topics a source reads.
#[derive(Clone, Debug)]
pub enum Topics {
    /// These names.
    Names(Vec<String>),
    /// Every topic whose name matches.
    Pattern(regex::Regex),
}

impl Topics {
    /// Whether `topic` is read.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Topics::Names(names) => names.iter().any(|n| n == topic),
            Topics::Pattern(re) => re.is_match(topic),
        }
    }
}

/// A validated `kafka` source.
#[derive(Clone, Debug)]
pub struct KafkaSource {
    pub(crate) brokers: String,
    pub(crate) topics: Topics,
    pub(crate) group: String,
    pub(crate) start: Start,
    pub(crate) format: Codec,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) checkpoint_topic: String,
    pub(crate) max_out_of_orderness: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) commit_interval: Duration,
    pub(crate) metadata_refresh: Duration,
    pub(crate) queue: usize,
    pub(crate) options: BTreeMap<String, String>,
}

impl KafkaSource {
    /// The payload format.
    pub fn format(&self) -> Codec {
        self.format
    }
}

/// A validated `kafka` sink.
#[derive(Clone, Debug)]
pub struct KafkaSink {
    pub(crate) brokers: String,
    pub(crate) topic: String,
    pub(crate) format: Codec,
    pub(crate) options: BTreeMap<String, String>,
}

impl KafkaSink {
    /// The payload format.
    pub fn format(&self) -> Codec {
        self.format
    }
}

fn duration(errors: &mut Vec<ConfigError>, field: &str, text: &str, positive: bool) -> Duration {
    match parse_duration(text) {
        Ok(d) if positive && d.is_zero() => {
            errors.push(ConfigError::field(
                field,
                format!("{field} must be longer than 0"),
            ));
            Duration::from_secs(1)
        }
        Ok(d) => d,
        Err(e) => {
            errors.push(ConfigError::field(field, e.to_string()));
            Duration::from_secs(1)
        }
    }
}

fn check_common(errors: &mut Vec<ConfigError>, brokers: &str, options: &BTreeMap<String, String>) {
    if brokers.split(',').all(|b| b.trim().is_empty()) {
        errors.push(ConfigError::field(
            "brokers",
            "brokers is empty (give host:port, separated by commas)",
        ));
    }
    for key in options.keys() {
        if MANAGED.contains(&key.as_str()) {
            errors.push(ConfigError {
                field: vec!["options".into(), key.clone()],
                message: format!("{key} is set by Tidemark and cannot be given here"),
            });
        }
    }
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse()
            .map(Start::Time)
            .map_err(|e| format!("invalid time {t:?}: {e}")),
        t => chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| Start::Time(d.timestamp_millis()))
            .map_err(|e| {
                format!(
                    "start {t:?} is not earliest, latest, an RFC 3339 time or milliseconds since the epoch ({e})"
                )
            }),
    }
}

impl KafkaSourceConfig {
    /// Checks the fields without connecting.
    pub fn validate(&self) -> Result<KafkaSource, Vec<ConfigError>> {
        let mut errors = Vec::new();
        check_common(&mut errors, &self.brokers, &self.options);
        let topics = match (&self.topic_pattern, self.topics.is_empty()) {
            (None, false) => {
                if self.topics.iter().any(|t| t.is_empty()) {
                    errors.push(ConfigError::field("topics", "a topic name is empty"));
                }
                Topics::Names(self.topics.clone())
            }
            (Some(p), true) => match regex::Regex::new(&format!("^(?:{p})$")) {
                Ok(re) => Topics::Pattern(re),
                Err(e) => {
                    errors.push(ConfigError::field("topic_pattern", e.to_string()));
                    Topics::Names(Vec::new())
                }
            },
            (None, true) => {
                errors.push(ConfigError::field(
                    "topics",
                    "give the topics to read, or a topic_pattern",
                ));
                Topics::Names(Vec::new())
            }
            (Some(_), false) => {
                errors.push(ConfigError::field(
                    "topic_pattern",
                    "give topics or topic_pattern, not both",
                ));
                Topics::Names(Vec::new())
            }
        };
        if self.group.is_empty() {
            errors.push(ConfigError::field("group", "group is empty"));
        }
        let start = parse_start(&self.start)
            .map_err(|e| errors.push(ConfigError::field("start", e)))
            .unwrap_or(Start::Earliest);
        if self.queue == 0 {
            errors.push(ConfigError::field(
                "queue",
                "queue must hold at least 1 sample",
            ));
        }
        if self.checkpoint_topic.is_empty() {
            errors.push(ConfigError::field(
                "checkpoint_topic",
                "checkpoint_topic is empty",
            ));
        }
        if self.dead_letter_topic.as_deref() == Some("") {
            errors.push(ConfigError::field(
                "dead_letter_topic",
                "dead_letter_topic is empty",
            ));
        }
        let max_out_of_orderness = duration(
            &mut errors,
            "max_out_of_orderness",
            &self.max_out_of_orderness,
            false,
        );
        let idle_timeout = duration(&mut errors, "idle_timeout", &self.idle_timeout, true);
        let commit_interval = duration(&mut errors, "commit_interval", &self.commit_interval, true);
        let metadata_refresh = duration(
            &mut errors,
            "metadata_refresh",
            &self.metadata_refresh,
            true,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(KafkaSource {
            brokers: self.brokers.clone(),
            topics,
            group: self.group.clone(),
            start,
            format: self.format,
            dead_letter_topic: self.dead_letter_topic.clone(),
            checkpoint_topic: self.checkpoint_topic.clone(),
            max_out_of_orderness,
            idle_timeout,
            commit_interval,
            metadata_refresh,
            queue: self.queue,
            options: self.options.clone(),
        })
    }
}

impl KafkaSinkConfig {
    /// Checks the fields without connecting.
    pub fn validate(&self) -> Result<KafkaSink, Vec<ConfigError>> {
        let mut errors = Vec::new();
        check_common(&mut errors, &self.brokers, &self.options);
        if self.topic.is_empty() {
            errors.push(ConfigError::field("topic", "topic is empty"));
        }
        if !self.format.encodes() {
            errors.push(ConfigError::field(
                "format",
                format!(
                    "the kafka sink writes json or protobuf, not {}",
                    self.format.as_str()
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(KafkaSink {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            format: self.format,
            options: self.options.clone(),
        })
    }
}

impl KafkaSource {
    /// Its brokers, what its librdkafka options touch, and its queue.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        use tidemark_engine::spec::{Resource, ResourceKind};
        let mut out = crate::touches::brokers(vec!["brokers".to_owned()], &self.brokers);
        out.extend(crate::touches::kafka_options(&self.options));
        out.push(Resource::new("queue", ResourceKind::Queue(self.queue)));
        out
    }

    /// What its positions in checkpoints depend on: the cluster (its
    /// brokers, in any order). Positions are kept per topic and partition,
    /// so a restore gives them back though topics, format, group or
    /// timing settings changed.
    pub fn identity(&self) -> String {
        let mut brokers: Vec<&str> = self.brokers.split(',').map(str::trim).collect();
        brokers.sort_unstable();
        brokers.dedup();
        format!("kafka {}", brokers.join(","))
    }
}

impl KafkaSink {
    /// Its brokers and what its librdkafka options touch.
    pub fn touches(&self) -> Vec<tidemark_engine::spec::Resource> {
        let mut out = crate::touches::brokers(vec!["brokers".to_owned()], &self.brokers);
        out.extend(crate::touches::kafka_options(&self.options));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses() {
        let c: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:9092",
            "topics": ["metrics"],
            "group": "tidemark",
            "start": "2026-11-25T00:00:00Z",
            "format": "influx",
            "dead_letter_topic": "metrics-dlq",
            "options": {"security.protocol": "plaintext"}
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(v.start, Start::Time(1_795_564_800_000));
        assert_eq!(v.format, Codec::Influx);
        assert_eq!(v.idle_timeout, Duration::from_secs(10));
    }

    /// Positions are kept while the cluster is the same, whatever else
    /// changed.
    #[test]
    fn the_identity_is_the_cluster() {
        let source = |v: serde_json::Value| {
            let c: KafkaSourceConfig = serde_json::from_value(v).unwrap();
            c.validate().unwrap().identity()
        };
        let a = source(
            serde_json::json!({"brokers": "k1:9092,k2:9092", "topics": ["a"], "group": "g"}),
        );
        let b = source(
            serde_json::json!({"brokers": " k2:9092, k1:9092", "topics": ["a", "b"], "group": "h", "format": "influx"}),
        );
        let c = source(serde_json::json!({"brokers": "k3:9092", "topics": ["a"], "group": "g"}));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_error_is_reported() {
        let c: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
            "brokers": "",
            "topics": ["a"],
            "topic_pattern": "(",
            "group": "",
            "start": "yesterday",
            "idle_timeout": "0s",
            "options": {"group.id": "x"}
        }))
        .unwrap();
        let fields: Vec<String> = c
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field.join("."))
            .collect();
        assert_eq!(
            fields,
            [
                "brokers",
                "options.group.id",
                "topic_pattern",
                "group",
                "start",
                "idle_timeout"
            ]
        );
    }

    #[test]
    fn a_pattern_matches_whole_names() {
        let c: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
            "brokers": "b:9092", "topic_pattern": "metrics-.*", "group": "g"
        }))
        .unwrap();
        let v = c.validate().unwrap();
        assert!(v.topics.matches("metrics-eu"));
        assert!(!v.topics.matches("old-metrics-eu"));
    }

    #[test]
    fn the_sink_writes_json_or_protobuf() {
        let c: KafkaSinkConfig = serde_json::from_value(serde_json::json!({
            "brokers": "b:9092", "topic": "out", "format": "influx"
        }))
        .unwrap();
        assert_eq!(c.validate().unwrap_err()[0].field, ["format"]);
        let c: KafkaSinkConfig = serde_json::from_value(serde_json::json!({
            "brokers": "b:9092", "topic": "out", "format": "otlp"
        }))
        .unwrap();
        assert_eq!(c.validate().unwrap_err()[0].field, ["format"]);
    }

    #[test]
    fn the_source_reads_every_codec_by_name() {
        for (name, codec) in [
            ("json", Codec::Json),
            ("protobuf", Codec::Protobuf),
            ("remote_write", Codec::RemoteWrite),
            ("influx", Codec::Influx),
            ("otlp", Codec::Otlp),
        ] {
            let c: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
                "brokers": "b:9092", "topics": ["m"], "group": "g", "format": name
            }))
            .unwrap();
            assert_eq!(c.validate().unwrap().format, codec);
            assert_eq!(codec.as_str(), name);
        }
    }
}
