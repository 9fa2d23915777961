//! The `redis` sink's writer: a connection manager (it re-connects by
//! itself), one script call per 200 series of a batch, all pipelined in
//! one round trip.
//!
//! Keys, with `P` the key prefix and `ID` the series id (16 hex digits,
//! also the Redis Cluster hash tag, so a series' keys share a slot):
//!
//! - `P:{ID}:latest`: hash `t` (ms), `v` (value), `series` (its text);
//!   only ever moved forward in time;
//! - `P:{ID}:history`: sorted set scored by timestamp, members `<t>:<v>`,
//!   one per timestamp, the newest `history` kept;
//! - `P:series`: hash from series id to series text (for discovery);
//! - channel `P:<sink>`: every batch written, as JSON lines.
//!
//! Every write is absolute (set, not increment), so a replay is harmless.

use std::collections::HashSet;

use redis::aio::ConnectionManager;

use tidemark_codecs::json::encode_json;
use tidemark_engine::Sample;

use super::config::RedisSink;
use tidemark_engine::error::{ComponentError, Fault};

use crate::batch::{BatchWriter, WriteError};

/// Several series in one call. KEYS: latest and history of each series.
/// ARGV: history length, ttl ms (0: none), then per series its text, its
/// number of points, and their timestamps and values.
///
/// A point newer than the stored latest cannot share its timestamp with a
/// point in the history, so only older points (a replay, a correction)
/// pay for removing one.
const SCRIPT: &str = r"
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local a = 3
for k = 1, #KEYS, 2 do
  local latest, history = KEYS[k], KEYS[k + 1]
  local text = ARGV[a]
  local count = tonumber(ARGV[a + 1])
  a = a + 2
  local stored = tonumber(redis.call('HGET', latest, 't'))
  local lt = stored
  local best = nil
  for i = a, a + 2 * count - 1, 2 do
    local t = tonumber(ARGV[i])
    if n > 0 then
      if stored == nil or t <= stored then
        redis.call('ZREMRANGEBYSCORE', history, t, t)
      end
      redis.call('ZADD', history, t, ARGV[i] .. ':' .. ARGV[i + 1])
    end
    if lt == nil or t >= lt then
      lt = t
      best = i
    end
  end
  a = a + 2 * count
  if best then
    redis.call('HSET', latest, 't', ARGV[best], 'v', ARGV[best + 1], 'series', text)
  end
  if n > 0 then
    redis.call('ZREMRANGEBYRANK', history, 0, -(n + 1))
  end
  if ttl > 0 then
    redis.call('PEXPIRE', latest, ttl)
    if n > 0 then redis.call('PEXPIRE', history, ttl) end
  end
end
return 0
";

/// Series per script call.
const SERIES_PER_CALL: usize = 200;

pub(crate) struct Writer {
    config: RedisSink,
    prefix: String,
    channel: Option<String>,
    password: Option<String>,
    connection: Option<ConnectionManager>,
    script: redis::Script,
    /// Series in `P:series` already (cleared on errors).
    known: HashSet<u64>,
    order: Vec<usize>,
    payload: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(config: RedisSink, pipeline: &str, sink: &str) -> Writer {
        let prefix = config
            .key_prefix
            .clone()
            .unwrap_or_else(|| format!("tidemark:{pipeline}"));
        let channel = match config.channel.as_deref() {
            Some("off") => None,
            Some(c) => Some(c.to_owned()),
            None => Some(format!("{prefix}:{sink}")),
        };
        let password = config
            .password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        Writer {
            config,
            prefix,
            channel,
            password,
            connection: None,
            script: redis::Script::new(SCRIPT),
            known: HashSet::new(),
            order: Vec::new(),
            payload: Vec::new(),
        }
    }

    async fn connect(&mut self) -> Result<ConnectionManager, WriteError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.config.url.as_str())?;
        if let Some(p) = &self.password {
            let settings = info.redis_settings().clone().set_password(p.clone());
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)?;
        let mut manager = ConnectionManager::new(client).await?;
        self.script.load_async(&mut manager).await?;
        Ok(manager)
    }
}

/// What a retry can mend: a refused password or permission, an invalid
/// URL and a key of another type under the sink's prefix
/// (`WRONGTYPE`) are the configuration's fault and permanent; the rest
/// (connections, a server loading, out of memory, a failover) may heal.
fn classify(error: WriteError) -> ComponentError {
    let message = error.to_string();
    let permanent = error.downcast_ref::<redis::RedisError>().is_some_and(|e| {
        matches!(
            e.kind(),
            redis::ErrorKind::AuthenticationFailed
                | redis::ErrorKind::InvalidClientConfig
                | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        ) || e.code() == Some("WRONGTYPE")
    });
    let classified = if permanent {
        ComponentError::permanent(Fault::Config, message)
    } else {
        ComponentError::transient(Fault::External, message)
    };
    classified.caused_by(error)
}

impl BatchWriter for Writer {
    async fn write(&mut self, batch: &[Sample]) -> Result<(), ComponentError> {
        self.write_batch(batch).await.map_err(classify)
    }

    fn reset(&mut self) {
        // A new connection re-loads the script (a restarted Redis has
        // forgotten it).
        self.connection = None;
        self.known.clear();
    }
}

impl Writer {
    async fn write_batch(&mut self, batch: &[Sample]) -> Result<(), WriteError> {
        let mut connection = match self.connection.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        // Group by series, keeping each series' samples in batch order.
        self.order.clear();
        self.order.extend(0..batch.len());
        self.order.sort_by_key(|&i| batch[i].series.id());
        let hash = self.script.get_hash().to_owned();
        let mut pipe = redis::pipe();
        let mut fresh = Vec::new();
        let history = self.config.history.to_string();
        let ttl = self.config.ttl.map_or(0, |d| d.as_millis()).to_string();
        let groups: Vec<&[usize]> = self
            .order
            .chunk_by(|&a, &b| batch[a].series.id() == batch[b].series.id())
            .collect();
        for call in groups.chunks(SERIES_PER_CALL) {
            let cmd = pipe.cmd("EVALSHA").arg(&hash).arg(2 * call.len());
            for group in call {
                let id = batch[group[0]].series.id();
                cmd.arg(format!("{}:{{{id}}}:latest", self.prefix))
                    .arg(format!("{}:{{{id}}}:history", self.prefix));
            }
            cmd.arg(&history).arg(&ttl);
            for group in call {
                let series = &batch[group[0]].series;
                let text = series.to_string();
                cmd.arg(&text).arg(group.len());
                for &i in *group {
                    cmd.arg(batch[i].timestamp).arg(batch[i].value.to_string());
                }
                if !self.known.contains(&series.id().0) {
                    fresh.push((series.id(), text));
                }
            }
            cmd.ignore();
        }
        if !fresh.is_empty() {
            let index = pipe.cmd("HSET").arg(format!("{}:series", self.prefix));
            for (id, text) in &fresh {
                index.arg(id.to_string()).arg(text);
            }
            index.ignore();
        }
        if let Some(channel) = &self.channel {
            self.payload.clear();
            for s in batch {
                encode_json(s, &mut self.payload)?;
            }
            pipe.cmd("PUBLISH").arg(channel).arg(&self.payload).ignore();
        }
        pipe.query_async::<()>(&mut connection).await?;
        self.known.extend(fresh.into_iter().map(|(id, _)| id.0));
        self.connection = Some(connection);
        Ok(())
    }
}
