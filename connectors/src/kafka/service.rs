//! The consumer thread of one source instance: it owns the librdkafka
//! consumer, assigns itself its share of the partitions, restores their
//! checkpoints, reads and decodes messages, stamps every sample with its
//! partition's entry time, and hands batches to the timely operator through
//! a bounded channel. When the channel is full it pauses its partitions and
//! keeps polling (librdkafka stops fetching for them; nothing is lost), and
//! resumes once the operator has taken a batch. It also commits what the
//! operator says is durable, and copies bad messages to the dead-letter topic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use tidemark_engine::Sample;
use tidemark_engine::component::Reach;
use tidemark_engine::runtime::SyncActivator;
use tidemark_engine::stats::{ComponentStats, DropReason, add};
use tidemark_engine::time::{Millis, Time, millis, now_millis};

use super::checkpoint::{self, Acks, Held, Positions, Restore};
use super::config::{KafkaSource, Start, Topics};
use super::progress::{Idleness, at_end};
use crate::progress::{Checkpoint, Stamper};
use tidemark_codecs::{Decoder, Rejects};

/// A partition this instance reads.
#[derive(Clone, Debug)]
pub(crate) struct Assigned {
    pub slot: usize,
    pub watermark: Option<Time>,
    /// Where it starts.
    pub start: Held,
}

/// Messages up to `next_offset` reach at most `reach`; the partition's
/// largest event time after them is `max_seen`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    pub next_offset: i64,
    pub reach: Time,
    pub max_seen: Option<i64>,
}

/// Consecutive messages of a partition that enter at one time: `n`
/// samples, from the message at `offset` on, whose partition had seen
/// `max_seen` before it. (A message's samples enter together, so that a
/// checkpoint cuts between messages.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub at: Time,
    pub n: usize,
    pub offset: i64,
    pub max_seen: Option<Millis>,
}

/// A run of one partition's messages.
pub(crate) struct Batch {
    pub slot: usize,
    pub samples: Vec<Sample>,
    /// The runs over `samples`, in order.
    pub runs: Vec<Run>,
    /// Commit points, one per step of a second in the running reach.
    pub chunks: Vec<Chunk>,
    pub watermark: Option<Time>,
}

/// Reach is rounded up to whole seconds, so a partition has about one
/// commit point per second of event time (rounding up only delays commits).
const REACH_STEP: Time = 1000;

pub(crate) enum Event {
    /// Partitions taken on; `resume` is the largest durable frontier stored
    /// with any committed offset of the source's topics (or the cut of the
    /// checkpoint restored from).
    Assigned {
        resume: Time,
        partitions: Vec<Assigned>,
    },
    Batch(Batch),
    /// The partition in this slot has delivered nothing for `idle_timeout`
    /// and has nothing left to read: it stops holding the watermark back
    /// until its next batch.
    Idle(usize),
}

pub(crate) enum Command {
    /// Commit `(slot, offset, checkpoint)`.
    Commit(Vec<(usize, i64, Checkpoint)>),
    Stop,
}

/// Which worker reads a partition: stable when partitions or topics are
/// added, and the same on every worker of every process.
pub(crate) fn owner(topic: &str, partition: i32, peers: usize) -> usize {
    let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (h.wrapping_add(partition as u64) % peers.max(1) as u64) as usize
}

pub(crate) struct Service {
    pub config: KafkaSource,
    pub decoder: Arc<Decoder>,
    pub stats: Arc<ComponentStats>,
    pub name: String,
    pub client_id: String,
    pub worker: usize,
    pub peers: usize,
    pub reach: Reach,
    pub events: SyncSender<Event>,
    pub commands: Receiver<Command>,
    pub activator: SyncActivator,
    /// The checkpoint of operator state the pipeline was restored from:
    /// its positions replace the checkpoint topic's.
    pub restored: Option<Restore>,
}

struct Part {
    topic: String,
    partition: i32,
    stamper: Stamper,
    /// The largest reach of the messages read so far.
    reach: Time,
    /// The next offset to read, once known (a message was read, or the
    /// start was an offset).
    next: Option<i64>,
    /// Started at the end of the partition (nothing old to read).
    from_end: bool,
    idleness: Idleness,
    /// The broker's watermarks could not be read for the idle check (said
    /// once: until they can, the partition holds the watermark back).
    unknown_end: bool,
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long asking a quiet partition's watermarks may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most messages, and about the most samples, read in one round.
const BATCH: usize = 4096;

fn base_config(config: &KafkaSource, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", client_id);
    for (k, v) in &config.options {
        c.set(k, v);
    }
    c
}

impl Service {
    fn consumer(&self) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
        let mut c = base_config(&self.config, &self.client_id);
        c.set("group.id", &self.config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                if self.config.start == Start::Latest {
                    "latest"
                } else {
                    "earliest"
                },
            );
        if !self
            .config
            .options
            .contains_key("queued.max.messages.kbytes")
        {
            // librdkafka prefetches up to 64 MiB per partition by default.
            c.set("queued.max.messages.kbytes", "16384");
        }
        c.create()
    }

    fn producer(&self, suffix: &str) -> Result<BaseProducer<Acks>, rdkafka::error::KafkaError> {
        let mut c = base_config(&self.config, &format!("{}-{suffix}", self.client_id));
        c.set("enable.idempotence", "true")
            .create_with_context(Acks::default())
    }

    fn dead_letters(&self) -> Option<BaseProducer<Acks>> {
        let topic = self.config.dead_letter_topic.as_ref()?;
        let admin = base_config(&self.config, &self.client_id);
        if let Err(error) = checkpoint::ensure_topic(&admin, topic, false) {
            tracing::warn!(%error, source = %self.name, "Cannot create the dead-letter topic; copies to it may fail.");
        }
        match self.producer("dlq") {
            Ok(p) => Some(p),
            Err(error) => {
                add(&self.stats.errors, 1);
                tracing::error!(%error, source = %self.name, "Cannot create the dead-letter producer; bad messages are only counted.");
                None
            }
        }
    }

    /// The partitions of the source's topics, sorted.
    fn partitions(&self, consumer: &BaseConsumer) -> Result<Vec<(String, i32)>, String> {
        let metadata = match &self.config.topics {
            Topics::Names(names) if names.len() == 1 => {
                consumer.fetch_metadata(Some(&names[0]), TIMEOUT)
            }
            _ => consumer.fetch_metadata(None, TIMEOUT),
        }
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for topic in metadata.topics() {
            if !self.config.topics.matches(topic.name()) {
                continue;
            }
            if let Some(e) = topic.error() {
                return Err(format!("topic {}: {e:?}", topic.name()));
            }
            for p in topic.partitions() {
                out.push((topic.name().to_owned(), p.id()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn committed(
        &self,
        consumer: &BaseConsumer,
        partitions: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), Offset>, String> {
        if partitions.is_empty() {
            return Ok(HashMap::new());
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| ((e.topic().to_owned(), e.partition()), e.offset()))
            .collect())
    }

    /// Where a partition without a committed offset starts.
    fn start_offset(&self, consumer: &BaseConsumer, topic: &str, partition: i32) -> Offset {
        match self.config.start {
            Start::Earliest => Offset::Beginning,
            Start::Latest => Offset::End,
            Start::Time(ms) => {
                let mut tpl = TopicPartitionList::new();
                let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(ms));
                consumer
                    .offsets_for_times(tpl, TIMEOUT)
                    .ok()
                    .and_then(|r| r.find_partition(topic, partition).map(|e| e.offset()))
                    .filter(|o| matches!(o, Offset::Offset(_)))
                    .unwrap_or(Offset::End)
            }
        }
    }

    /// Takes on the partitions of `all` this worker owns and has not yet.
    fn assign(
        &self,
        consumer: &BaseConsumer,
        all: &[(String, i32)],
        parts: &mut Vec<Part>,
        positions: &Positions,
        initial: bool,
    ) -> Result<Option<Event>, String> {
        let known: Vec<(String, i32)> = parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let mine: Vec<&(String, i32)> = all
            .iter()
            .filter(|(t, p)| {
                owner(t, *p, self.peers) == self.worker && !known.contains(&(t.clone(), *p))
            })
            .collect();
        if mine.is_empty() && !initial {
            return Ok(None);
        }
        // The resume frontier is read over every partition, so every worker
        // finds the same value.
        let resume = match &self.restored {
            Some(r) => r.at,
            None => positions
                .iter()
                .filter(|((t, _), _)| self.config.topics.matches(t))
                .map(|(_, (_, c))| c.durable)
                .max()
                .unwrap_or(0),
        };
        let owned: Vec<(String, i32)> = mine.iter().map(|x| (*x).clone()).collect();
        let committed = self.committed(consumer, &owned)?;
        let mut tpl = TopicPartitionList::new();
        let mut assigned = Vec::new();
        let ooo = millis(self.config.max_out_of_orderness);
        for (topic, partition) in mine {
            let key = (topic.clone(), *partition);
            let (offset, max_seen) = match &self.restored {
                // Restored state holds the messages before the
                // checkpoint's position; a partition it does not list was
                // taken on after its cut, so the state holds none of it.
                Some(r) => match r.positions.get(&key) {
                    Some((Some(o), m)) => (Offset::Offset(*o), *m),
                    Some((None, m)) => (self.start_offset(consumer, topic, *partition), *m),
                    None => (self.start_offset(consumer, topic, *partition), None),
                },
                None => match (positions.get(&key), committed.get(&key)) {
                    (Some((o, c)), _) => (Offset::Offset(*o), c.max_seen),
                    // Committed by a consumer that left no checkpoint: its
                    // position, with nothing to restore.
                    (None, Some(o @ Offset::Offset(_))) => (*o, None),
                    _ => (self.start_offset(consumer, topic, *partition), None),
                },
            };
            tpl.add_partition_offset(topic, *partition, offset)
                .map_err(|e| e.to_string())?;
            let stamper = Stamper::new(ooo, max_seen, self.reach);
            tracing::info!(source = %self.name, topic, partition, ?offset, restored = self.restored.is_some(), "Reading a partition.");
            assigned.push(Assigned {
                slot: parts.len(),
                watermark: stamper.watermark(),
                start: Held {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: match offset {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    max_seen,
                },
            });
            parts.push(Part {
                topic: topic.clone(),
                partition: *partition,
                stamper,
                reach: 0,
                next: match offset {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                },
                from_end: offset == Offset::End,
                idleness: Idleness::new(self.config.idle_timeout, Instant::now()),
                unknown_end: false,
            });
        }
        consumer
            .incremental_assign(&tpl)
            .map_err(|e| e.to_string())?;
        Ok(Some(Event::Assigned {
            resume,
            partitions: assigned,
        }))
    }

    fn commit(
        &self,
        consumer: &BaseConsumer,
        checkpoints: &BaseProducer<Acks>,
        parts: &[Part],
        list: Vec<(usize, i64, Checkpoint)>,
    ) {
        let entries: Vec<(&str, i32, i64, Checkpoint)> = list
            .iter()
            .map(|&(slot, offset, c)| {
                (parts[slot].topic.as_str(), parts[slot].partition, offset, c)
            })
            .collect();
        // The checkpoint first: a restart resumes from it.
        if let Err(error) = checkpoint::write(
            checkpoints,
            &self.config.checkpoint_topic,
            &format!("{}/{}", self.config.group, self.client_id),
            &entries,
        ) {
            add(&self.stats.errors, 1);
            tracing::warn!(%error, source = %self.name, "Failed to store a checkpoint; the next commit covers these offsets.");
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset, c) in entries {
            let mut e = tpl.add_partition(topic, partition);
            let _ = e.set_offset(Offset::Offset(offset));
            e.set_metadata(c.encode());
        }
        if let Err(error) = consumer.commit(&tpl, CommitMode::Sync) {
            tracing::warn!(%error, source = %self.name, "Failed to commit offsets to the group (the checkpoint is stored).");
        }
    }

    fn dead_letter(
        &self,
        producer: Option<&BaseProducer<Acks>>,
        message: &rdkafka::message::BorrowedMessage<'_>,
        error: &str,
        accepted: usize,
    ) {
        let (Some(producer), Some(topic)) = (producer, &self.config.dead_letter_topic) else {
            return;
        };
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let accepted = accepted.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tidemark-error",
                value: Some(error),
            })
            .insert(Header {
                key: "tidemark-source",
                value: Some(&self.name),
            })
            .insert(Header {
                key: "tidemark-topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "tidemark-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "tidemark-offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "tidemark-accepted-samples",
                value: Some(&accepted),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
        if let Some(k) = message.key() {
            record = record.key(k);
        }
        if let Some(p) = message.payload() {
            record = record.payload(p);
        }
        if let Err((error, _)) = producer.send(record) {
            add(&self.stats.errors, 1);
            tracing::warn!(%error, source = %self.name, "Cannot copy a bad message to the dead-letter topic.");
        }
    }

    fn pause(&self, consumer: &BaseConsumer, parts: &[Part], pause: bool) {
        let mut tpl = TopicPartitionList::new();
        for p in parts {
            tpl.add_partition(&p.topic, p.partition);
        }
        let r = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(error) = r {
            tracing::warn!(%error, source = %self.name, "Cannot pause or resume partitions.");
        }
    }

    /// Runs until the operator says stop or goes away.
    pub(crate) fn run(self) {
        let consumer = loop {
            match self.consumer() {
                Ok(c) => break c,
                Err(error) => {
                    add(&self.stats.errors, 1);
                    tracing::error!(%error, source = %self.name, "Cannot create the Kafka consumer; retrying.");
                    if self.wait(Duration::from_secs(5)) {
                        return;
                    }
                }
            }
        };
        let dlq = self.dead_letters();
        let checkpoints = loop {
            match self.producer("checkpoints") {
                Ok(p) => break p,
                Err(error) => {
                    add(&self.stats.errors, 1);
                    tracing::error!(%error, source = %self.name, "Cannot create the checkpoint producer; retrying.");
                    if self.wait(Duration::from_secs(5)) {
                        return;
                    }
                }
            }
        };
        let mut parts: Vec<Part> = Vec::new();
        let mut positions = Positions::new();
        let mut attempts = 0u64;
        // The first assignment: until it succeeds, the source holds the
        // watermark where it is.
        loop {
            let admin = base_config(&self.config, &self.client_id);
            // (Restored from a checkpoint of operator state: its positions
            // are used, so the topic's are not read.)
            match checkpoint::ensure_topic(&admin, &self.config.checkpoint_topic, true)
                .and_then(|()| match self.restored {
                    Some(_) => Ok(Positions::new()),
                    None => {
                        checkpoint::read(&admin, &self.config.checkpoint_topic, &self.config.group)
                    }
                })
                .and_then(|p| {
                    positions = p;
                    self.partitions(&consumer)
                })
                .and_then(|all| self.assign(&consumer, &all, &mut parts, &positions, true))
            {
                Ok(event) => {
                    // The initial assignment always reports, even with no
                    // partition for this worker.
                    if let Some(event) = event {
                        if self.events.send(event).is_err() {
                            return;
                        }
                        let _ = self.activator.activate();
                    }
                    break;
                }
                Err(error) => {
                    add(&self.stats.errors, 1);
                    if attempts.is_multiple_of(30) {
                        tracing::warn!(%error, source = %self.name, attempts, "Cannot read the topics' partitions and offsets (does the topic exist?); retrying every second.");
                    }
                    attempts += 1;
                    if self.wait(Duration::from_secs(1)) {
                        return;
                    }
                }
            }
        }
        let mut refreshed = Instant::now();
        let mut pending: VecDeque<Event> = VecDeque::new();
        let mut paused = false;
        let mut pauses = 0u64;
        let mut last_pause_log = Instant::now() - Duration::from_secs(10);
        let mut building: BTreeMap<usize, Batch> = BTreeMap::new();
        let mut logged = 0u32;
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Commit(list)) => self.commit(&consumer, &checkpoints, &parts, list),
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => {
                        if let Some(p) = &dlq {
                            let _ = p.flush(TIMEOUT);
                        }
                        drop(consumer);
                        tracing::debug!(source = %self.name, "Consumer closed.");
                        return;
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            if refreshed.elapsed() >= self.config.metadata_refresh {
                refreshed = Instant::now();
                match self
                    .partitions(&consumer)
                    .and_then(|all| self.assign(&consumer, &all, &mut parts, &positions, false))
                {
                    Ok(Some(event)) => pending.push_back(event),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(%error, source = %self.name, "Cannot refresh the topics' partitions.")
                    }
                }
            }
            // Hand over what is ready; a full channel pauses the partitions.
            while let Some(event) = pending.pop_front() {
                match self.events.try_send(event) {
                    Ok(()) => {
                        let _ = self.activator.activate();
                    }
                    Err(TrySendError::Full(event)) => {
                        pending.push_front(event);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            if pending.is_empty() == paused {
                paused = !paused;
                self.pause(&consumer, &parts, paused);
                if paused {
                    pauses += 1;
                    for p in parts.iter_mut() {
                        p.idleness.paused();
                    }
                    tracing::debug!(source = %self.name, "Downstream is full: partitions paused.");
                } else {
                    let now = Instant::now();
                    for p in parts.iter_mut() {
                        p.idleness.resumed(now);
                    }
                    tracing::debug!(source = %self.name, "Downstream has room: partitions resumed.");
                }
                if last_pause_log.elapsed() >= Duration::from_secs(10) && pauses > 0 {
                    tracing::info!(source = %self.name, pauses, "Partitions were paused for backpressure (the consumer keeps polling; nothing is lost).");
                    last_pause_log = Instant::now();
                    pauses = 0;
                }
            }
            if let Some(p) = &dlq {
                p.poll(Duration::ZERO);
            }
            let first_wait = if pending.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(5)
            };
            let now_ms = now_millis();
            let mut read = 0;
            let mut samples = 0;
            let round = self.config.queue.min(BATCH);
            while read < round && samples < round {
                let wait = if read == 0 {
                    first_wait
                } else {
                    Duration::ZERO
                };
                let Some(result) = consumer.poll(wait) else {
                    break;
                };
                let message = match result {
                    Ok(m) => m,
                    Err(error) => {
                        add(&self.stats.errors, 1);
                        if logged < 10 {
                            logged += 1;
                            tracing::warn!(%error, source = %self.name, "Kafka consumer error.");
                        }
                        break;
                    }
                };
                read += 1;
                let Some(slot) = parts
                    .iter()
                    .position(|p| p.partition == message.partition() && p.topic == message.topic())
                else {
                    continue;
                };
                let part = &mut parts[slot];
                part.idleness.message(Instant::now());
                part.next = Some(message.offset() + 1);
                let batch = building.entry(slot).or_insert_with(|| Batch {
                    slot,
                    samples: Vec::new(),
                    runs: Vec::new(),
                    chunks: Vec::new(),
                    watermark: None,
                });
                let before = batch.samples.len();
                let mut rejects = Rejects::default();
                match message.payload() {
                    Some(payload) => {
                        self.decoder
                            .decode(payload, now_ms, &mut batch.samples, &mut rejects)
                    }
                    None => rejects.add(
                        tidemark_engine::validate::RejectReason::Malformed,
                        1,
                        0,
                        || "empty message".into(),
                    ),
                }
                // The message enters at the partition's watermark after its
                // first sample.
                let max_seen = part.stamper.max_seen();
                let mut reach = 0;
                let mut at = None;
                for s in &batch.samples[before..] {
                    let (t, r) = part.stamper.stamp(s.timestamp);
                    reach = reach.max(r);
                    at.get_or_insert(t);
                }
                if let Some(at) = at {
                    let n = batch.samples.len() - before;
                    match batch.runs.last_mut() {
                        Some(run) if run.at == at => run.n += n,
                        _ => batch.runs.push(Run {
                            at,
                            n,
                            offset: message.offset(),
                            max_seen,
                        }),
                    }
                }
                let reach = reach.div_ceil(REACH_STEP).saturating_mul(REACH_STEP);
                let chunk = Chunk {
                    next_offset: message.offset() + 1,
                    reach: reach.max(part.reach),
                    max_seen: part.stamper.max_seen(),
                };
                part.reach = chunk.reach;
                match batch.chunks.last_mut() {
                    Some(last) if last.reach == chunk.reach => *last = chunk,
                    _ => batch.chunks.push(chunk),
                }
                batch.watermark = part.stamper.watermark();
                samples += batch.samples.len() - before;
                if !rejects.is_empty() {
                    for (reason, n) in &rejects.counts {
                        self.stats.dropped(DropReason::Rejected(*reason), *n);
                    }
                    let error = rejects.first().unwrap_or_default();
                    if logged < 10 {
                        logged += 1;
                        tracing::warn!(source = %self.name, topic = message.topic(), partition = message.partition(), offset = message.offset(), %error, "Rejected samples in a message.");
                    }
                    self.dead_letter(dlq.as_ref(), &message, &error, batch.samples.len() - before);
                }
            }
            pending.extend(
                std::mem::take(&mut building)
                    .into_values()
                    .map(Event::Batch),
            );
            // After the batches: a partition's last batch reaches the
            // operator before the news that it is idle.
            self.quiet_partitions(&consumer, &mut parts, &mut pending);
        }
    }

    /// Tells the operator of partitions that became idle: quiet for
    /// `idle_timeout` of fetching and, by the broker's watermarks, at their
    /// end.
    fn quiet_partitions(
        &self,
        consumer: &BaseConsumer,
        parts: &mut [Part],
        pending: &mut VecDeque<Event>,
    ) {
        let now = Instant::now();
        if !parts.iter().any(|p| p.idleness.due(now)) {
            return;
        }
        // librdkafka's position steps over transaction markers, which are
        // never delivered as messages.
        let positions = consumer.position().ok();
        for (slot, part) in parts.iter_mut().enumerate() {
            if !part.idleness.due(now) {
                continue;
            }
            let position = positions
                .as_ref()
                .and_then(|l| l.find_partition(&part.topic, part.partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let next = match (part.next, position) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let end = match consumer.fetch_watermarks(&part.topic, part.partition, CHECK_TIMEOUT) {
                Ok((low, high)) => {
                    part.unknown_end = false;
                    (next.is_none() && part.from_end) || at_end(next, low, high)
                }
                Err(error) => {
                    if !part.unknown_end {
                        part.unknown_end = true;
                        add(&self.stats.errors, 1);
                        tracing::warn!(%error, source = %self.name, topic = %part.topic, partition = part.partition, "Cannot read a quiet partition's watermarks from the broker; it holds the watermark back until they can be read.");
                    }
                    false
                }
            };
            if part.idleness.checked(Instant::now(), end) {
                tracing::debug!(source = %self.name, topic = %part.topic, partition = part.partition, "Partition idle.");
                pending.push_back(Event::Idle(slot));
            }
        }
    }

    /// Sleeps up to `d` while watching for a stop; true if stopped.
    fn wait(&self, d: Duration) -> bool {
        matches!(
            self.commands.recv_timeout(d),
            Ok(Command::Stop) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_spread_over_workers_and_stay_put() {
        let mut counts = [0; 4];
        for p in 0..64 {
            counts[owner("metrics", p, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c == 16), "{counts:?}");
        assert_eq!(owner("metrics", 5, 4), owner("metrics", 5, 4));
        assert_eq!(owner("metrics", 5, 1), 0);
    }
}
