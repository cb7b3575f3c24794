//! Writing tables as Parquet that every reader accepts (timestamps as INT64 microseconds
//! marked UTC, no unsigned or half-float columns), each file published atomically: written
//! beside its final name, flushed, then renamed, so a reader sees the old file or the new.

use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

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
