//! The `parquet` source: replays an archive the `parquet` sink wrote, in
//! event-time order, as fast as the dataflow takes it.
//!
//! Every worker lists the archive's files in the range (pruned by the
//! `date=`/`hour=` partitions) and reads its share of them (by a hash of
//! the file's name, so every worker picks the same split) on a thread of
//! its own, with a current-thread tokio runtime for the store.
//!
//! A file is not sorted by time (its row groups are sorted by series, then
//! time), and files overlap in time (an epoch's files hold samples up to
//! the out-of-orderness past it; late samples fall in later epochs). So a
//! reader first reads every file's footer: the `time` statistics of its row
//! groups bound its samples. It then loads the files in the order of their
//! first time, and after each one hands on, sorted by time, every loaded
//! sample older than the next file's first time: nothing read later can be
//! older. The operator ([`crate::replay`]) gives them at the time of the
//! first one and then moves its capability to that bound, so windows
//! downstream close as the replay goes. Memory holds the files whose times
//! overlap (an epoch's files, normally), not the archive.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{ArrayRef, PrimitiveArray, RecordBatch};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use tidemark_engine::component::SourceContext;
use tidemark_engine::error::{ComponentError, Fault};
use tidemark_engine::runtime::{PipelineScope, SampleStream};
use tidemark_engine::stats::add;
use tidemark_engine::{Sample, Series};

use super::config::ParquetSource;
use super::service::Store;
use crate::replay::{Feed, Worker, replay};

/// Rows decoded at a time.
const DECODE_ROWS: usize = 65_536;

/// Series a reader remembers by id across files; past it, it starts again
/// (and decodes their labels again), so an archive of many short-lived
/// series does not grow its memory without bound.
const KNOWN: usize = 1_000_000;

/// One file of the archive to read, with the row groups in the range.
#[derive(Debug)]
struct ArchiveFile {
    key: String,
    size: u64,
    metadata: Arc<ParquetMetaData>,
    row_groups: Vec<usize>,
    /// The oldest time its chosen row groups may hold.
    first: i64,
}

/// The hour partition (`date=YYYY-MM-DD/hour=HH`) of a key, as the hour's
/// first millisecond.
fn partition_hour(key: &str) -> Option<i64> {
    let date = key.split('/').find_map(|p| p.strip_prefix("date="))?;
    let hour = key.split('/').find_map(|p| p.strip_prefix("hour="))?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.parse().ok()?;
    let at = day.and_hms_opt(hour, 0, 0)?;
    Some(at.and_utc().timestamp_millis())
}

/// The files of the archive whose hour overlaps `[from, to)`, with sizes.
pub(super) fn in_range(listed: Vec<(String, u64)>, from: i64, to: i64) -> Vec<(String, u64)> {
    const HOUR: i64 = 3_600_000;
    let mut files: Vec<(String, u64)> = listed
        .into_iter()
        .filter(|(key, _)| key.ends_with(".parquet"))
        .filter(|(key, _)| match partition_hour(key) {
            Some(hour) => hour < to && hour.saturating_add(HOUR) > from,
            // Not in the sink's layout: read it, the footer decides.
            None => true,
        })
        .collect();
    files.sort();
    files
}

/// Which worker reads a file: the same answer on every worker.
fn reader_of(key: &str, peers: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike `DefaultHasher`'s
    // promise.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % peers.max(1) as u64) as usize
}

/// The `time` column's bounds in a row group, if its statistics say.
pub(super) fn time_bounds(metadata: &ParquetMetaData, row_group: usize) -> Option<(i64, i64)> {
    let group = metadata.row_group(row_group);
    let column = group
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "time")?;
    match column.statistics()? {
        Statistics::Int64(s) => Some((*s.min_opt()?, *s.max_opt()?)),
        _ => None,
    }
}

pub(super) fn damaged(key: &str, what: impl std::fmt::Display) -> ComponentError {
    ComponentError::permanent(Fault::External, format!("cannot read {key}: {what}"))
}

/// Reads a file's footer (one ranged read of its tail, a second when the
/// footer is longer than that).
pub(super) async fn metadata(
    store: &Store,
    key: &str,
    size: u64,
) -> Result<ParquetMetaData, ComponentError> {
    const TAIL: u64 = 64 << 10;
    if size < 8 {
        return Err(damaged(key, "too short to be a Parquet file"));
    }
    let tail = store.range(key, size.saturating_sub(TAIL)..size).await?;
    let last: [u8; 8] = tail[tail.len() - 8..]
        .try_into()
        .map_err(|_| damaged(key, "no footer"))?;
    let footer = FooterTail::try_new(&last).map_err(|e| damaged(key, e))?;
    let length = footer.metadata_length() as u64;
    if length + 8 > size {
        return Err(damaged(key, "its footer is longer than the file"));
    }
    let encoded = if length + 8 <= tail.len() as u64 {
        let end = tail.len() - 8;
        tail.slice(end - length as usize..end)
    } else {
        store.range(key, size - 8 - length..size - 8).await?
    };
    ParquetMetaDataReader::decode_metadata(&encoded).map_err(|e| damaged(key, e))
}

/// Reads a file's footer and keeps the row groups that may hold `[from,
/// to)`; `None` if none may.
async fn footer(
    store: &Store,
    key: &str,
    size: u64,
    from: i64,
    to: i64,
) -> Result<Option<ArchiveFile>, ComponentError> {
    let metadata = metadata(store, key, size).await?;
    let mut first = i64::MAX;
    let mut row_groups = Vec::new();
    for index in 0..metadata.num_row_groups() {
        let (min, max) = time_bounds(&metadata, index).unwrap_or((i64::MIN, i64::MAX));
        if max >= from && min < to {
            row_groups.push(index);
            first = first.min(min.max(from));
        }
    }
    Ok((!row_groups.is_empty()).then(|| ArchiveFile {
        key: key.to_owned(),
        size,
        metadata: Arc::new(metadata),
        row_groups,
        first,
    }))
}

/// Decodes a file's chosen row groups, keeping the samples in `[from,
/// to)`; `known` holds the series met so far, by id.
fn decode(
    file: &ArchiveFile,
    bytes: Bytes,
    (from, to): (i64, i64),
    known: &mut HashMap<i64, Series>,
    out: &mut Vec<Sample>,
) -> Result<usize, ComponentError> {
    let before = out.len();
    read_rows(
        &file.key,
        &file.metadata,
        file.row_groups.clone(),
        bytes,
        (from, to),
        known,
        &mut |series, t, v| out.push(Sample::new(series.clone(), t, v)),
    )?;
    Ok(out.len() - before)
}

/// Calls `each` with the series, time and value of every row in `[from,
/// to)` of a file's `row_groups` (its bytes and footer given).
///
/// Two passes: the first decodes only `series_id`, `time` and `value`; the
/// second decodes the names and labels of the series not in `known` yet,
/// one row of each (a run of rows, as the sink sorts them by series), and
/// adds them to it. A replay that keeps `known` across files decodes each
/// series' labels once, not once a sample.
pub(super) fn read_rows(
    key: &str,
    metadata: &Arc<ParquetMetaData>,
    row_groups: Vec<usize>,
    bytes: Bytes,
    (from, to): (i64, i64),
    known: &mut HashMap<i64, Series>,
    each: &mut impl FnMut(&Series, i64, f64),
) -> Result<(), ComponentError> {
    let metadata = ArrowReaderMetadata::try_new(Arc::clone(metadata), Default::default())
        .map_err(|e| damaged(key, e))?;
    let schema = metadata.parquet_schema();
    let reader = |columns: &[&str]| {
        ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
            .with_row_groups(row_groups.clone())
            .with_projection(ProjectionMask::columns(schema, columns.iter().copied()))
            .with_batch_size(DECODE_ROWS)
    };
    // Pass 1: the points, and the first row of each run of a series not
    // known yet.
    // Sized once: growing it by doubling touches fresh memory every file.
    let rows: i64 = row_groups
        .iter()
        .map(|&g| metadata.metadata().row_group(g).num_rows())
        .sum();
    let mut points: Vec<(i64, i64, f64)> = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
    let mut firsts: Vec<RowSelector> = Vec::new();
    let (mut row, mut selected_to, mut last_id) = (0usize, 0usize, None);
    let built = reader(&["time", "series_id", "value"])
        .build()
        .map_err(|e| damaged(key, e))?;
    for batch in built {
        let batch = batch.map_err(|e| damaged(key, e))?;
        let (ids, time, value) = point_columns(&batch).map_err(|e| damaged(key, e))?;
        for i in 0..batch.num_rows() {
            let id = ids.value(i);
            if last_id != Some(id) && !known.contains_key(&id) {
                firsts.push(RowSelector::skip(row - selected_to));
                firsts.push(RowSelector::select(1));
                selected_to = row + 1;
            }
            last_id = Some(id);
            row += 1;
            let at = time.value(i);
            if (from..to).contains(&at) {
                points.push((id, at, value.value(i)));
            }
        }
    }
    // Pass 2: the names and labels of the new series.
    if !firsts.is_empty() {
        let built = reader(&["series_id", "metric", "labels"])
            .with_row_selection(RowSelection::from(firsts))
            .build()
            .map_err(|e| damaged(key, e))?;
        for batch in built {
            let batch = batch.map_err(|e| damaged(key, e))?;
            names(&batch, known).map_err(|e| damaged(key, e))?;
        }
    }
    let mut last: Option<(i64, &Series)> = None;
    for (id, at, value) in points {
        if last.is_none_or(|(last_id, _)| last_id != id) {
            let series = known
                .get(&id)
                .ok_or_else(|| damaged(key, format!("series {id} has no name")))?;
            last = Some((id, series));
        }
        if let Some((_, series)) = last {
            each(series, at, value);
        }
    }
    Ok(())
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("it has no `{name}` column (not written by a parquet sink?)"))
}

fn wrong(name: &str) -> String {
    format!("its `{name}` column has an unexpected type")
}

type PointColumns<'a> = (
    &'a PrimitiveArray<Int64Type>,
    &'a PrimitiveArray<TimestampMillisecondType>,
    &'a PrimitiveArray<Float64Type>,
);

/// A record batch's `series_id`, `time` and `value` columns.
fn point_columns(batch: &RecordBatch) -> Result<PointColumns<'_>, String> {
    let ids = column(batch, "series_id")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| wrong("series_id"))?;
    let time = column(batch, "time")?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| wrong("time"))?;
    let value = column(batch, "value")?
        .as_primitive_opt::<Float64Type>()
        .ok_or_else(|| wrong("value"))?;
    Ok((ids, time, value))
}

/// Adds the series of every row of a record batch of `series_id`, `metric`
/// and `labels` to `known`.
fn names(batch: &RecordBatch, known: &mut HashMap<i64, Series>) -> Result<(), String> {
    let ids = column(batch, "series_id")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| wrong("series_id"))?;
    let metric = column(batch, "metric")?
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong("metric"))?;
    let labels = column(batch, "labels")?
        .as_map_opt()
        .ok_or_else(|| wrong("labels"))?;
    let keys = labels
        .keys()
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong("labels"))?;
    let values = labels
        .values()
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong("labels"))?;
    let offsets = labels.value_offsets();
    for row in 0..batch.num_rows() {
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        known.entry(ids.value(row)).or_insert_with(|| {
            Series::new(
                metric.value(row),
                (start..end).map(|i| (keys.value(i), values.value(i))),
            )
        });
    }
    Ok(())
}

/// What a reader thread needs.
struct Reader {
    config: ParquetSource,
    at: Worker,
}

impl Reader {
    /// Hands on, sorted and in chunks, the samples of `pending` older than
    /// `bound`; keeps the rest.
    fn hand_on(feed: &Feed, pending: &mut Vec<Sample>, bound: i64) -> bool {
        pending.sort_by_key(|s| s.timestamp);
        let split = pending.partition_point(|s| s.timestamp < bound);
        let floor_after = pending.get(split).map_or(bound, |s| s.timestamp.min(bound));
        feed.send_sorted(pending.drain(..split), floor_after)
    }

    /// A damaged file is counted as an error, named in the log and
    /// skipped: the rest of the archive is still replayed (and the run
    /// ends with an error). Any other error stops the replay.
    fn skip(&self, error: ComponentError) -> Result<(), ComponentError> {
        if error.retryable || error.fault != Fault::External {
            return Err(error);
        }
        add(&self.at.stats.errors, 1);
        tracing::error!(error = %error.chain(), source = %self.at.name, "Skipping a damaged file of the archive.");
        Ok(())
    }

    async fn read(self, feed: Feed) -> Result<(), ComponentError> {
        let config = &self.config;
        let store = Store::open(&config.store)?;
        let under = format!("pipeline={}/output={}", config.pipeline, config.output);
        let listed = store.list(&under).await?;
        if listed.is_empty() {
            return self.at.nothing_there(format!(
                "there is no archive at {under} (nothing was ever written there: check path, pipeline and output)"
            ));
        }
        let mut files = Vec::new();
        // Restored from a checkpoint: each file on from where the worker
        // that read it then had got to.
        let from_of = |key: &str| match feed.resumed() {
            Some(p) => config.from.max(p[reader_of(key, p.len())]),
            None => config.from,
        };
        let to = config.to;
        for (key, size) in in_range(listed, feed.earliest(config.from), to) {
            if reader_of(&key, self.at.peers) != self.at.index {
                continue;
            }
            if self.at.shutdown.is_triggered() {
                return Ok(());
            }
            match footer(&store, &key, size, from_of(&key), to).await {
                Ok(Some(file)) => files.push(file),
                Ok(None) => {}
                Err(error) => self.skip(error)?,
            }
        }
        files.sort_by(|a, b| (a.first, &a.key).cmp(&(b.first, &b.key)));
        tracing::debug!(source = %self.at.name, worker = self.at.index, files = files.len(), "Replaying.");
        let mut pending: Vec<Sample> = Vec::new();
        let mut known: HashMap<i64, Series> = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            if self.at.shutdown.is_triggered() {
                return Ok(());
            }
            let bytes = store.range(&file.key, 0..file.size).await?;
            if known.len() > KNOWN {
                known.clear();
            }
            let range = (from_of(&file.key), to);
            match decode(file, bytes, range, &mut known, &mut pending) {
                Ok(read) => add(&self.at.stats.received, read as u64),
                Err(error) => self.skip(error)?,
            }
            let bound = files.get(i + 1).map_or(i64::MAX, |next| next.first);
            if !Self::hand_on(&feed, &mut pending, bound) {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl ParquetSource {
    /// Builds the source on a worker.
    pub fn build<'scope>(
        &self,
        scope: PipelineScope<'scope>,
        ctx: SourceContext,
    ) -> SampleStream<'scope> {
        let reader = Reader {
            config: self.clone(),
            at: Worker::of(&scope, &ctx),
        };
        let thread = format!("parquet-{}-{}", ctx.name, reader.at.index);
        replay(scope, ctx, thread, move |feed| reader.read(feed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_read_from_the_partitions() {
        assert_eq!(
            partition_hour("pipeline=p/output=o/date=2026-11-25/hour=07/part-1-w000-000.parquet"),
            Some(1_795_590_000_000)
        );
        assert_eq!(partition_hour("x/part.parquet"), None);
        assert_eq!(partition_hour("date=2026-13-01/hour=00/a.parquet"), None);
    }

    #[test]
    fn files_outside_the_range_are_not_read() {
        let key = |h: u32| {
            (
                format!("pipeline=p/output=o/date=2026-11-25/hour={h:02}/part.parquet"),
                1,
            )
        };
        let hour7 = 1_795_590_000_000;
        let listed = vec![
            key(6),
            key(7),
            key(8),
            (
                "pipeline=p/output=o/date=2026-11-25/hour=07/x.tmp".to_owned(),
                1,
            ),
            ("pipeline=p/output=o/elsewhere.parquet".to_owned(), 1),
        ];
        let kept: Vec<String> = in_range(listed, hour7 + 10, hour7 + 3_600_000)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            kept,
            [
                "pipeline=p/output=o/date=2026-11-25/hour=07/part.parquet",
                "pipeline=p/output=o/elsewhere.parquet"
            ]
        );
    }

    #[test]
    fn labels_are_decoded_for_the_series_not_known_yet() {
        use super::super::encode::{FileBuilder, Format};
        let format = Format::new(&["host".into()], 4, 3);
        let mut file = FileBuilder::new(&format).unwrap();
        let series: Vec<Series> = (0..5)
            .map(|i| Series::new("cpu", [("host", format!("h{i}")), ("dc", format!("d{i}"))]))
            .collect();
        for (i, s) in series.iter().enumerate() {
            // Runs of 1 to 5 rows: some span row groups of 4.
            for t in 0..=i as i64 {
                file.push([Sample::new(s.clone(), 1_000 * t, i as f64)]);
            }
        }
        let bytes = Bytes::from(file.finish(&format).unwrap());
        let metadata = Arc::new(
            ParquetMetaDataReader::new()
                .parse_and_finish(&bytes)
                .unwrap(),
        );
        let groups: Vec<usize> = (0..metadata.num_row_groups()).collect();
        assert!(groups.len() > 2);
        let read = |known: &mut HashMap<i64, Series>, range: (i64, i64)| {
            let mut out = Vec::new();
            read_rows(
                "f",
                &metadata,
                groups.clone(),
                bytes.clone(),
                range,
                known,
                &mut |s, t, v| out.push((s.clone(), t, v)),
            )
            .unwrap();
            out.sort_by(|a, b| (a.2, a.1).partial_cmp(&(b.2, b.1)).unwrap());
            out
        };
        let expected: Vec<(Series, i64, f64)> = series
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..=i as i64).map(move |t| (s.clone(), 1_000 * t, i as f64)))
            .collect();
        // Two of them known already (a stale name for h3 shows it is used
        // as it is, not decoded again); the rest decoded, each under its
        // own id.
        let stale = Series::new("cpu", [("host", "stale")]);
        let mut known: HashMap<i64, Series> = HashMap::new();
        known.insert(series[1].id().0 as i64, series[1].clone());
        known.insert(series[3].id().0 as i64, stale.clone());
        let got = read(&mut known, (i64::MIN, i64::MAX));
        let mut want = expected.clone();
        for row in &mut want {
            if row.0 == series[3] {
                row.0 = stale.clone();
            }
        }
        assert_eq!(got, want);
        assert_eq!(known.len(), 5);
        // From scratch, within a range.
        let got = read(&mut HashMap::new(), (1_000, 3_000));
        let want: Vec<_> = expected
            .into_iter()
            .filter(|(_, t, _)| (1_000..3_000).contains(t))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn every_file_has_one_reader() {
        let keys: Vec<String> = (0..200).map(|i| format!("part-{i}.parquet")).collect();
        let mut per = [0usize; 3];
        for key in &keys {
            let r = reader_of(key, 3);
            assert_eq!(r, reader_of(key, 3));
            per[r] += 1;
        }
        assert!(per.iter().all(|n| *n > 40), "{per:?}");
        assert!(keys.iter().all(|k| reader_of(k, 1) == 0));
    }
}
