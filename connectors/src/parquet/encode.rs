//! Samples to Parquet: one file at a time, built in memory, one row group
//! per flush with its rows sorted by series and time.
//!
//! Columns: `time` (timestamp, ms, UTC), `series_id` (int64, the same id as
//! the `timescaledb` sink's), `metric` (string), `labels` (map of string to
//! string, `__name__` left out), one nullable string column per promoted
//! label, and `value` (double). zstd throughout.

use std::sync::Arc;

use arrow_array::builder::{MapBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;

use tidemark_engine::Sample;

/// The Arrow schema of every file, promoted label columns after `labels`.
pub(crate) fn schema(promote: &[String]) -> SchemaRef {
    let map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .finish()
        .data_type()
        .clone();
    let mut fields = vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("series_id", DataType::Int64, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("labels", map, false),
    ];
    fields.extend(
        promote
            .iter()
            .map(|name| Field::new(name, DataType::Utf8, true)),
    );
    fields.push(Field::new("value", DataType::Float64, false));
    Arc::new(Schema::new(fields))
}

/// Writer settings shared by a sink's files.
#[derive(Clone)]
pub(crate) struct Format {
    pub schema: SchemaRef,
    pub promote: Arc<[String]>,
    pub properties: WriterProperties,
    pub row_group_rows: usize,
}

impl Format {
    /// The format for these promoted labels, row group size and zstd level.
    pub fn new(promote: &[String], row_group_rows: usize, zstd_level: i32) -> Format {
        let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_created_by(concat!("tidemark ", env!("CARGO_PKG_VERSION")).into())
            .build();
        Format {
            schema: schema(promote),
            promote: promote.into(),
            properties,
            row_group_rows,
        }
    }
}

/// One file being built.
pub(crate) struct FileBuilder {
    writer: ArrowWriter<Vec<u8>>,
    buffer: Vec<Sample>,
    rows: usize,
}

impl FileBuilder {
    /// An empty file.
    pub fn new(format: &Format) -> Result<FileBuilder, ParquetError> {
        Ok(FileBuilder {
            writer: ArrowWriter::try_new(
                Vec::new(),
                Arc::clone(&format.schema),
                Some(format.properties.clone()),
            )?,
            buffer: Vec::new(),
            rows: 0,
        })
    }

    /// Adds samples; they are written at the next [`FileBuilder::flush`].
    pub fn push(&mut self, samples: impl IntoIterator<Item = Sample>) {
        self.buffer.extend(samples);
    }

    /// Samples waiting for the next row group.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Rows in the file, written or buffered.
    pub fn rows(&self) -> usize {
        self.rows + self.buffer.len()
    }

    /// Compressed bytes of the row groups written so far.
    pub fn bytes(&self) -> usize {
        self.writer.bytes_written()
    }

    /// Sorts the buffered samples by series and time and writes them as
    /// row groups of at most `row_group_rows`.
    pub fn flush(&mut self, format: &Format) -> Result<(), ParquetError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let mut samples = std::mem::take(&mut self.buffer);
        samples.sort_by_key(|s| (s.series.id().0 as i64, s.timestamp));
        for chunk in samples.chunks(format.row_group_rows.max(1)) {
            let batch = record_batch(format, chunk)?;
            self.writer.write(&batch)?;
            self.writer.flush()?;
        }
        self.rows += samples.len();
        Ok(())
    }

    /// Writes what is buffered and the footer; returns the file.
    pub fn finish(mut self, format: &Format) -> Result<Vec<u8>, ParquetError> {
        self.flush(format)?;
        self.writer.into_inner()
    }
}

fn record_batch(format: &Format, samples: &[Sample]) -> Result<RecordBatch, ParquetError> {
    let n = samples.len();
    let time = TimestampMillisecondArray::from_iter_values(samples.iter().map(|s| s.timestamp))
        .with_timezone("UTC");
    let ids = Int64Array::from_iter_values(samples.iter().map(|s| s.series.id().0 as i64));
    let metric = StringArray::from_iter_values(samples.iter().map(|s| s.series.name()));
    let mut labels = MapBuilder::new(
        None,
        StringBuilder::with_capacity(n * 4, n * 32),
        StringBuilder::with_capacity(n * 4, n * 32),
    );
    for s in samples {
        for (name, value) in s.series.tags() {
            labels.keys().append_value(name);
            labels.values().append_value(value);
        }
        labels.append(true)?;
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(time),
        Arc::new(ids),
        Arc::new(metric),
        Arc::new(labels.finish()),
    ];
    for name in format.promote.iter() {
        let column: StringArray = samples.iter().map(|s| s.series.get(name)).collect();
        columns.push(Arc::new(column));
    }
    columns.push(Arc::new(Float64Array::from_iter_values(
        samples.iter().map(|s| s.value),
    )));
    Ok(RecordBatch::try_new(Arc::clone(&format.schema), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use tidemark_engine::Series;

    #[test]
    fn rows_come_back_sorted_by_series_and_time_in_row_groups() {
        let format = Format::new(&["host".into()], 3, 3);
        let mut file = FileBuilder::new(&format).unwrap();
        let a = Series::new("cpu", [("host", "a"), ("dc", "x")]);
        let b = Series::new("cpu", [("dc", "y")]);
        file.push([
            Sample::new(a.clone(), 2_000, 2.0),
            Sample::new(b.clone(), 1_000, 10.0),
            Sample::new(a.clone(), 1_000, 1.0),
            Sample::new(b.clone(), 3_000, 30.0),
        ]);
        let bytes = file.finish(&format).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes)).unwrap();
        let metadata = reader.metadata().clone();
        assert_eq!(metadata.num_row_groups(), 2);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let rows: Vec<(i64, i64, f64, Option<String>)> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(1).as_primitive::<arrow_array::types::Int64Type>();
                let times = b
                    .column(0)
                    .as_primitive::<arrow_array::types::TimestampMillisecondType>();
                let host = b.column(4).as_string::<i32>();
                let values = b
                    .column(5)
                    .as_primitive::<arrow_array::types::Float64Type>();
                (0..b.num_rows())
                    .map(|i| {
                        (
                            ids.value(i),
                            times.value(i),
                            values.value(i),
                            host.is_valid(i).then(|| host.value(i).to_owned()),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut expected = vec![
            (a.id().0 as i64, 1_000, 1.0, Some("a".to_owned())),
            (a.id().0 as i64, 2_000, 2.0, Some("a".to_owned())),
            (b.id().0 as i64, 1_000, 10.0, None),
            (b.id().0 as i64, 3_000, 30.0, None),
        ];
        expected.sort_by_key(|r| (r.0, r.1));
        assert_eq!(rows, expected);
        let labels = batches[0].column(3).as_map();
        assert_eq!(
            labels.value(0).len(),
            expected[0].3.as_ref().map_or(1, |_| 2)
        );
    }
}
