//! The checkpoint topic: where a source stores, beside each committed
//! offset, what a restart needs (the partition's largest event time and the
//! sinks' durable frontier, see [`Checkpoint`]).
//!
//! Kafka's commit metadata would be the natural place, but not every
//! Kafka-compatible broker keeps it (tansu 0.6 answers every offset fetch
//! with empty metadata), so checkpoints go to a topic of their own: one
//! partition, compacted where the broker supports it, one message per
//! commit round and worker (key `<group>/<client>`, one line per partition:
//! `topic partition offset checkpoint`). The checkpoint is written and
//! acknowledged *before* the group offset is committed, and a restart
//! resumes from the checkpoint (the group offset is for lag monitoring and
//! tools), so a crash between the two loses nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use serde::{Deserialize, Serialize};
use tidemark_engine::checkpoint::Part;
use tidemark_engine::time::{Millis, Time};

use crate::progress::Checkpoint;

/// A partition's stored position.
pub(crate) type Positions = HashMap<(String, i32), (i64, Checkpoint)>;

/// A partition's position at a checkpoint of operator state
/// (`tidemark_engine::checkpoint`): its messages before `offset` are in the
/// state, none after. A worker's part of a checkpoint lists its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub topic: String,
    pub partition: i32,
    /// `None`: nothing read yet; a restore starts where the source's
    /// `start` says.
    pub offset: Option<i64>,
    /// The partition's largest event time before `offset`.
    pub max_seen: Option<Millis>,
}

/// The checkpoint of operator state a pipeline was restored from, as a
/// `kafka` source reads it: its cut, and every partition's position.
#[derive(Debug)]
pub(crate) struct Restore {
    pub at: Time,
    pub positions: HashMap<(String, i32), (Option<i64>, Option<Millis>)>,
}

impl Restore {
    /// Reads every worker's part (the run that wrote them may have had
    /// another number of workers).
    pub fn decode(at: Time, parts: &[Part]) -> Result<Restore, String> {
        let mut positions = HashMap::new();
        for part in parts {
            let held: Vec<Held> = tidemark_engine::checkpoint::decode(part)?;
            for h in held {
                positions.insert((h.topic, h.partition), (h.offset, h.max_seen));
            }
        }
        Ok(Restore { at, positions })
    }
}

/// Creates `topic` if it does not exist (`compact` sets
/// `cleanup.policy=compact`).
pub(crate) fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    compact: bool,
) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let mut new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1));
    if compact {
        new = new.set("cleanup.policy", "compact");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| e.to_string())?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(format!("cannot create topic {t}: {code}")),
        }
    }
    Ok(())
}

/// The encoded checkpoint message of a commit round.
pub(crate) fn encode(entries: &[(&str, i32, i64, Checkpoint)]) -> String {
    let mut out = String::new();
    for (topic, partition, offset, c) in entries {
        out.push_str(&format!("{topic}\t{partition}\t{offset}\t{}\n", c.encode()));
    }
    out
}

fn decode_into(text: &str, positions: &mut Positions) {
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(topic), Some(partition), Some(offset), Some(c)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let (Ok(partition), Ok(offset), Some(c)) =
            (partition.parse(), offset.parse(), Checkpoint::decode(c))
        else {
            continue;
        };
        positions.insert((topic.to_owned(), partition), (offset, c));
    }
}

/// Reads every checkpoint of `group` in `topic`, the latest winning.
pub(crate) fn read(config: &ClientConfig, topic: &str, group: &str) -> Result<Positions, String> {
    let mut c = config.clone();
    c.set("group.id", format!("{group}-checkpoint-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_err(|e| format!("checkpoint topic {topic}: {e}"))?;
    let mut positions = Positions::new();
    if high <= 0 {
        return Ok(positions);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let prefix = format!("{group}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if m.key().is_some_and(|k| k.starts_with(prefix.as_bytes()))
                    && let Some(Ok(text)) = m.payload_view::<str>()
                {
                    decode_into(text, &mut positions);
                }
                if m.offset() + 1 >= high {
                    return Ok(positions);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(positions),
            Some(Err(e)) => return Err(format!("checkpoint topic {topic}: {e}")),
            None => {}
        }
    }
    Err(format!(
        "checkpoint topic {topic}: not read to its end within 60 s"
    ))
}

/// Counts deliveries that failed (after librdkafka's own retries).
#[derive(Default)]
pub(crate) struct Acks(pub AtomicU64);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.0.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "A Kafka message was not delivered.");
        }
    }
}

/// Writes one commit round's checkpoints and waits for the broker.
pub(crate) fn write(
    producer: &BaseProducer<Acks>,
    topic: &str,
    key: &str,
    entries: &[(&str, i32, i64, Checkpoint)],
) -> Result<(), String> {
    let payload = encode(entries);
    let failed = producer.context().0.load(Ordering::Relaxed);
    producer
        .send(BaseRecord::to(topic).key(key).payload(&payload))
        .map_err(|(e, _)| e.to_string())?;
    producer
        .flush(Duration::from_secs(10))
        .map_err(|e| format!("checkpoint not acknowledged: {e}"))?;
    if producer.context().0.load(Ordering::Relaxed) != failed {
        return Err("checkpoint not delivered".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions written by two workers read back as one map, whatever
    /// worker reads them.
    #[test]
    fn every_workers_positions_are_restored() {
        let held = |partition, offset| Held {
            topic: "t".into(),
            partition,
            offset,
            max_seen: Some(partition as i64 * 10),
        };
        let parts = [
            std::sync::Arc::new(tidemark_engine::checkpoint::encode(&vec![
                held(0, Some(5)),
                held(2, None),
            ])),
            std::sync::Arc::new(tidemark_engine::checkpoint::encode(&vec![held(1, Some(7))])),
        ];
        let r = Restore::decode(40, &parts).unwrap();
        assert_eq!(r.at, 40);
        assert_eq!(r.positions.len(), 3);
        assert_eq!(r.positions[&("t".to_owned(), 0)], (Some(5), Some(0)));
        assert_eq!(r.positions[&("t".to_owned(), 1)], (Some(7), Some(10)));
        assert_eq!(r.positions[&("t".to_owned(), 2)], (None, Some(20)));
        let bad = [std::sync::Arc::new(vec![0xff; 3])];
        assert!(Restore::decode(40, &bad).is_err());
    }

    #[test]
    fn the_latest_checkpoint_of_a_partition_wins() {
        let a = Checkpoint {
            max_seen: Some(5),
            durable: 7,
        };
        let b = Checkpoint {
            max_seen: None,
            durable: 9,
        };
        let mut p = Positions::new();
        decode_into(&encode(&[("t", 0, 10, a), ("t", 1, 3, a)]), &mut p);
        decode_into(&encode(&[("t", 0, 12, b)]), &mut p);
        decode_into("garbage\nt\tx\t1\tnope\n", &mut p);
        assert_eq!(p[&("t".to_owned(), 0)], (12, b));
        assert_eq!(p[&("t".to_owned(), 1)], (3, a));
        assert_eq!(p.len(), 2);
    }
}
