//! The `timescaledb` sink's writer: one connection per worker, schema set
//! up on every (re)connection, batches de-duplicated and upserted.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{ToSql, Type};

use tidemark_engine::Sample;

use super::config::{Method, TimescaleSink};
use super::schema::{self, Layout, qualified};
use tidemark_engine::error::{ComponentError, Fault};

use crate::batch::{BatchWriter, WriteError};

/// How often a plain-PostgreSQL table's expired partitions are dropped.
const RETENTION_CHECK: Duration = Duration::from_secs(3600);

pub(crate) struct Writer {
    config: TimescaleSink,
    password: Option<String>,
    client: Option<(Client, Layout)>,
    /// Series rows this writer has written (cleared on reconnection).
    known: HashSet<u64>,
    /// Partitions known to exist (plain PostgreSQL).
    partitions: HashSet<i64>,
    retention_checked: Option<Instant>,
    sql: Sql,
}

struct Sql {
    series: String,
    insert: String,
    stage: String,
    upsert_staged: String,
    copy: String,
}

impl Writer {
    pub(crate) fn new(config: TimescaleSink) -> Writer {
        let password = config
            .password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        let series = qualified(&config.schema, &config.series_table);
        let samples = qualified(&config.schema, &config.table);
        // Writing the same value again changes nothing (no dead tuple).
        let conflict = format!(
            "ON CONFLICT (series_id, time) DO UPDATE SET value = EXCLUDED.value \
             WHERE {samples}.value IS DISTINCT FROM EXCLUDED.value"
        );
        let sql = Sql {
            series: format!(
                "INSERT INTO {series} (series_id, metric, labels)
                 SELECT id, metric, labels::jsonb FROM unnest($1::int8[], $2::text[], $3::text[]) AS u(id, metric, labels)
                 ON CONFLICT (series_id) DO NOTHING"
            ),
            insert: format!(
                "INSERT INTO {samples} (time, series_id, value)
                 SELECT * FROM unnest($1::timestamptz[], $2::int8[], $3::float8[]) {conflict}"
            ),
            stage: "CREATE TEMPORARY TABLE IF NOT EXISTS tidemark_stage \
                    (time timestamptz NOT NULL, series_id bigint NOT NULL, value double precision NOT NULL) \
                    ON COMMIT DELETE ROWS"
                .into(),
            upsert_staged: format!(
                "INSERT INTO {samples} (time, series_id, value) SELECT time, series_id, value FROM tidemark_stage {conflict}"
            ),
            copy: "COPY tidemark_stage (time, series_id, value) FROM STDIN (FORMAT binary)".into(),
        };
        Writer {
            config,
            password,
            client: None,
            known: HashSet::new(),
            partitions: HashSet::new(),
            retention_checked: None,
            sql,
        }
    }

    async fn connect(&mut self) -> Result<(), WriteError> {
        let mut client = connect(&self.config, self.password.as_deref()).await?;
        let layout = schema::setup(&mut client, &self.config).await?;
        self.client = Some((client, layout));
        Ok(())
    }
}

/// Connects to the sink's database (TLS as the config asks), the
/// connection driven by a task on the current runtime.
pub(crate) async fn connect(
    config: &TimescaleSink,
    password: Option<&str>,
) -> Result<Client, WriteError> {
    let mut pg: tokio_postgres::Config = config.url.parse()?;
    if let Some(p) = password {
        pg.password(p);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("tidemark");
    }
    pg.connect_timeout(Duration::from_secs(10));
    // `CREATE ... IF NOT EXISTS` notices are not news.
    if pg.get_options().is_none() {
        pg.options("-c client_min_messages=warning");
    }
    let mut tls = SslConnector::builder(SslMethod::tls())?;
    match &config.ca_file {
        Some(ca) => {
            tls.set_ca_file(ca)
                .map_err(|e| format!("ca_file {ca}: {e}"))?;
            pg.ssl_mode(SslMode::Require);
        }
        // As libpq's prefer and require: encrypted, not verified.
        None => tls.set_verify(SslVerifyMode::NONE),
    }
    let (client, connection) = pg.connect(MakeTlsConnector::new(tls.build())).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "PostgreSQL connection closed.");
        }
    });
    Ok(client)
}

/// One row per series and timestamp, the last of the batch winning, sorted
/// by series and time.
fn dedup(batch: &[Sample]) -> Vec<&Sample> {
    let mut rows: Vec<(usize, &Sample)> = batch.iter().enumerate().collect();
    rows.sort_unstable_by_key(|(i, s)| (s.series.id(), s.timestamp, *i));
    let mut out: Vec<&Sample> = Vec::with_capacity(rows.len());
    for (_, s) in rows {
        match out.last_mut() {
            Some(last) if last.series.id() == s.series.id() && last.timestamp == s.timestamp => {
                *last = s
            }
            _ => out.push(s),
        }
    }
    out
}

/// PostgreSQL text cannot hold NUL; the series row shows U+FFFD instead
/// (the series id is still that of the original labels).
fn text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

fn labels_json(sample: &Sample) -> String {
    let map: serde_json::Map<String, serde_json::Value> = sample
        .series
        .tags()
        .map(|(k, v)| (text(k), serde_json::Value::String(text(v))))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn time(ms: i64) -> Result<DateTime<Utc>, WriteError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| OutOfRange(ms).into())
}

/// What a retry can mend, by the error's SQLSTATE class: authorization
/// (`28`), a database that does not exist (`3D`) and missing privileges
/// (`42501`) are the configuration's fault; data exceptions (`22`) and
/// constraint violations (`23`) are ours. Everything else may heal: lost
/// connections, a server shutting down or out of resources, and statement
/// errors of class `42` after a reconnect (a table dropped meanwhile, which
/// the schema check creates again; a prepared statement a pooler or PGlite
/// kept from the last connection, `42P05`).
fn classify(error: WriteError) -> ComponentError {
    let code = error
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .map(|c| c.code().to_owned());
    let message = error.to_string();
    let classified = match code.as_deref() {
        Some(c) if c.starts_with("28") || c.starts_with("3D") || c == "42501" => {
            ComponentError::permanent(Fault::Config, message)
        }
        Some(c) if c.starts_with("22") || c.starts_with("23") => {
            ComponentError::permanent(Fault::Internal, message)
        }
        _ if error.is::<OutOfRange>() => ComponentError::permanent(Fault::Internal, message),
        _ => ComponentError::transient(Fault::External, message),
    };
    classified.caused_by(error)
}

/// A timestamp PostgreSQL cannot store.
#[derive(Debug, thiserror::Error)]
#[error("timestamp {0} ms is out of range")]
struct OutOfRange(i64);

impl BatchWriter for Writer {
    async fn write(&mut self, batch: &[Sample]) -> Result<(), ComponentError> {
        self.write_batch(batch).await.map_err(classify)
    }

    fn reset(&mut self) {
        self.client = None;
        self.known.clear();
        self.partitions.clear();
    }
}

impl Writer {
    async fn write_batch(&mut self, batch: &[Sample]) -> Result<(), WriteError> {
        if self.client.is_none() {
            self.connect().await?;
        }
        let rows = dedup(batch);
        let Some((client, layout)) = self.client.as_mut() else {
            return Err("not connected".into());
        };
        let layout = *layout;

        let fresh: Vec<&Sample> = {
            let mut seen = HashSet::new();
            rows.iter()
                .copied()
                .filter(|s| !self.known.contains(&s.series.id().0) && seen.insert(s.series.id().0))
                .collect()
        };
        if !fresh.is_empty() {
            let ids: Vec<i64> = fresh.iter().map(|s| s.series.id().0 as i64).collect();
            let metrics: Vec<String> = fresh.iter().map(|s| text(s.series.name())).collect();
            let labels: Vec<String> = fresh.iter().map(|s| labels_json(s)).collect();
            client
                .execute(&self.sql.series, &[&ids, &metrics, &labels])
                .await?;
        }

        if let Layout::Partitioned(width) = layout {
            let mut starts: Vec<i64> = rows
                .iter()
                .map(|s| schema::partition_of(s.timestamp, width))
                .filter(|p| !self.partitions.contains(p))
                .collect();
            starts.sort_unstable();
            starts.dedup();
            if !starts.is_empty() {
                schema::partitions(client, &self.config, width, &starts).await?;
                self.partitions.extend(starts);
            }
            if let Some(keep) = self.config.retention
                && self
                    .retention_checked
                    .is_none_or(|t| t.elapsed() >= RETENTION_CHECK)
            {
                let dropped = schema::drop_expired(client, &self.config, width, keep).await?;
                if dropped > 0 {
                    tracing::info!(table = %self.config.table, dropped, "Dropped partitions past the retention period.");
                    self.partitions.clear();
                }
                self.retention_checked = Some(Instant::now());
            }
        }

        match self.config.method {
            Method::Insert => {
                let times = rows
                    .iter()
                    .map(|s| time(s.timestamp))
                    .collect::<Result<Vec<_>, _>>()?;
                let ids: Vec<i64> = rows.iter().map(|s| s.series.id().0 as i64).collect();
                let values: Vec<f64> = rows.iter().map(|s| s.value).collect();
                client
                    .execute(&self.sql.insert, &[&times, &ids, &values])
                    .await?;
            }
            Method::Copy => {
                let tx = client.transaction().await?;
                tx.batch_execute(&self.sql.stage).await?;
                let sink = tx.copy_in(&self.sql.copy).await?;
                let writer =
                    BinaryCopyInWriter::new(sink, &[Type::TIMESTAMPTZ, Type::INT8, Type::FLOAT8]);
                let mut writer = std::pin::pin!(writer);
                for s in &rows {
                    let (t, id) = (time(s.timestamp)?, s.series.id().0 as i64);
                    let row: [&(dyn ToSql + Sync); 3] = [&t, &id, &s.value];
                    writer.as_mut().write(&row).await?;
                }
                writer.as_mut().finish().await?;
                tx.execute(&self.sql.upsert_staged, &[]).await?;
                tx.commit().await?;
            }
        }
        self.known.extend(fresh.iter().map(|s| s.series.id().0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_engine::Series;

    #[test]
    fn dedup_keeps_the_last_of_a_series_and_timestamp() {
        let a = Series::new("m", [("host", "a")]);
        let b = Series::new("m", [("host", "b")]);
        let batch = vec![
            Sample::new(a.clone(), 10, 1.0),
            Sample::new(b.clone(), 10, 2.0),
            Sample::new(a.clone(), 20, 3.0),
            Sample::new(a.clone(), 10, 4.0),
        ];
        let mut got: Vec<(String, i64, f64)> = dedup(&batch)
            .iter()
            .map(|s| (s.series.to_string(), s.timestamp, s.value))
            .collect();
        got.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
        assert_eq!(
            got,
            vec![
                (a.to_string(), 10, 4.0),
                (a.to_string(), 20, 3.0),
                (b.to_string(), 10, 2.0)
            ]
        );
    }

    #[test]
    fn labels_leave_out_the_name_and_nul() {
        let s = Sample::new(Series::new("m", [("k", "a\0b")]), 0, 0.0);
        assert_eq!(labels_json(&s), r#"{"k":"a�b"}"#);
    }
}
