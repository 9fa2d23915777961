//! The `kafka` sink: every worker writes the samples it holds, keyed by
//! series (so one series keeps its order in one partition), with the
//! idempotent producer. Samples of a timely time are sent once the frontier
//! has passed it; the sink holds a capability for that time until the broker
//! has acknowledged every one of them, so its frontier is its durable
//! frontier. A message that fails after librdkafka's own retries is sent
//! again (and counted as a retry): nothing is dropped, and the time stays
//! held until it is delivered. An error no retry can mend (a message over
//! the broker's size limit, a topic the credentials may not write, an
//! invalid topic name, failed authentication, a producer that cannot be
//! created) stops the pipeline with its cause instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;

use tidemark_engine::Sample;
use tidemark_engine::component::{Failure, SinkContext};
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::runtime::{
    Operator, ProgressBuilder, ProgressStream, SampleStream, SyncActivator, frontier_min,
};
use tidemark_engine::stats::{ComponentStats, add};
use tidemark_engine::time::Time;

use super::config::KafkaSink;

type Failed = Vec<(Time, Option<Vec<u8>>, Vec<u8>)>;

struct Deliveries {
    pending: Mutex<BTreeMap<Time, u64>>,
    failed: Mutex<Failed>,
    activator: Mutex<Option<SyncActivator>>,
    stats: Arc<ComponentStats>,
    name: String,
    failure: Arc<Failure>,
}

impl ClientContext for Deliveries {}

/// Whether a send or delivery error can heal: what the broker or
/// librdkafka says can never succeed for this message or these settings
/// is permanent; the rest (timeouts, a broker down, a leader moving) is
/// retried.
fn classify(error: &KafkaError) -> ComponentError {
    use RDKafkaErrorCode as C;
    let message = format!("cannot write to Kafka: {error}");
    let permanent = match error {
        KafkaError::ClientCreation(_) | KafkaError::ClientConfig(..) => true,
        e => matches!(
            e.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::SaslAuthenticationFailed
                    | C::Authentication
                    | C::InvalidRecord
                    | C::InvalidArgument
                    | C::Fatal
            )
        ),
    };
    if permanent {
        ComponentError::permanent(Fault::Config, message)
    } else {
        ComponentError::transient(Fault::External, message)
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<Time>;

    fn delivery(&self, result: &DeliveryResult<'_>, time: Box<Time>) {
        match result {
            Ok(_) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = pending.get_mut(&time) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(&time);
                    }
                }
                add(&self.stats.sent, 1);
            }
            Err((error, message)) => {
                let classified = classify(error);
                if !classified.retryable {
                    add(&self.stats.errors, 1);
                    tracing::error!(error = %classified.chain(), sink = %self.name, "A message can never be delivered; the pipeline stops.");
                    self.failure.fail(&self.name, &classified);
                    return;
                }
                self.stats.retried(&error.to_string());
                tracing::warn!(%error, sink = %self.name, "A message was not delivered; sending it again.");
                self.failed.lock().unwrap_or_else(|e| e.into_inner()).push((
                    *time,
                    message.key().map(<[u8]>::to_vec),
                    message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                ));
            }
        }
        if let Some(a) = self
            .activator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = a.activate();
        }
    }
}

fn send(
    producer: &ThreadedProducer<Deliveries>,
    topic: &str,
    time: Time,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<(), KafkaError> {
    loop {
        let mut record: BaseRecord<'_, [u8], [u8], Box<Time>> =
            BaseRecord::with_opaque_to(topic, Box::new(time)).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        match producer.send(record) {
            Ok(()) => return Ok(()),
            // librdkafka's queue is full: wait for deliveries (backpressure).
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

impl KafkaSink {
    /// Builds the sink on a worker.
    pub fn build<'scope>(
        &self,
        stream: SampleStream<'scope>,
        ctx: SinkContext,
    ) -> ProgressStream<'scope> {
        let config = self.clone();
        let scope = stream.scope();
        stream
            .unary_frontier::<ProgressBuilder, _, _, _>(Pipeline, &ctx.name.clone(), move |_cap, info| {
                let deliveries = Deliveries {
                    pending: Mutex::default(),
                    failed: Mutex::default(),
                    activator: Mutex::new(Some(scope.worker().sync_activator_for(info.address.to_vec()))),
                    stats: Arc::clone(&ctx.stats),
                    name: ctx.name.clone(),
                    failure: Arc::clone(&ctx.failure),
                };
                let mut c = ClientConfig::new();
                c.set("bootstrap.servers", &config.brokers)
                    .set("client.id", format!("tidemark-sink-{}-{}", ctx.name, scope.index()));
                for (k, v) in &config.options {
                    c.set(k, v);
                }
                c.set("enable.idempotence", "true");
                let producer: Option<ThreadedProducer<Deliveries>> = match c.create_with_context(deliveries) {
                    Ok(p) => Some(p),
                    Err(error) => {
                        add(&ctx.stats.errors, 1);
                        tracing::error!(%error, sink = %ctx.name, "Cannot create the Kafka producer; the pipeline stops.");
                        ctx.failure.fail(&ctx.name, &classify(&error));
                        None
                    }
                };
                let activator = scope.activator_for(Rc::clone(&info.address));
                let mut stash: BTreeMap<Time, (Capability<Time>, Vec<Sample>)> = BTreeMap::new();
                let mut held: BTreeMap<Time, Capability<Time>> = BTreeMap::new();
                let mut key = Vec::new();
                let mut payload = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(output.output_index()) else { return };
                        add(&ctx.stats.received, data.len() as u64);
                        stash.entry(*cap.time()).or_insert_with(|| (cap, Vec::new())).1.append(data);
                    });
                    let Some(producer) = producer.as_ref() else { return };
                    let context = producer.context();
                    let f = frontier_min(frontier).unwrap_or(Time::MAX);
                    while let Some(entry) = stash.first_entry() {
                        if *entry.key() >= f {
                            break;
                        }
                        let time = *entry.key();
                        let (cap, batch) = entry.remove();
                        if !ctx.resume.writes(time) {
                            continue;
                        }
                        *context.pending.lock().unwrap_or_else(|e| e.into_inner()).entry(time).or_default() +=
                            batch.len() as u64;
                        for sample in &batch {
                            key.clear();
                            key.extend_from_slice(sample.series.to_string().as_bytes());
                            payload.clear();
                            tidemark_codecs::encode(config.format, sample, &mut payload);
                            if let Err(error) = send(producer, &config.topic, time, Some(&key), &payload) {
                                let classified = classify(&error);
                                if !classified.retryable {
                                    add(&ctx.stats.errors, 1);
                                    ctx.failure.fail(&ctx.name, &classified);
                                    return;
                                }
                                ctx.stats.retried(&error.to_string());
                                tracing::warn!(%error, sink = %ctx.name, "Cannot queue a message; sending it again later.");
                                context.failed.lock().unwrap_or_else(|e| e.into_inner()).push((time, Some(key.clone()), payload.clone()));
                            }
                        }
                        held.insert(time, cap);
                    }
                    let failed: Failed = std::mem::take(&mut *context.failed.lock().unwrap_or_else(|e| e.into_inner()));
                    for (time, key, payload) in failed {
                        if send(producer, &config.topic, time, key.as_deref(), &payload).is_err() {
                            context.failed.lock().unwrap_or_else(|e| e.into_inner()).push((time, key, payload));
                        }
                    }
                    let pending = context.pending.lock().unwrap_or_else(|e| e.into_inner());
                    held.retain(|t, _| pending.contains_key(t));
                    drop(pending);
                    if !held.is_empty() {
                        activator.activate_after(Duration::from_millis(10));
                    }
                }
            })
            .container::<Vec<()>>()
    }
}

use std::rc::Rc;
