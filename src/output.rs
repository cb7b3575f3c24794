//! Where a run publishes its tables: Parquet files or Delta tables under one location, on
//! the local disk or an object store.
//!
//! Parquet: every table (and the catalog) is first written whole under
//! `_c360_staging/<run id>/`; then a journal, `_c360_commit.json`, lists the moves that
//! publish them, the moves are made and the journal removed. A run killed before the
//! journal leaves the previous output untouched; one killed after it is completed by the
//! next run ([`Output::recover`]), which also removes what dead runs left in staging.
//! Delta: each table changes by one commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use clap::ValueEnum;
use datafusion::physical_plan::common::spawn_buffered;
use datafusion::prelude::{cast, ident, DataFrame};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use tokio::io::AsyncWriteExt;
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
    /// Set: Parquet tables are staged under `_c360_staging/<run id>/` until [`Output::publish`].
    run_id: Option<String>,
}

/// The journal of a publication in progress.
pub const COMMIT_FILE: &str = "_c360_commit.json";
/// Where a run's tables wait until they are published.
pub const STAGING_DIR: &str = "_c360_staging";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Journal {
    run_id: String,
    /// (staged object, published object), in publication order.
    moves: Vec<(String, String)>,
    /// Delta outputs: each table's version before the run (`None`: it had none), to roll
    /// back to if the run did not publish its catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delta_before: Option<BTreeMap<String, Option<u64>>>,
}

/// What [`Output::recover`] found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Recovery {
    /// A publication cut short that was completed, by its run id.
    pub completed: Option<String>,
    /// A Delta publication cut short whose tables were restored, by its run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// Staged files of dead runs removed.
    pub removed: usize,
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
            run_id: None,
        })
    }

    /// This output as run `run_id` writes it: tables staged until [`Output::publish`].
    pub fn for_run(mut self, run_id: &str) -> Self {
        self.run_id = Some(run_id.to_string());
        self
    }

    pub fn run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The object path of `name` under the output, and its URL for messages.
    pub fn object(&self, name: &str) -> Result<(object_store::path::Path, String)> {
        let url = self
            .url
            .join(name)
            .map_err(|e| Error::location(&self.location, e))?;
        Ok((object_path(&url)?, url.to_string()))
    }

    /// Where this run stages `name` before publishing it.
    fn staged(&self, name: &str) -> Result<Option<(object_store::path::Path, String)>> {
        match (&self.run_id, self.format) {
            (Some(run), TableFormat::Parquet) => self
                .object(&format!("{STAGING_DIR}/{run}/{name}"))
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Publishes what this run staged: the tables named, then `files` (name and bytes) in
    /// order; the catalog comes last, so a reader finding it finds everything it describes.
    pub async fn publish(&self, tables: &[&str], files: &[(&str, Vec<u8>)]) -> Result<()> {
        let (Some(run_id), TableFormat::Parquet) = (self.run_id.clone(), self.format) else {
            for (name, bytes) in files {
                self.put(name, bytes.clone()).await?;
            }
            crate::crash_point("catalog");
            // The catalog is out: nothing is left to roll back.
            return self.remove(COMMIT_FILE).await;
        };
        for (name, bytes) in files {
            let (staged, _) = self.staged(name)?.expect("staged output");
            self.store
                .put(&staged, PutPayload::from(bytes.clone()))
                .await
                .map_err(|e| Error::output(&self.location, format!("staging {name}: {e}")))?;
        }
        let mut moves = vec![];
        for name in tables
            .iter()
            .map(|t| format!("{t}.parquet"))
            .chain(files.iter().map(|(name, _)| name.to_string()))
        {
            let (from, _) = self.staged(&name)?.expect("staged output");
            let (to, _) = self.object(&name)?;
            moves.push((from.to_string(), to.to_string()));
        }
        let journal = Journal {
            run_id,
            moves,
            delta_before: None,
        };
        let (path, url) = self.object(COMMIT_FILE)?;
        self.store
            .put(
                &path,
                PutPayload::from(serde_json::to_vec_pretty(&journal)?),
            )
            .await
            .map_err(|e| Error::output(url, format!("writing the commit journal: {e}")))?;
        crate::crash_point("journal");
        self.finish(&journal).await
    }

    /// Delta tables commit one by one. Before the first, records each table's version, so
    /// that a run killed before its catalog is rolled back by the next one
    /// ([`Output::recover`]). Parquet outputs need nothing: they are staged.
    pub async fn begin(&self, tables: &[&str]) -> Result<()> {
        let (Some(run_id), TableFormat::Delta) = (self.run_id.clone(), self.format) else {
            return Ok(());
        };
        let mut before = BTreeMap::new();
        for table in tables {
            before.insert(table.to_string(), self.delta_version(table).await?);
        }
        let journal = Journal {
            run_id,
            moves: vec![],
            delta_before: Some(before),
        };
        self.put(COMMIT_FILE, serde_json::to_vec_pretty(&journal)?)
            .await
    }

    /// The current version of the Delta table `table`, `None` if there is none.
    async fn delta_version(&self, table: &str) -> Result<Option<u64>> {
        match self.delta_table(table).await? {
            Some(t) => Ok(t.version()),
            None => Ok(None),
        }
    }

    async fn delta_table(&self, table: &str) -> Result<Option<DeltaTable>> {
        let url = self.table_url(table)?;
        let log = object_path(&url)?.join("_delta_log");
        if self.store.list(Some(&log)).next().await.is_none() {
            return Ok(None);
        }
        let loaded = deltalake::DeltaTableBuilder::from_url(url.clone())?
            .with_storage_options(self.storage.for_delta(&url))
            .load()
            .await;
        match loaded {
            Ok(t) => Ok(Some(t)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(Error::output(url, e)),
        }
    }

    /// Whether the catalog published here is run `run_id`'s.
    async fn published_by(&self, run_id: &str) -> Result<bool> {
        let Some(bytes) = self.get(crate::run::CATALOG_FILE).await? else {
            return Ok(false);
        };
        let catalog: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok(catalog["run_id"] == run_id)
    }

    /// Puts each Delta table back at its version in `before`: a restore commit, or, for a
    /// table the run created, its removal.
    async fn roll_back(&self, before: &BTreeMap<String, Option<u64>>) -> Result<()> {
        for (table, version) in before {
            let Some(current) = self.delta_table(table).await? else {
                continue;
            };
            let url = self.table_url(table)?.to_string();
            match version {
                Some(v) if current.version() > Some(*v) => {
                    current
                        .restore()
                        .with_version_to_restore(*v)
                        .await
                        .map_err(|e| Error::output(&url, format!("restoring version {v}: {e}")))?;
                }
                Some(_) => {}
                None => {
                    let prefix = object_path(&self.table_url(table)?)?;
                    let mut listed = self.store.list(Some(&prefix));
                    while let Some(meta) = listed.next().await {
                        let meta = meta.map_err(|e| Error::output(&url, e))?;
                        self.store
                            .delete(&meta.location)
                            .await
                            .map_err(|e| Error::output(&url, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads a small file `name` under the output, if it is there.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (path, url) = self.object(name)?;
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| Error::output(&url, e))?
                    .to_vec(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::output(url, e)),
        }
    }

    /// Removes a small file `name` under the output, if it is there.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let (path, url) = self.object(name)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::output(url, e)),
        }
    }

    /// Makes a journal's moves (those not made yet), then removes the journal and the run's
    /// staging folder.
    async fn finish(&self, journal: &Journal) -> Result<()> {
        for (from, to) in &journal.moves {
            let (from, to) = (
                object_store::path::Path::from(from.as_str()),
                object_store::path::Path::from(to.as_str()),
            );
            match self.store.rename(&from, &to).await {
                // Already moved by an earlier attempt.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(Error::output(
                        &self.location,
                        format!("publishing {to}: {e}; the next run completes the publication"),
                    ))
                }
            }
        }
        let (path, url) = self.object(COMMIT_FILE)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::output(
                    url,
                    format!("removing the commit journal: {e}"),
                ))
            }
        }
        self.remove_staging(Some(&journal.run_id)).await?;
        Ok(())
    }

    /// Removes staged files: one run's, or (`None`) every run's. Returns how many.
    async fn remove_staging(&self, run_id: Option<&str>) -> Result<usize> {
        let dir = match run_id {
            Some(run) => format!("{STAGING_DIR}/{run}/"),
            None => format!("{STAGING_DIR}/"),
        };
        let (prefix, url) = self.object(&dir)?;
        let found: Vec<_> = self
            .store
            .list(Some(&prefix))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::output(&url, format!("listing staged files: {e}")))?;
        for meta in &found {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(Error::output(
                        &url,
                        format!("removing {}: {e}", meta.location),
                    ))
                }
            }
        }
        if let (Ok(staged), Ok(root)) = (
            self.url.join(&dir),
            self.url.join(&format!("{STAGING_DIR}/")),
        ) {
            if let (Ok(staged), Ok(root)) = (staged.to_file_path(), root.to_file_path()) {
                // Deletes leave local folders behind, and a run killed while writing leaves
                // its upload's partial file, which listings skip.
                let _ = std::fs::remove_dir_all(&staged);
                let _ = remove_empty_dirs(&root);
            }
        }
        Ok(found.len())
    }

    /// Completes a publication a killed run left half done, then removes what dead runs left
    /// in staging. Call while holding the output's lease.
    pub async fn recover(&self) -> Result<Recovery> {
        let mut recovery = Recovery::default();
        let (path, url) = self.object(COMMIT_FILE)?;
        match self.store.get(&path).await {
            Ok(got) => {
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| Error::output(&url, format!("reading the commit journal: {e}")))?;
                let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::output(
                        &url,
                        format!("the commit journal is unreadable ({e}); remove it to go on"),
                    )
                })?;
                match &journal.delta_before {
                    None => {
                        self.finish(&journal).await?;
                        recovery.completed = Some(journal.run_id);
                    }
                    Some(before) => {
                        if !self.published_by(&journal.run_id).await? {
                            self.roll_back(before).await?;
                            recovery.rolled_back = Some(journal.run_id.clone());
                        }
                        self.remove(COMMIT_FILE).await?;
                    }
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::output(
                    url,
                    format!("reading the commit journal: {e}"),
                ))
            }
        }
        recovery.removed = self.remove_staging(None).await?;
        Ok(recovery)
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
    /// `distinct` names columns whose values are nearly all distinct: they are written
    /// without a dictionary, which for them is built for every column chunk only to
    /// outgrow its page and be dropped (a sixth of the graph tables' encoding time, and
    /// their files come out slightly smaller).
    pub async fn write_table(
        &self,
        table: &str,
        df: DataFrame,
        metadata: &[(String, String)],
        distinct: &[&str],
    ) -> Result<u64> {
        let df = reader_safe_frame(df)?;
        let target = self.table_url(table)?;
        let staged = self.staged(&format!("{table}.parquet"))?;
        let props = distinct
            .iter()
            .fold(WriterProperties::builder(), |props, &column| {
                props.set_column_dictionary_enabled(ColumnPath::from(column), false)
            });
        let props = props
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
            Error::output(
                target.as_str(),
                format!("writing table '{table}' failed: {e}"),
            )
        };
        match self.format {
            TableFormat::Parquet => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let path = match staged {
                    Some((path, _)) => path,
                    None => object_path(&target)?,
                };
                let mut sink = BufWriter::new(self.store.clone(), path);
                let mut writer = ColumnsWriter::try_new(schema, props)?;
                let mut rows = 0u64;
                // The query runs on a task of its own, a couple of batches ahead: encoding
                // here would otherwise hold up the query's last stages, which run in the
                // task that polls them, and the tables written beside it.
                let mut stream = spawn_buffered(df.execute_stream().await?, 2);
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    writer.write(&batch).map_err(|e| failed(&e))?;
                    for chunk in writer.chunks().filled() {
                        sink.put(chunk).await.map_err(|e| failed(&e))?;
                    }
                }
                writer.finish().map_err(|e| failed(&e))?;
                for chunk in writer.chunks().all() {
                    sink.put(chunk).await.map_err(|e| failed(&e))?;
                }
                // The file appears only now, complete.
                sink.shutdown().await.map_err(|e| failed(&e))?;
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
        let (path, url) = self.object(name)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| Error::output(url, e))?;
        Ok(())
    }

    /// Whether a file `name` is under the output.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        let (path, url) = self.object(name)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::output(url, e)),
        }
    }

    pub fn storage(&self) -> &StorageOptions {
        &self.storage
    }
}

/// Removes the empty folders under `dir`, deepest first, and `dir` if it ends up empty.
fn remove_empty_dirs(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let _ = remove_empty_dirs(&path);
        }
    }
    std::fs::remove_dir(dir)
}

/// A Parquet writer into [`Chunks`] that encodes a batch's columns on several threads.
/// Encoding is most of writing a table, and customer_360, written last, would otherwise
/// leave all cores but one idle while the run waits for it. Row groups end by row count
/// (the properties this module writes with set no byte limit).
struct ColumnsWriter {
    file: SerializedFileWriter<Chunks>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The open row group's column writers, one per leaf column.
    columns: Vec<Mutex<ArrowColumnWriter>>,
    /// Rows in the open row group.
    rows: usize,
    max_rows: usize,
    threads: usize,
}

impl ColumnsWriter {
    fn try_new(schema: SchemaRef, props: WriterProperties) -> parquet::errors::Result<Self> {
        let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX);
        // Through `ArrowWriter`, so the file carries the Arrow schema as its writer would.
        let (file, factory) = ArrowWriter::try_new(Chunks::default(), schema.clone(), Some(props))?
            .into_serialized_writer()?;
        let columns = Self::open(&factory, 0)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            file,
            factory,
            schema,
            threads: threads.min(columns.len()).max(1),
            columns,
            rows: 0,
            max_rows: max_rows.max(1),
        })
    }

    fn open(
        factory: &ArrowRowGroupWriterFactory,
        row_group: usize,
    ) -> parquet::errors::Result<Vec<Mutex<ArrowColumnWriter>>> {
        let writers = factory.create_column_writers(row_group)?;
        Ok(writers.into_iter().map(Mutex::new).collect())
    }

    fn chunks(&mut self) -> &mut Chunks {
        self.file.inner_mut()
    }

    fn write(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            let n = batch.num_rows().min(self.max_rows - self.rows);
            self.encode(&batch.slice(0, n))?;
            self.rows += n;
            if self.rows == self.max_rows {
                self.flush()?;
            }
            batch = batch.slice(n, batch.num_rows() - n);
        }
        Ok(())
    }

    fn encode(&self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let mut leaves = vec![];
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        // Each thread takes the next column not yet encoded: their costs differ widely.
        let next = AtomicUsize::new(0);
        let work = || -> parquet::errors::Result<()> {
            loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                let Some(leaf) = leaves.get(c) else {
                    return Ok(());
                };
                let mut column = self.columns[c].lock().expect("no encoder panicked");
                column.write(leaf)?;
            }
        };
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..self.threads).map(|_| scope.spawn(work)).collect();
            let mine = work();
            helpers
                .into_iter()
                .map(|h| h.join().expect("no encoder panicked"))
                .chain([mine])
                .collect()
        })
    }

    /// Closes the open row group into the file.
    fn flush(&mut self) -> parquet::errors::Result<()> {
        let next = Self::open(&self.factory, self.file.flushed_row_groups().len() + 1)?;
        let columns = std::mem::replace(&mut self.columns, next);
        let mut row_group = self.file.next_row_group()?;
        for column in columns {
            let column = column.into_inner().expect("no encoder panicked");
            column.close()?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        self.rows = 0;
        Ok(())
    }

    fn finish(&mut self) -> parquet::errors::Result<()> {
        if self.rows > 0 {
            self.flush()?;
        }
        self.file.finish()?;
        Ok(())
    }
}

/// What a Parquet writer encodes into: chunks of a fixed size, each handed whole to the
/// object store once full. One growing buffer is copied every time it doubles, and again
/// into the store's own buffer; a chunk is written once and passed on without a copy.
#[derive(Default)]
struct Chunks {
    full: Vec<bytes::Bytes>,
    current: Vec<u8>,
}

impl Chunks {
    const SIZE: usize = 8 << 20;

    /// The chunks filled so far.
    fn filled(&mut self) -> Vec<bytes::Bytes> {
        std::mem::take(&mut self.full)
    }

    /// Every byte written and not yet taken, the last chunk however full.
    fn all(&mut self) -> Vec<bytes::Bytes> {
        if !self.current.is_empty() {
            self.full.push(std::mem::take(&mut self.current).into());
        }
        self.filled()
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let written = buf.len();
        while !buf.is_empty() {
            if self.current.capacity() == 0 {
                self.current = Vec::with_capacity(Self::SIZE);
            }
            let n = buf.len().min(Self::SIZE - self.current.len());
            self.current.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.current.len() == Self::SIZE {
                self.full.push(std::mem::take(&mut self.current).into());
            }
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array, ListBuilder, StringArray, StringBuilder};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn written(
        batches: &[RecordBatch],
        schema: SchemaRef,
    ) -> ParquetRecordBatchReaderBuilder<bytes::Bytes> {
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(10))
            .build();
        let mut writer = ColumnsWriter::try_new(schema, props).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        let bytes = writer.chunks().all().concat();
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap()
    }

    #[test]
    fn columns_encoded_on_several_threads_read_back_as_written_across_row_groups() {
        let mut names = ListBuilder::new(StringBuilder::new());
        for i in 0..23 {
            if i % 5 == 0 {
                names.append_null();
                continue;
            }
            for j in 0..i % 3 {
                names.values().append_value(format!("p{i}-{j}"));
            }
            names.append(true);
        }
        let ids: StringArray = (0..23)
            .map(|i| (i % 7 != 0).then(|| format!("c360_{i}")))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as ArrayRef),
            ("n", Arc::new(Int64Array::from_iter_values(0..23)) as _),
            ("names", Arc::new(names.finish()) as _),
        ])
        .unwrap();
        // Batches that end inside a row group and one that spans two.
        let parts = [batch.slice(0, 7), batch.slice(7, 0), batch.slice(7, 16)];
        let reader = written(&parts, batch.schema());
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [10, 10, 3]);
        let read: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let read = arrow::compute::concat_batches(&batch.schema(), &read).unwrap();
        assert_eq!(read, batch);

        let empty = written(&[], batch.schema());
        assert_eq!(empty.metadata().num_row_groups(), 0);
        assert_eq!(empty.schema(), &batch.schema());
    }
}
