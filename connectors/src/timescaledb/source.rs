//! The `timescaledb` source: replays what a `timescaledb` sink wrote, in
//! event-time order, as fast as the database hands it over.
//!
//! Every worker reads its share of the series (by series id, so every
//! worker picks the same split) on a thread of its own, a page of rows at a
//! time in `(time, series_id)` order: each page starts after the last row
//! of the one before (keyset paging, so a page costs the same at the end of
//! a long range as at its start, and nothing is read twice or skipped).
//! A series' metric and labels are read from the series table the first
//! time one of its rows comes. Each page is handed on sorted, up to its last
//! time (the rows at that time wait for the next page, so a hand-over never
//! splits the rows of one time), with that time as the floor of what
//! follows ([`crate::replay`]), so windows downstream close as the replay
//! goes. Statements are unnamed (`query_typed`), as the query API's
//! reader's are.
//!
//! Restored from a checkpoint, each series is read on from the position of
//! the worker that read it in the run that wrote the checkpoint (series are
//! split by id, so the split of any earlier number of workers is known).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use tokio_postgres::Client;
use tokio_postgres::types::{ToSql, Type};

use tidemark_engine::component::SourceContext;
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::runtime::{PipelineScope, SampleStream};
use tidemark_engine::stats::add;
use tidemark_engine::{Sample, Series};

use super::config::TimescaleSource;
use super::schema::qualified;
use super::service::connect;
use crate::replay::{Feed, Worker, replay};

/// The earliest time asked of the database (about 4700 BC; PostgreSQL's
/// timestamps start in 4713 BC).
const EARLIEST: i64 = -210_000_000_000_000;
/// The latest (about AD 250 000; chrono's and PostgreSQL's reach further).
const LATEST: i64 = 7_700_000_000_000_000;

fn stamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms.clamp(EARLIEST, LATEST)).unwrap_or_default()
}

/// What a reader thread needs.
struct Reader {
    config: TimescaleSource,
    password: Option<String>,
    at: Worker,
}

fn failed(what: &str, error: &tokio_postgres::Error) -> ComponentError {
    let text = match std::error::Error::source(error) {
        Some(cause) => format!("{what}: {error}: {cause}"),
        None => format!("{what}: {error}"),
    };
    ComponentError::permanent(Fault::External, text)
}

impl Reader {
    async fn read(self, feed: Feed) -> Result<(), ComponentError> {
        let tables = &self.config.tables;
        let samples = qualified(&tables.schema, &tables.table);
        let series = qualified(&tables.schema, &tables.series_table);
        let client = connect(tables, self.password.as_deref())
            .await
            .map_err(|e| {
                ComponentError::permanent(
                    Fault::External,
                    format!("cannot connect to the database of {samples}: {e}"),
                )
            })?;
        for table in [&samples, &series] {
            let found = exists(&client, table)
                .await
                .map_err(|e| failed(&format!("cannot look for {table}"), &e))?;
            if found.is_none() {
                return self.at.nothing_there(format!(
                    "there is no table {table} in that database (nothing was ever written there: check url, schema, table and series_table)"
                ));
            }
        }
        let share = "(($3::int8 = 1) OR ((series_id % $3) + $3) % $3 = $4)";
        // Restored: every worker of the run before had handed on each of
        // its series' samples before its position (ms), and none after.
        let resumed: Option<Vec<i64>> = feed.resumed().map(|p| {
            p.iter()
                .map(|&m| m.max(self.config.from).clamp(EARLIEST, LATEST))
                .collect()
        });
        let on_from = |positions: usize| {
            let (p, n) = (positions, positions + 1);
            format!(
                " AND time >= to_timestamp((${p}::int8[])[((series_id % ${n}) + ${n}) % ${n} + 1]::float8 / 1000.0)"
            )
        };
        let (resume_first, resume_next) = match &resumed {
            Some(_) => (on_from(6), on_from(7)),
            None => (String::new(), String::new()),
        };
        let first = format!(
            "SELECT time, series_id, value FROM {samples} \
             WHERE time >= $1 AND time < $2 AND {share}{resume_first} \
             ORDER BY time, series_id LIMIT $5"
        );
        let next = format!(
            "SELECT time, series_id, value FROM {samples} \
             WHERE (time, series_id) > ($1, $6) AND time < $2 AND {share}{resume_next} \
             ORDER BY time, series_id LIMIT $5"
        );
        let lookup = format!(
            "SELECT series_id, metric, labels::text FROM {series} WHERE series_id = ANY($1)"
        );
        let (peers, index) = (self.at.peers as i64, self.at.index as i64);
        let limit = self.config.page_rows as i64;
        let to = stamp(self.config.to);
        let mut known: FxHashMap<i64, Series> = FxHashMap::default();
        let earliest = feed.earliest(self.config.from);
        let (positions, old_peers) = match &resumed {
            Some(p) => (p.clone(), p.len() as i64),
            None => (Vec::new(), 1),
        };
        let mut after: (DateTime<Utc>, i64) = (stamp(earliest), 0);
        let mut started = false;
        // Rows at the last time of a full page, held for the next one.
        let mut pending: Vec<Sample> = Vec::new();
        loop {
            if self.at.shutdown.is_triggered() {
                return Ok(());
            }
            let (sql, id) = if started {
                (&next, after.1)
            } else {
                (&first, 0)
            };
            let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
                (&after.0, Type::TIMESTAMPTZ),
                (&to, Type::TIMESTAMPTZ),
                (&peers, Type::INT8),
                (&index, Type::INT8),
                (&limit, Type::INT8),
            ];
            if started {
                params.push((&id, Type::INT8));
            }
            if resumed.is_some() {
                params.push((&positions, Type::INT8_ARRAY));
                params.push((&old_peers, Type::INT8));
            }
            let rows = client
                .query_typed(sql, &params)
                .await
                .map_err(|e| failed(&format!("cannot read {samples}"), &e))?;
            started = true;
            let full = rows.len() as i64 == limit;
            let mut page: Vec<(i64, i64, f64)> = Vec::with_capacity(rows.len());
            let unexpected = |e: tokio_postgres::Error| {
                failed(
                    &format!("{samples} is not a samples table as the timescaledb sink writes it"),
                    &e,
                )
            };
            for row in &rows {
                let at: DateTime<Utc> = row.try_get(0).map_err(unexpected)?;
                let id: i64 = row.try_get(1).map_err(unexpected)?;
                page.push((
                    at.timestamp_millis(),
                    id,
                    row.try_get(2).map_err(unexpected)?,
                ));
                after = (at, id);
            }
            let mut unknown: Vec<i64> = page
                .iter()
                .map(|(_, id, _)| *id)
                .filter(|id| !known.contains_key(id))
                .collect();
            unknown.sort_unstable();
            unknown.dedup();
            if !unknown.is_empty() {
                self.learn(&client, &lookup, &unknown, &mut known).await?;
            }
            let mut orphans = 0u64;
            for (t, id, v) in page {
                match known.get(&id) {
                    Some(series) => pending.push(Sample::new(series.clone(), t, v)),
                    None => orphans += 1,
                }
            }
            if orphans > 0 {
                add(&self.at.stats.errors, orphans);
                tracing::error!(source = %self.at.name, samples = orphans, table = %series, "Samples whose series is not in the series table were skipped.");
            }
            if !full {
                add(&self.at.stats.received, pending.len() as u64);
                let _ = feed.send_sorted(pending, i64::MAX);
                return Ok(());
            }
            // The rows at the page's last time may go on in the next page:
            // they wait for it.
            let floor = after.0.timestamp_millis();
            let ready = pending.partition_point(|s| s.timestamp < floor);
            add(&self.at.stats.received, ready as u64);
            if !feed.send_sorted(pending.drain(..ready), floor) {
                return Ok(());
            }
        }
    }

    /// Reads the metric and labels of the series `ids` into `known`.
    async fn learn(
        &self,
        client: &Client,
        lookup: &str,
        ids: &[i64],
        known: &mut FxHashMap<i64, Series>,
    ) -> Result<(), ComponentError> {
        let ids = ids.to_vec();
        let rows = client
            .query_typed(lookup, &[(&ids, Type::INT8_ARRAY)])
            .await
            .map_err(|e| failed("cannot read the series table", &e))?;
        let unexpected = |e: tokio_postgres::Error| {
            failed(
                "the series table is not one the timescaledb sink writes",
                &e,
            )
        };
        for row in rows {
            let id: i64 = row.try_get(0).map_err(unexpected)?;
            let metric: String = row.try_get(1).map_err(unexpected)?;
            let labels: String = row.try_get(2).map_err(unexpected)?;
            let labels: BTreeMap<String, String> = serde_json::from_str(&labels).map_err(|e| {
                ComponentError::permanent(
                    Fault::External,
                    format!("series {id} has labels that are not an object of strings: {e}"),
                )
            })?;
            known.insert(id, Series::new(&metric, labels));
        }
        Ok(())
    }
}

/// The table's name if it exists.
async fn exists(client: &Client, table: &str) -> Result<Option<String>, tokio_postgres::Error> {
    let row = client
        .query_typed("SELECT to_regclass($1)::text", &[(&table, Type::TEXT)])
        .await?;
    Ok(row.first().and_then(|r| r.get(0)))
}

impl TimescaleSource {
    /// Builds the source on a worker.
    pub fn build<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
    ) -> SampleStream<'scope> {
        let password = self
            .tables
            .password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        let reader = Reader {
            config: self.clone(),
            password,
            at: Worker::of(&scope, &ctx),
        };
        let thread = format!("timescaledb-{}-{}", ctx.name, reader.at.index);
        replay(scope, ctx, thread, move |feed| reader.read(feed))
    }
}
