//! The `redis` sink against a real Redis from `deploy/redis.sh start 16379`
//! (`TIDEMARK_REDIS` points elsewhere); `./deploy/test.sh` starts it.

use tidemark_testkit as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::run_text;
use common::temp_dir;
use common::tumbling;

fn redis_url() -> String {
    let url = std::env::var("TIDEMARK_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:16379/".into());
    let ok = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .is_ok();
    assert!(
        ok,
        "no Redis at {url}: start one with `deploy/redis.sh start 16379` (./deploy/test.sh does), or set TIDEMARK_REDIS"
    );
    url
}

fn connection(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Every key under `prefix` with its content, as text.
fn dump(con: &mut redis::Connection, prefix: &str) -> BTreeMap<String, Vec<String>> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(con)
        .unwrap();
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(con).unwrap();
        let content: Vec<String> = match kind.as_str() {
            "hash" => {
                let mut pairs: Vec<(String, String)> =
                    redis::cmd("HGETALL").arg(&key).query(con).unwrap();
                pairs.sort();
                pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
            }
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(con)
                .unwrap(),
            other => panic!("{key} is a {other}"),
        };
        out.insert(key, content);
    }
    out
}

fn clear(con: &mut redis::Connection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(con)
        .unwrap();
    for key in keys {
        let _: () = redis::cmd("DEL").arg(key).query(con).unwrap();
    }
}

fn series_text(metric: &str, host: &str) -> String {
    format!("{metric}{{host=\"{host}\"}}")
}

#[test]
fn latest_values_history_and_pub_sub_are_right_and_a_replay_changes_nothing() {
    let url = redis_url();
    let prefix = "tidemark-test:redis-window";
    let mut con = connection(&url);
    clear(&mut con, prefix);
    let (hosts, seconds, history) = (30, 200, 3);
    let dir = temp_dir("redis-window");
    let input = dir.join("in.jsonl");
    tumbling::write_input(&input, hosts, seconds);
    let expected = tumbling::expected(hosts, seconds);
    let sink = format!(
        "    type: redis\n    url: \"{url}\"\n    key_prefix: {prefix}\n    history: {history}\n    batch_size: 100\n"
    );
    let text = tumbling::pipeline("redis-window", &input.display().to_string(), &sink);

    // Every message on the channel, read by a subscriber of its own.
    let mut subscriber = connection(&url);
    subscriber
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe(format!("{prefix}:out")).unwrap();
    assert_eq!(run_text(&text, 2).errors, 0);
    let mut published: BTreeMap<(String, String, i64), f64> = BTreeMap::new();
    let mut lines = 0;
    while lines < expected.len() {
        let message = pubsub.get_message().expect("every value published");
        let payload: String = message.get_payload().unwrap();
        for line in payload.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = (
                v["name"].as_str().unwrap().to_owned(),
                v["labels"]["host"].as_str().unwrap().to_owned(),
                v["timestamp"].as_i64().unwrap(),
            );
            assert!(
                published
                    .insert(key, v["value"].as_f64().unwrap())
                    .is_none()
            );
            lines += 1;
        }
    }
    drop(pubsub);
    assert_eq!(published, expected);

    // Latest and history per series, from the from-scratch computation.
    let mut by_series: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for ((metric, host, t), v) in &expected {
        by_series
            .entry((metric.clone(), host.clone()))
            .or_default()
            .push((*t, *v));
    }
    let index: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}:series"))
        .query(&mut con)
        .unwrap();
    assert_eq!(index.len(), by_series.len());
    for ((metric, host), points) in &by_series {
        let text = series_text(metric, host);
        let id = index
            .iter()
            .find(|(_, s)| **s == text)
            .map(|(id, _)| id.clone())
            .expect("series indexed");
        let latest: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{prefix}:{{{id}}}:latest"))
            .query(&mut con)
            .unwrap();
        let (t, v) = points.last().unwrap();
        assert_eq!(latest["t"], t.to_string(), "{text}");
        assert_eq!(latest["v"].parse::<f64>().unwrap(), *v, "{text}");
        assert_eq!(latest["series"], text);
        let recent: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}:{{{id}}}:history"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut con)
            .unwrap();
        let want: Vec<(String, f64)> = points[points.len() - history..]
            .iter()
            .map(|(t, v)| (format!("{t}:{v}"), *t as f64))
            .collect();
        assert_eq!(recent, want, "{text}");
    }

    // A replay of everything, and of the first half alone (older values):
    // nothing changes.
    let before = dump(&mut con, prefix);
    assert_eq!(run_text(&text, 1).errors, 0);
    assert_eq!(dump(&mut con, prefix), before);
    tumbling::write_input(&input, hosts, seconds / 2);
    assert_eq!(run_text(&text, 2).errors, 0);
    assert_eq!(dump(&mut con, prefix), before);
}

#[test]
fn ttl_expires_keys_and_history_zero_keeps_only_latest() {
    let url = redis_url();
    let prefix = "tidemark-test:redis-ttl";
    let mut con = connection(&url);
    clear(&mut con, prefix);
    let dir = temp_dir("redis-ttl");
    let input = dir.join("in.jsonl");
    tumbling::write_input(&input, 5, 30);
    let sink = format!(
        "    type: redis\n    url: \"{url}\"\n    key_prefix: {prefix}\n    history: 0\n    ttl: 1h\n    channel: \"off\"\n"
    );
    let text = tumbling::pipeline("redis-ttl", &input.display().to_string(), &sink);
    assert_eq!(run_text(&text, 1).errors, 0);
    let keys = dump(&mut con, prefix);
    // 5 hosts x 3 aggregates, latest only, and the index.
    assert_eq!(keys.len(), 16, "{keys:?}");
    assert!(
        keys.keys()
            .all(|k| k.ends_with(":latest") || k.ends_with(":series"))
    );
    for key in keys.keys().filter(|k| k.ends_with(":latest")) {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{key}: {ttl}");
    }
}
