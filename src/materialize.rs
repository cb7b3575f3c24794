//! Writing tables as Parquet that every reader accepts (timestamps as INT64 microseconds
//! marked UTC, no unsigned or half-float columns), each file published atomically: written
//! beside its final name, flushed, then renamed, so a reader sees the old file or the new.

use std::fs::File;
use std::path::{Path, PathBuf};
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
    let mut file = ParquetFile::create(path, schema)?;
    for batch in batches {
        file.write(batch)?;
    }
    file.publish()
}

/// A Parquet file written batch by batch beside `path`, renamed onto it by
/// [`ParquetFile::publish`]; dropped unpublished, it leaves no trace.
pub struct ParquetFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl ParquetFile {
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating '{}'", dir.display()), e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("table.parquet");
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp)
            .map_err(|e| Error::io(format!("creating '{}'", tmp.display()), e))?;
        let mut this = Self {
            path: path.to_path_buf(),
            tmp,
            writer: None,
        };
        this.writer = Some(ArrowWriter::try_new(
            file,
            schema,
            Some(writer_properties()),
        )?);
        Ok(this)
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let writer = self
            .writer
            .as_mut()
            .expect("written only before publishing");
        Ok(writer.write(batch)?)
    }

    /// Finishes the file, flushes it to disk and moves it onto its final name.
    pub fn publish(mut self) -> Result<()> {
        let writer = self.writer.take().expect("published once");
        let file = writer.into_inner()?;
        file.sync_all()
            .map_err(|e| Error::io(format!("flushing '{}'", self.tmp.display()), e))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::io(format!("publishing '{}'", self.path.display()), e))
    }
}

impl Drop for ParquetFile {
    fn drop(&mut self) {
        // Published, the temporary file has already been renamed away.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
