//! The tables the `timescaledb` sink manages, created and migrated
//! idempotently under an advisory lock (every worker of every process runs
//! this when it connects; the first does the work, the others find it done).
//!
//! `<schema>.tidemark_schema` records, per samples table, the schema
//! version applied, the layout chosen (a TimescaleDB hypertable or a
//! natively range-partitioned table) and, for the latter, the partition
//! width, which is fixed once the table exists.

use std::time::Duration;

use tokio_postgres::Client;

use super::config::{Extension, TimescaleSink};
use crate::batch::WriteError;

/// The schema version this build writes.
pub(crate) const VERSION: i32 = 1;

/// How the samples table is partitioned by time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A TimescaleDB hypertable (chunks, compression and retention
    /// policies).
    Hypertable,
    /// PostgreSQL's `PARTITION BY RANGE (time)`, partitions of this many
    /// milliseconds, created by the sink before it writes into them.
    Partitioned(i64),
}

/// `schema.name`.
pub(crate) fn qualified(schema: &str, name: &str) -> String {
    format!("{schema}.{name}")
}

fn interval(d: Duration) -> String {
    format!("INTERVAL '{} seconds'", d.as_secs())
}

/// Creates or migrates the tables and reconciles the policies; returns the
/// layout to write with.
pub(crate) async fn setup(client: &mut Client, c: &TimescaleSink) -> Result<Layout, WriteError> {
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", c.schema))
        .await?;
    let timescale = match c.extension {
        Extension::Disabled => None,
        Extension::Auto | Extension::Required => extension(client, c).await?,
    };
    let tx = client.transaction().await?;
    let key = format!("tidemark {}.{}", c.schema, c.table);
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
        .await?;
    let registry = qualified(&c.schema, "tidemark_schema");
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {registry} (
            samples_table text PRIMARY KEY,
            version integer NOT NULL,
            layout text NOT NULL,
            partition_ms bigint,
            updated_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let row = tx
        .query_opt(
            &format!(
                "SELECT version, layout, partition_ms FROM {registry} WHERE samples_table = $1"
            ),
            &[&c.table],
        )
        .await?;
    let layout = match &row {
        Some(r) if r.get::<_, String>(1) == "hypertable" => Layout::Hypertable,
        Some(r) => Layout::Partitioned(r.get::<_, Option<i64>>(2).unwrap_or(86_400_000)),
        None if timescale.is_some() => Layout::Hypertable,
        None => Layout::Partitioned(c.chunk_interval.as_millis() as i64),
    };
    let version = row.as_ref().map_or(0, |r| r.get::<_, i32>(0));
    if version > VERSION {
        return Err(format!(
            "{registry} says {} is at schema version {version}, newer than this Tidemark's {VERSION}; upgrade Tidemark",
            c.table
        )
        .into());
    }
    if layout == Layout::Hypertable && timescale.is_none() {
        return Err(format!(
            "{} is a TimescaleDB hypertable but the timescaledb extension is not available",
            c.table
        )
        .into());
    }
    if version < 1 {
        create(&tx, c, layout).await?;
    }
    if layout == Layout::Hypertable {
        policies(&tx, c).await?;
    }
    let (name, width) = match layout {
        Layout::Hypertable => ("hypertable", None),
        Layout::Partitioned(ms) => ("partitioned", Some(ms)),
    };
    tx.execute(
        &format!(
            "INSERT INTO {registry} (samples_table, version, layout, partition_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (samples_table) DO UPDATE SET version = EXCLUDED.version, updated_at = now()
             WHERE {registry}.version <> EXCLUDED.version"
        ),
        &[&c.table, &VERSION, &name, &width],
    )
    .await?;
    tx.commit().await?;
    match (layout, timescale) {
        (Layout::Hypertable, Some(v)) => {
            tracing::info!(table = %c.table, timescaledb = %v, "Writing to a TimescaleDB hypertable.")
        }
        (_, _) => tracing::info!(
            table = %c.table,
            "TimescaleDB is not in use; writing to a table with native PostgreSQL range partitions (no compression; retention drops whole partitions)."
        ),
    }
    Ok(layout)
}

/// The TimescaleDB version, creating the extension where it is available
/// but not yet created; `None` where it cannot be used (an error if it is
/// required).
async fn extension(client: &Client, c: &TimescaleSink) -> Result<Option<String>, WriteError> {
    let row = client
        .query_one(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await?;
    let (installed, available): (Option<String>, bool) = (row.get(0), row.get(1));
    if installed.is_some() {
        return Ok(installed);
    }
    let created = if available {
        match client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await
        {
            Ok(()) => {
                let row = client
                    .query_one(
                        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
                        &[],
                    )
                    .await?;
                Some(row.get::<_, String>(0))
            }
            Err(error) if c.extension == Extension::Auto => {
                tracing::warn!(%error, "TimescaleDB is available but CREATE EXTENSION failed.");
                None
            }
            Err(error) => return Err(error.into()),
        }
    } else {
        None
    };
    if created.is_none() && c.extension == Extension::Required {
        return Err("timescaledb: required, but the server has no timescaledb extension (pg_available_extensions)".into());
    }
    Ok(created)
}

async fn create(
    tx: &tokio_postgres::Transaction<'_>,
    c: &TimescaleSink,
    layout: Layout,
) -> Result<(), WriteError> {
    let series = qualified(&c.schema, &c.series_table);
    let samples = qualified(&c.schema, &c.table);
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {series} (
            series_id bigint PRIMARY KEY,
            metric text NOT NULL,
            labels jsonb NOT NULL,
            first_seen timestamptz NOT NULL DEFAULT now());
         CREATE INDEX IF NOT EXISTS {s}_metric_idx ON {series} (metric);
         CREATE INDEX IF NOT EXISTS {s}_labels_idx ON {series} USING gin (labels jsonb_path_ops);",
        s = c.series_table
    ))
    .await?;
    let columns = "time timestamptz NOT NULL, series_id bigint NOT NULL, value double precision NOT NULL, \
                   PRIMARY KEY (series_id, time)";
    match layout {
        Layout::Hypertable => {
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {samples} ({columns});
                 SELECT create_hypertable('{samples}', 'time', chunk_time_interval => {}, if_not_exists => TRUE);",
                interval(c.chunk_interval)
            ))
            .await?;
        }
        Layout::Partitioned(_) => {
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {samples} ({columns}) PARTITION BY RANGE (time);
                 CREATE INDEX IF NOT EXISTS {t}_time_idx ON {samples} (time DESC);",
                t = c.table
            ))
            .await?;
        }
    }
    tx.batch_execute(&format!(
        "CREATE OR REPLACE VIEW {view} AS
            SELECT s.time, s.series_id, r.metric, r.labels, s.value
            FROM {samples} s JOIN {series} r USING (series_id);",
        view = qualified(&c.schema, &format!("{}_labeled", c.table))
    ))
    .await?;
    Ok(())
}

/// Compression and retention policies, set to what the configuration says
/// on every start (a changed setting takes effect on restart).
async fn policies(
    tx: &tokio_postgres::Transaction<'_>,
    c: &TimescaleSink,
) -> Result<(), WriteError> {
    let samples = qualified(&c.schema, &c.table);
    tx.batch_execute(&format!(
        "SELECT remove_compression_policy('{samples}', if_exists => TRUE);
         SELECT remove_retention_policy('{samples}', if_exists => TRUE);"
    ))
    .await?;
    if let Some(after) = c.compress_after {
        let enabled: bool = tx
            .query_one(
                "SELECT coalesce(bool_or(compression_enabled), false) FROM timescaledb_information.hypertables
                 WHERE hypertable_schema = $1 AND hypertable_name = $2",
                &[&c.schema, &c.table],
            )
            .await?
            .get(0);
        if !enabled {
            tx.batch_execute(&format!(
                "ALTER TABLE {samples} SET (timescaledb.compress, timescaledb.compress_segmentby = 'series_id', \
                 timescaledb.compress_orderby = 'time DESC')"
            ))
            .await?;
        }
        tx.batch_execute(&format!(
            "SELECT add_compression_policy('{samples}', {});",
            interval(after)
        ))
        .await?;
    }
    if let Some(keep) = c.retention {
        tx.batch_execute(&format!(
            "SELECT add_retention_policy('{samples}', {});",
            interval(keep)
        ))
        .await?;
    }
    Ok(())
}

/// Makes sure the partitions holding `starts` (partition starts, ms) exist.
pub(crate) async fn partitions(
    client: &mut Client,
    c: &TimescaleSink,
    width: i64,
    starts: &[i64],
) -> Result<(), WriteError> {
    let tx = client.transaction().await?;
    let key = format!("tidemark {}.{}", c.schema, c.table);
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
        .await?;
    let samples = qualified(&c.schema, &c.table);
    let mut sql = String::new();
    for &start in starts {
        let (Some(from), Some(to)) = (timestamp(start), timestamp(start.saturating_add(width)))
        else {
            return Err(
                format!("a sample at {start} ms is outside PostgreSQL's time range").into(),
            );
        };
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF {samples} FOR VALUES FROM ('{from}') TO ('{to}');\n",
            qualified(&c.schema, &partition_name(&c.table, start)),
        ));
    }
    tx.batch_execute(&sql).await?;
    tx.commit().await?;
    Ok(())
}

/// Drops the partitions that end before `now - retention`; returns how many.
pub(crate) async fn drop_expired(
    client: &Client,
    c: &TimescaleSink,
    width: i64,
    retention: Duration,
) -> Result<usize, WriteError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE n.nspname = $1 AND p.relname = $2",
            &[&c.schema, &c.table],
        )
        .await?;
    let cutoff = chrono::Utc::now().timestamp_millis() - retention.as_millis() as i64;
    let mut dropped = 0;
    for row in rows {
        let name: String = row.get(0);
        let Some(start) = partition_start(&c.table, &name) else {
            continue;
        };
        if start.saturating_add(width) <= cutoff {
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {}",
                    qualified(&c.schema, &name)
                ))
                .await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

fn timestamp(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string())
}

/// `<table>_p<YYYYMMDD>_<HHMMSS>`, from the partition's start.
pub(crate) fn partition_name(table: &str, start: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(start).unwrap_or_default();
    format!("{table}_p{}", t.format("%Y%m%d_%H%M%S"))
}

fn partition_start(table: &str, name: &str) -> Option<i64> {
    let stamp = name.strip_prefix(table)?.strip_prefix("_p")?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").ok()?;
    Some(t.and_utc().timestamp_millis())
}

/// The start of the partition holding `ms`.
pub(crate) fn partition_of(ms: i64, width: i64) -> i64 {
    ms.div_euclid(width) * width
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let day = 86_400_000;
        let start = partition_of(1_795_600_000_123, day);
        assert_eq!(start, 1_795_564_800_000);
        let name = partition_name("tidemark_samples", start);
        assert_eq!(name, "tidemark_samples_p20261125_000000");
        assert_eq!(partition_start("tidemark_samples", &name), Some(start));
        assert_eq!(partition_start("other", &name), None);
        assert_eq!(partition_of(-1, day), -day);
    }
}
