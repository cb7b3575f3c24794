//! Writing tables as Parquet that every reader accepts (timestamps as INT64 microseconds
//! marked UTC, no unsigned or half-float columns), each file published atomically: written
//! beside its final name, flushed, then renamed, so a reader sees the old file or the new.

use std::path::Path;

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// A UTC timestamp column in microseconds: what Spark, DuckDB and delta-rs all accept.
pub fn utc_micros_field(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        nullable,
    )
}

/// Values for a [`utc_micros_field`].
pub fn utc_micros(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC"),
    )
}

pub fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.collect::<StringArray>())
}

/// A batch of `columns` under a schema of `fields`.
pub fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("c360 {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Writes `batches` to `path`, replacing any file there only once the new one is complete.
pub fn write_parquet(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating '{}'", dir.display()), e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("table.parquet");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp)
            .map_err(|e| Error::io(format!("creating '{}'", tmp.display()), e))?;
        let mut writer = ArrowWriter::try_new(file, schema, Some(writer_properties()))?;
        for batch in batches {
            writer.write(batch)?;
        }
        let file = writer.into_inner()?;
        file.sync_all()
            .map_err(|e| Error::io(format!("flushing '{}'", tmp.display()), e))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::io(format!("publishing '{}'", path.display()), e))
}
