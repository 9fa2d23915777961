//! The `parquet` sink's archive as the query API reads it: the tier past
//! a `memory` sink's retention ([`tidemark_engine::history::Archive`]).
//!
//! A selection lists the sink's files, keeps those whose hour partition
//! meets the time wanted, reads their footers (kept in a bounded cache:
//! the sink's files do not change once written, and a replay that rewrites
//! one changes its size), keeps the row groups whose `time` statistics meet
//! the range and whose `metric` statistics may hold a wanted metric name,
//! and decodes those, keeping the rows of the series a selector picks in
//! that selector's range.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use promql_parser::label::MatchOp;
use rustc_hash::FxHashMap;

use tidemark_engine::history::{Archive, ArchiveError, Found, Wanted};
use tidemark_engine::memstore::{Point, selects};
use tidemark_engine::series::METRIC_NAME_LABEL;
use tidemark_engine::{Series, SeriesId};

use super::config::{Location, StoreAt};
use super::service::Store;
use super::source::{in_range, metadata, read_rows, time_bounds};

/// Footers kept at most; past it the cache starts again.
const FOOTERS: usize = 4096;

/// One sink's archive, read back for queries.
pub struct ParquetArchive {
    store: Store,
    /// `pipeline=<p>/output=<sink>`.
    under: String,
    describe: String,
    /// Footers by key, with the size they were read at.
    footers: Mutex<HashMap<String, (u64, Arc<ParquetMetaData>)>>,
}

impl ParquetArchive {
    /// The archive `pipeline`'s sink `sink` writes at `at`; `None` for an
    /// archive in memory, which lives inside the sink and cannot be read
    /// from outside it.
    pub fn open(at: &StoreAt, pipeline: &str, sink: &str) -> Option<ParquetArchive> {
        let describe = match &at.location {
            Location::Memory => return None,
            Location::Local(dir) => format!("file://{}", dir.display()),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        };
        let store = match Store::open(at) {
            Ok(store) => store,
            Err(error) => {
                tracing::warn!(error = %error.chain(), pipeline, sink, "The archive cannot be opened for queries; they read only the memory sinks.");
                return None;
            }
        };
        Some(ParquetArchive {
            store,
            under: format!("pipeline={pipeline}/output={sink}"),
            describe: format!("{describe} (pipeline={pipeline}/output={sink})"),
            footers: Mutex::new(HashMap::new()),
        })
    }

    fn unreadable(&self, what: impl std::fmt::Display) -> ArchiveError {
        ArchiveError::Unreadable(format!(
            "the archive {} cannot be read: {what}",
            self.describe
        ))
    }

    async fn footer(&self, key: &str, size: u64) -> Result<Arc<ParquetMetaData>, ArchiveError> {
        let cached = self
            .footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .filter(|(at, _)| *at == size)
            .map(|(_, m)| Arc::clone(m));
        if let Some(found) = cached {
            return Ok(found);
        }
        let read = Arc::new(
            metadata(&self.store, key, size)
                .await
                .map_err(|e| self.unreadable(e.chain()))?,
        );
        let mut footers = self.footers.lock().unwrap_or_else(|p| p.into_inner());
        if footers.len() >= FOOTERS {
            footers.clear();
        }
        footers.insert(key.to_owned(), (size, Arc::clone(&read)));
        Ok(read)
    }

    async fn read(&self, wanted: &[Wanted], max_points: usize) -> Result<Found, ArchiveError> {
        let (Some(start), Some(end)) = (
            wanted.iter().map(|w| w.start).min(),
            wanted.iter().map(|w| w.end).max(),
        ) else {
            return Ok(Vec::new());
        };
        let names = metric_names(wanted);
        let listed = self
            .store
            .list(&self.under)
            .await
            .map_err(|e| self.unreadable(e.chain()))?;
        let mut found: FxHashMap<SeriesId, (Series, Vec<Point>)> = FxHashMap::default();
        // Which entries select a series, decided once per series.
        let mut picked: FxHashMap<SeriesId, Vec<usize>> = FxHashMap::default();
        let mut points = 0usize;
        for (key, size) in in_range(listed, start, end.saturating_add(1)) {
            let metadata = self.footer(&key, size).await?;
            let groups: Vec<usize> = (0..metadata.num_row_groups())
                .filter(|&g| {
                    let (min, max) = time_bounds(&metadata, g).unwrap_or((i64::MIN, i64::MAX));
                    max >= start && min <= end
                })
                .filter(|&g| names.as_ref().is_none_or(|n| may_hold(&metadata, g, n)))
                .collect();
            if groups.is_empty() {
                continue;
            }
            let bytes = self
                .store
                .range(&key, 0..size)
                .await
                .map_err(|e| self.unreadable(e.chain()))?;
            read_rows(
                &key,
                &metadata,
                groups,
                bytes,
                (start, end.saturating_add(1)),
                &mut HashMap::new(),
                &mut |series, t, v| {
                    let entries = picked.entry(series.id()).or_insert_with(|| {
                        (0..wanted.len())
                            .filter(|&i| selects(&wanted[i].selector, series))
                            .collect()
                    });
                    if !entries
                        .iter()
                        .any(|&i| wanted[i].start <= t && t <= wanted[i].end)
                    {
                        return;
                    }
                    found
                        .entry(series.id())
                        .or_insert_with(|| (series.clone(), Vec::new()))
                        .1
                        .push(Point { t, v });
                    points += 1;
                },
            )
            .map_err(|e| self.unreadable(e.chain()))?;
            if points > max_points {
                return Err(ArchiveError::TooMany(format!(
                    "the archive {} holds more than {max_points} samples for this query",
                    self.describe
                )));
            }
        }
        let mut out: Found = found.into_values().collect();
        for (_, points) in &mut out {
            // Files overlap in time (late samples land in later epochs); a
            // replay may have written a time twice.
            points.sort_by_key(|p| p.t);
            points.dedup_by_key(|p| p.t);
        }
        out.sort_by_key(|(s, _)| s.id());
        Ok(out)
    }
}

/// The metric names the selections are limited to, when every one names
/// its metric by equality; `None` when one may select any name.
fn metric_names(wanted: &[Wanted]) -> Option<Vec<String>> {
    wanted
        .iter()
        .map(|w| {
            let vs = &w.selector;
            if !vs.matchers.or_matchers.is_empty() {
                return None;
            }
            vs.name.clone().or_else(|| {
                vs.matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == METRIC_NAME_LABEL && m.op == MatchOp::Equal)
                    .map(|m| m.value.clone())
            })
        })
        .collect()
}

/// Whether a row group's `metric` statistics allow one of `names`
/// (unknown statistics allow all).
fn may_hold(metadata: &ParquetMetaData, group: usize, names: &[String]) -> bool {
    let column = metadata
        .row_group(group)
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "metric");
    let Some(Statistics::ByteArray(stats)) = column.and_then(|c| c.statistics()) else {
        return true;
    };
    let (Some(min), Some(max)) = (stats.min_opt(), stats.max_opt()) else {
        return true;
    };
    names.iter().any(|n| {
        let n = n.as_bytes();
        min.data() <= n && n <= max.data()
    })
}

impl Archive for ParquetArchive {
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
