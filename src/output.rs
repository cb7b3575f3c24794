//! Where a run publishes its tables: Parquet files or Delta tables under one location, on
//! the local disk or an object store. Each table becomes visible whole or not at all: a
//! Parquet file is uploaded (multipart, or a staged local file renamed) and appears only
//! when complete; a Delta table changes by one commit.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, TimeUnit};
use clap::ValueEnum;
use datafusion::prelude::{cast, ident, DataFrame};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use url::Url;

use crate::error::{Error, Result};
use crate::lake::{object_path, resolve_location, storage, StorageOptions};

/// The table format of a run's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TableFormat {
    /// One Parquet file per table: `<output>/<table>.parquet`.
    #[default]
    Parquet,
    /// One Delta table per table: `<output>/<table>/`.
    Delta,
}

/// The type a column is written as so Spark, DuckDB, pandas and delta-rs all read it:
/// UTC microsecond timestamps, signed integers, decimals of at most 38 digits.
pub fn reader_safe(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Timestamp(_, _) | DataType::Date64 => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Float16 => DataType::Float32,
        DataType::Decimal256(p, s) if *p <= 38 => DataType::Decimal128(*p, *s),
        DataType::Decimal256(_, _) => DataType::Float64,
        DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Interval(_)
        | DataType::Duration(_) => DataType::Utf8,
        DataType::Dictionary(_, value) => reader_safe(value),
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            DataType::List(Arc::new(Field::new(
                f.name(),
                reader_safe(f.data_type()),
                f.is_nullable(),
            )))
        }
        other => other.clone(),
    }
}

/// `df` with every column cast to its [`reader_safe`] type.
pub fn reader_safe_frame(df: DataFrame) -> Result<DataFrame> {
    let fields: Vec<(String, DataType)> = df
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    if fields.iter().all(|(_, t)| reader_safe(t) == *t) {
        return Ok(df);
    }
    let exprs = fields.iter().map(|(name, t)| {
        let safe = reader_safe(t);
        if safe == *t {
            ident(name)
        } else {
            cast(ident(name), safe).alias(name)
        }
    });
    Ok(df.select(exprs.collect::<Vec<_>>())?)
}

/// A run's output location.
#[derive(Debug, Clone)]
pub struct Output {
    pub location: String,
    url: Url,
    storage: StorageOptions,
    pub format: TableFormat,
    store: Arc<dyn ObjectStore>,
}

impl Output {
    pub fn new(location: &str, storage: StorageOptions, format: TableFormat) -> Result<Self> {
        let mut url = resolve_location(location, None)?;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let store = storage::object_store_for(&url, &storage)?;
        Ok(Self {
            location: location.to_string(),
            url,
            storage,
            format,
            store,
        })
    }

    /// Where `table` is published.
    pub fn table_url(&self, table: &str) -> Result<Url> {
        let name = match self.format {
            TableFormat::Parquet => format!("{table}.parquet"),
            TableFormat::Delta => format!("{table}/"),
        };
        self.url
            .join(&name)
            .map_err(|e| Error::location(&self.location, e))
    }

    /// Writes `df` as `table`, replacing what was there; returns the rows written.
    pub async fn write_table(
        &self,
        table: &str,
        df: DataFrame,
        metadata: &[(String, String)],
    ) -> Result<u64> {
        let df = reader_safe_frame(df)?;
        let target = self.table_url(table)?;
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .set_created_by(format!("c360 {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(
                metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        let failed = |e: &dyn std::fmt::Display| {
            Error::location(
                target.as_str(),
                format!("writing table '{table}' failed: {e}"),
            )
        };
        match self.format {
            TableFormat::Parquet => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let path = object_path(&target)?;
                let sink = BufWriter::new(self.store.clone(), path);
                let mut writer = AsyncArrowWriter::try_new(sink, schema, Some(props))?;
                let mut rows = 0u64;
                let mut stream = df.execute_stream().await?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    writer.write(&batch).await.map_err(|e| failed(&e))?;
                }
                // The file appears only now, complete.
                writer.close().await.map_err(|e| failed(&e))?;
                Ok(rows)
            }
            TableFormat::Delta => {
                if let Ok(path) = target.to_file_path() {
                    std::fs::create_dir_all(&path).map_err(|e| failed(&e))?;
                }
                let batches = df.collect().await?;
                let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                let delta = DeltaTable::try_from_url_with_storage_options(
                    target.clone(),
                    self.storage.for_delta(&target),
                )
                .await
                .map_err(|e| failed(&e))?;
                delta
                    .write(batches)
                    .with_save_mode(SaveMode::Overwrite)
                    .with_schema_mode(SchemaMode::Overwrite)
                    .with_writer_properties(props)
                    .with_table_name(table)
                    .await
                    .map_err(|e| failed(&e))?;
                Ok(rows)
            }
        }
    }

    /// Writes a small file (the catalog) at `name` under the output, whole or not at all.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let url = self
            .url
            .join(name)
            .map_err(|e| Error::location(&self.location, e))?;
        self.store
            .put(&object_path(&url)?, PutPayload::from(bytes))
            .await
            .map_err(|e| Error::location(url.as_str(), e))?;
        Ok(())
    }

    /// Whether a file `name` is under the output.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        let url = self
            .url
            .join(name)
            .map_err(|e| Error::location(&self.location, e))?;
        match self.store.head(&object_path(&url)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::location(url.as_str(), e)),
        }
    }

    pub fn storage(&self) -> &StorageOptions {
        &self.storage
    }
}
