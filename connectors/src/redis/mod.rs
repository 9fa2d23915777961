//! Redis: the `redis` sink, for live state that applications read in a
//! millisecond: the latest value of every series, its recent values, and a
//! pub/sub channel per sink (key layout in [`service`] and
//! `docs/sinks/redis.md`).

mod config;
mod service;
mod sink;

pub use config::{RedisSink, RedisSinkConfig};

samples_sink!(RedisSinkConfig => RedisSink, holdback: |_| 0, serves_live: false, touches: RedisSink::touches);
