//! The `timescaledb` sink's tables as the query API reads them: the tier
//! past a `memory` sink's retention
//! ([`tidemark_engine::history::Archive`]).
//!
//! Selectors are pushed down as SQL: the series table is searched by the
//! metric name and the labels' equality matchers (`labels @> '{...}'`,
//! served by its GIN index), every other matcher is applied here to the
//! rows found (so regular expressions keep PromQL's RE2 meaning), and the
//! samples table is read for those series over the time range, in one
//! query per selector. One connection is kept and made again after an
//! error. Statements are unnamed (`query_typed`): nothing is prepared
//! that a pooler, or PGlite's one shared session, would see twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use promql_parser::label::MatchOp;
use promql_parser::parser::VectorSelector;
use rustc_hash::FxHashMap;
use tokio_postgres::Client;
use tokio_postgres::types::Type;

use tidemark_engine::Series;
use tidemark_engine::history::{Archive, ArchiveError, Found, Wanted};
use tidemark_engine::memstore::{Point, selects};
use tidemark_engine::series::METRIC_NAME_LABEL;

use super::config::TimescaleSink;
use super::schema::qualified;
use super::service::connect;

/// One sink's tables, read back for queries.
pub struct TimescaleArchive {
    config: TimescaleSink,
    password: Option<String>,
    describe: String,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl TimescaleArchive {
    /// The tables the sink `sink` of `pipeline` writes.
    pub fn new(config: &TimescaleSink, pipeline: &str, sink: &str) -> TimescaleArchive {
        let password = config
            .password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        TimescaleArchive {
            describe: format!(
                "{}.{} (pipeline {pipeline}, sink {sink})",
                config.schema, config.table
            ),
            config: config.clone(),
            password,
            client: tokio::sync::Mutex::new(None),
        }
    }

    fn unreadable(&self, what: impl std::fmt::Display) -> ArchiveError {
        ArchiveError::Unreadable(format!(
            "the table {} cannot be read: {what}",
            self.describe
        ))
    }

    /// A database error with its cause (`db error` alone says little).
    fn failed(&self, error: &tokio_postgres::Error) -> ArchiveError {
        match std::error::Error::source(error) {
            Some(cause) => self.unreadable(format!("{error}: {cause}")),
            None => self.unreadable(error),
        }
    }

    async fn read(&self, wanted: &[Wanted], max_points: usize) -> Result<Found, ArchiveError> {
        let mut held = self.client.lock().await;
        if held.as_ref().is_none_or(Client::is_closed) {
            let client = connect(&self.config, self.password.as_deref())
                .await
                .map_err(|e| self.unreadable(e))?;
            *held = Some(client);
        }
        let Some(client) = held.as_ref() else {
            return Ok(Vec::new());
        };
        let answer = self.select(client, wanted, max_points).await;
        if matches!(answer, Err(ArchiveError::Unreadable(_))) {
            // Connect again next time.
            *held = None;
        }
        answer
    }

    async fn select(
        &self,
        client: &Client,
        wanted: &[Wanted],
        max_points: usize,
    ) -> Result<Found, ArchiveError> {
        let series_table = qualified(&self.config.schema, &self.config.series_table);
        let samples_table = qualified(&self.config.schema, &self.config.table);
        let candidates = format!(
            "SELECT series_id, metric, labels::text FROM {series_table} \
             WHERE ($1::text IS NULL OR metric = $1) AND labels @> ($2::text)::jsonb"
        );
        let points = format!(
            "SELECT series_id, time, value FROM {samples_table} \
             WHERE series_id = ANY($1) AND time >= $2 AND time <= $3 \
             ORDER BY series_id, time LIMIT $4"
        );
        let mut found: BTreeMap<i64, (Series, Vec<Point>)> = BTreeMap::new();
        let mut total = 0usize;
        for w in wanted {
            let (name, labels) = pushed_down(&w.selector);
            let rows = client
                .query_typed(&candidates, &[(&name, Type::TEXT), (&labels, Type::TEXT)])
                .await
                .map_err(|e| self.failed(&e))?;
            let mut picked: FxHashMap<i64, Series> = FxHashMap::default();
            for row in rows {
                let id: i64 = row.get(0);
                let metric: String = row.get(1);
                let labels: String = row.get(2);
                let labels: BTreeMap<String, String> =
                    serde_json::from_str(&labels).map_err(|e| self.unreadable(e))?;
                let series = Series::new(&metric, labels);
                if selects(&w.selector, &series) {
                    picked.insert(id, series);
                }
            }
            if picked.is_empty() {
                continue;
            }
            let ids: Vec<i64> = picked.keys().copied().collect();
            let (Some(start), Some(end)) = (time(w.start), time(w.end)) else {
                continue;
            };
            let limit = (max_points - total + 1) as i64;
            let rows = client
                .query_typed(
                    &points,
                    &[
                        (&ids, Type::INT8_ARRAY),
                        (&start, Type::TIMESTAMPTZ),
                        (&end, Type::TIMESTAMPTZ),
                        (&limit, Type::INT8),
                    ],
                )
                .await
                .map_err(|e| self.failed(&e))?;
            total += rows.len();
            if total > max_points {
                return Err(ArchiveError::TooMany(format!(
                    "the table {} holds more than {max_points} samples for this query",
                    self.describe
                )));
            }
            for row in rows {
                let id: i64 = row.get(0);
                let at: DateTime<Utc> = row.get(1);
                let value: f64 = row.get(2);
                let Some(series) = picked.get(&id) else {
                    continue;
                };
                found
                    .entry(id)
                    .or_insert_with(|| (series.clone(), Vec::new()))
                    .1
                    .push(Point {
                        t: at.timestamp_millis(),
                        v: value,
                    });
            }
        }
        let mut out: Found = found.into_values().collect();
        for (_, points) in &mut out {
            // Two selectors of one query may read the same series.
            points.sort_by_key(|p| p.t);
            points.dedup_by_key(|p| p.t);
        }
        Ok(out)
    }
}

/// What SQL can narrow a selector to: its metric name (from the name or a
/// `__name__` equality) and its label equalities with a value, as a JSON
/// object for `@>` (an empty value matches a missing label, which
/// containment cannot say). `or` groups push nothing down.
fn pushed_down(selector: &VectorSelector) -> (Option<String>, String) {
    let mut name = selector.name.clone();
    let mut labels = serde_json::Map::new();
    if selector.matchers.or_matchers.is_empty() {
        for m in &selector.matchers.matchers {
            if m.op != MatchOp::Equal || m.value.is_empty() {
                continue;
            }
            if m.name == METRIC_NAME_LABEL {
                name.get_or_insert_with(|| m.value.clone());
            } else {
                labels.insert(m.name.clone(), serde_json::Value::String(m.value.clone()));
            }
        }
    } else {
        name = None;
    }
    (name, serde_json::Value::Object(labels).to_string())
}

/// A time PostgreSQL can hold, clamped to chrono's range.
fn time(ms: i64) -> Option<DateTime<Utc>> {
    const FAR: i64 = 8_000_000_000_000_000 / 1000;
    DateTime::from_timestamp_millis(ms.clamp(-FAR, FAR))
}

impl Archive for TimescaleArchive {
    fn select<'a>(
        &'a self,
        wanted: &'a [Wanted],
        max_points: usize,
    ) -> BoxFuture<'a, Result<Found, ArchiveError>> {
        Box::pin(self.read(wanted, max_points))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(text: &str) -> VectorSelector {
        match promql_parser::parser::parse(text).unwrap() {
            promql_parser::parser::Expr::VectorSelector(vs) => vs,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pushes_down_the_name_and_the_label_equalities_only() {
        assert_eq!(
            pushed_down(&selector(r#"cpu{host="a",dc=~"x.*",zone!="b",empty=""}"#)),
            (Some("cpu".into()), r#"{"host":"a"}"#.into())
        );
        assert_eq!(
            pushed_down(&selector(r#"{__name__="up",job="api"}"#)),
            (Some("up".into()), r#"{"job":"api"}"#.into())
        );
        assert_eq!(
            pushed_down(&selector(r#"{__name__=~"up|down"}"#)),
            (None, "{}".into())
        );
    }
}
