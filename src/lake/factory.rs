//! `CREATE EXTERNAL TABLE ... STORED AS DELTA | PARQUET` over any supported location.
//! Storage options (`aws.*`, `aws_*`, `max_retries`) configure the object store; Delta
//! tables also take `version` or `timestamp` for time travel. Parquet is DataFusion's
//! `ListingTable` (files, directories, globs, hive partitions); Delta is delta-rs's provider.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{plan_err, DataFusionError, Result as DFResult};
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::datasource::listing_table_factory::ListingTableFactory;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::CreateExternalTable;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

use super::storage::{self, is_storage_key, resolve_location, StorageOptions};
use super::Format;
use crate::error::{Error, Result};

#[derive(Debug)]
pub struct LakeTableFactory {
    format: Format,
}

impl LakeTableFactory {
    pub fn new(format: Format) -> Self {
        Self { format }
    }
}

/// Splits `CREATE EXTERNAL TABLE` options into storage options and the rest.
fn split_options(
    options: &HashMap<String, String>,
) -> Result<(StorageOptions, HashMap<String, String>)> {
    let (storage, rest): (Vec<_>, Vec<_>) = options.iter().partition(|(k, _)| is_storage_key(k));
    let storage = StorageOptions::parse(storage.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok((
        storage,
        rest.into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

fn session_state(state: &dyn Session) -> DFResult<&SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| DataFusionError::Plan("lake tables need a DataFusion SessionState".into()))
}

#[async_trait]
impl TableProviderFactory for LakeTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> DFResult<Arc<dyn TableProvider>> {
        let (storage, rest) = split_options(&cmd.options)?;
        match self.format {
            Format::Delta => {
                let [location] = cmd.locations.as_slice() else {
                    return plan_err!(
                        "a Delta table has exactly one location, got {}",
                        cmd.locations.len()
                    );
                };
                let mut version = None;
                let mut timestamp = None;
                for (key, value) in &rest {
                    match key.strip_prefix("format.").unwrap_or(key) {
                        "version" => version = Some(value.clone()),
                        "timestamp" => timestamp = Some(value.clone()),
                        other => {
                            return plan_err!(
                                "unknown option '{other}' for Delta table '{}'; expected version, \
                                 timestamp or a storage option (aws.endpoint, aws.region, ...)",
                                cmd.name
                            )
                        }
                    }
                }
                Ok(open_delta(state, location, &storage, version, timestamp).await?)
            }
            Format::Parquet | Format::Auto => {
                let mut locations = Vec::with_capacity(cmd.locations.len());
                for location in &cmd.locations {
                    let mut url = resolve_location(location, None)?;
                    let stored = super::stat(&url, &storage).await?;
                    if stored == super::Stored::Pattern && url.scheme() != "file" {
                        return Err(Error::location(
                            location,
                            "globs are supported for local paths; on object stores give the folder",
                        )
                        .into());
                    }
                    // A folder must end in '/' for the listing to treat it as one.
                    if stored == super::Stored::Directory && !url.path().ends_with('/') {
                        url.set_path(&format!("{}/", url.path()));
                    }
                    storage::register_store(state.runtime_env(), &url, &storage)?;
                    locations.push(url);
                }
                let mut parquet = cmd.clone();
                parquet.file_type = "PARQUET".into();
                parquet.options = rest;
                // DataFusion expands globs only in filesystem paths, not in file:// URLs.
                parquet.locations = locations
                    .iter()
                    .map(|url| match url.to_file_path() {
                        Ok(path) if url.scheme() == "file" => {
                            let mut p = path.display().to_string();
                            if url.path().ends_with('/') && !p.ends_with('/') {
                                p.push('/');
                            }
                            p
                        }
                        _ => url.to_string(),
                    })
                    .collect();
                match ListingTableFactory::new().create(state, &parquet).await {
                    Ok(provider) => {
                        for url in &locations {
                            if let Some(cause) = super::find_bad_parquet(url, &storage, false).await
                            {
                                return Err(Error::location(url.as_str(), cause).into());
                            }
                        }
                        nullable(state, provider)
                    }
                    Err(e) => {
                        for url in &locations {
                            if let Some(cause) = super::find_bad_parquet(url, &storage, true).await
                            {
                                return Err(Error::location(url.as_str(), cause).into());
                            }
                        }
                        Err(e.context(format!(
                            "Parquet table '{}' at '{}'",
                            cmd.name,
                            parquet.locations.join("', '")
                        )))
                    }
                }
            }
        }
    }
}

/// `provider` with every column nullable. Parquet writers mark columns required that a
/// later file of the same table may lack; the lake's rows are NULL there, not an error.
fn nullable(
    state: &dyn Session,
    provider: Arc<dyn TableProvider>,
) -> DFResult<Arc<dyn TableProvider>> {
    let Some(table) = provider.downcast_ref::<ListingTable>() else {
        return Ok(provider);
    };
    let schema = provider.schema();
    if schema.fields().iter().all(|f| f.is_nullable()) {
        return Ok(provider);
    }
    let partitions: Vec<&str> = table
        .options()
        .table_partition_cols
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| !partitions.contains(&f.name().as_str()))
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let file_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let config = ListingTableConfig::new_with_multi_paths(table.table_paths().clone())
        .with_listing_options(table.options().clone())
        .with_schema(file_schema);
    let cache = state.runtime_env().cache_manager.get_file_statistic_cache();
    Ok(Arc::new(ListingTable::try_new(config)?.with_cache(cache)))
}

fn delta_builder(url: &Url, storage: &StorageOptions) -> Result<DeltaTableBuilder> {
    let mut b =
        DeltaTableBuilder::from_url(url.clone())?.with_storage_options(storage.for_delta(url));
    if url.scheme() == "memory" {
        b = b.with_storage_backend(storage::memory_store(), url.clone());
    }
    Ok(b)
}

/// The Delta table at `url` as it was at `as_of` (RFC 3339), or the latest. A table whose
/// first commit is after `as_of` (a backfill) is loaded at its latest version, and says so.
pub async fn delta_version_at(
    url: &Url,
    storage: &StorageOptions,
    as_of: Option<&str>,
) -> Result<(DeltaTable, Option<String>)> {
    let not_table = |e: DeltaTableError| Error::location(url.as_str(), e);
    let Some(at) = as_of else {
        let table = delta_builder(url, storage)?
            .load()
            .await
            .map_err(not_table)?;
        return Ok((table, None));
    };
    let table = delta_builder(url, storage)?
        .with_datestring(at)
        .map_err(not_table)?
        .load()
        .await
        .map_err(not_table)?;
    let version = table.version().unwrap_or(0);
    let committed = table
        .snapshot()
        .ok()
        .and_then(|s| s.version_timestamp(version));
    let requested = chrono::DateTime::parse_from_rfc3339(at).map(|t| t.timestamp_millis());
    match (committed, requested) {
        // No version existed at `as_of`: the table was loaded later (a backfill), so the
        // latest version is the best account of the past, read up to `as_of` by event time.
        (Some(c), Ok(r)) if c > r => {
            let latest = delta_builder(url, storage)?
                .load()
                .await
                .map_err(not_table)?;
            let version = latest.version().unwrap_or(0);
            Ok((latest, Some(format!(
                "first committed after the as-of time: read at its latest version, {version}, rows filtered by event time"
            ))))
        }
        _ => Ok((table, None)),
    }
}

/// Version `version` of the Delta table at `url`.
pub async fn delta_at_version(
    url: &Url,
    storage: &StorageOptions,
    version: u64,
) -> Result<DeltaTable> {
    delta_builder(url, storage)?
        .with_version(version)
        .load()
        .await
        .map_err(|e| Error::location(url.as_str(), e))
}

/// The data files of the loaded Delta `table` at `url`: URI -> size and last change
/// (millis). A file whose rows a deletion vector hides gets the vector's hash
/// as its last change: to a later run, it was rewritten.
pub fn delta_files(url: &Url, table: &DeltaTable) -> Result<Vec<(String, (u64, i64))>> {
    let state = table
        .snapshot()
        .map_err(|e| Error::location(url.as_str(), e))?;
    let log_store = table.log_store();
    Ok(state
        .log_data()
        .into_iter()
        .map(|file| {
            let uri = log_store.to_uri(&file.object_store_path());
            let changed = match file.deletion_vector_descriptor() {
                Some(dv) => c360_udfs::ids::fnv1a(&[&format!("{dv:?}")]) as i64,
                None => file.modification_time(),
            };
            (uri, (file.size().max(0) as u64, changed))
        })
        .collect())
}

/// Version `version` of the Delta table at `url`, reading only `files` (URIs of its data
/// files, as [`delta_files`] gives them).
pub async fn open_delta_files(
    state: &dyn Session,
    url: &Url,
    storage: &StorageOptions,
    version: u64,
    files: &[String],
) -> Result<Arc<dyn TableProvider>> {
    let table = delta_at_version(url, storage, version).await?;
    storage::register_store(state.runtime_env(), url, storage)?;
    let state = session_state(state)?.clone();
    Ok(table
        .table_provider()
        .with_file_paths(files.iter().cloned())
        .with_session(Arc::new(state))
        .await?)
}

async fn open_delta(
    state: &dyn Session,
    location: &str,
    storage: &StorageOptions,
    version: Option<String>,
    timestamp: Option<String>,
) -> Result<Arc<dyn TableProvider>> {
    let url = resolve_location(location, None)?;
    super::ensure_exists(&url, storage).await?;
    let builder = || delta_builder(&url, storage);
    let loaded = match (version, timestamp) {
        (Some(_), Some(_)) => {
            return Err(Error::location(
                location,
                "give either version or timestamp, not both",
            ))
        }
        (Some(v), None) => {
            let v: u64 = v.trim().parse().map_err(|_| {
                Error::location(
                    location,
                    format!("version must be a whole number, got '{v}'"),
                )
            })?;
            match builder()?.with_version(v).load().await {
                Ok(table) => Ok(table),
                // delta-rs reports a missing version through the log segment; say it plainly.
                Err(e) => match builder()?.load().await.ok().and_then(|t| t.version()) {
                    Some(latest) if v > latest => {
                        return Err(Error::location(
                            location,
                            format!("the Delta table has no version {v}: the latest is {latest}"),
                        ))
                    }
                    _ => Err(e),
                },
            }
        }
        (None, Some(ts)) => {
            let b = builder()?.with_datestring(&ts).map_err(|e| {
                Error::location(
                    location,
                    format!("timestamp must be RFC 3339 such as '2026-01-31T12:00:00Z', got '{ts}': {e}"),
                )
            })?;
            let requested = chrono::DateTime::parse_from_rfc3339(ts.trim())
                .map(|t| t.timestamp_millis())
                .ok();
            match b.load().await {
                // delta-rs falls back to the first version for times before it; a read "as of"
                // a time the table did not exist yet is a mistake worth stopping.
                Ok(table) => {
                    let committed = table
                        .version()
                        .and_then(|v| table.snapshot().ok()?.version_timestamp(v));
                    if let (Some(req), Some(at)) = (requested, committed) {
                        if at > req {
                            let first = chrono::DateTime::from_timestamp_millis(at)
                                .map(|d| d.to_rfc3339())
                                .unwrap_or_default();
                            return Err(Error::location(
                                location,
                                format!("the Delta table has no version at or before {ts}: its first commit is at {first}"),
                            ));
                        }
                    }
                    Ok(table)
                }
                Err(e) => Err(e),
            }
        }
        (None, None) => builder()?.load().await,
    };
    let table = loaded.map_err(|e| match e {
        DeltaTableError::NotATable(_) => Error::location(
            location,
            "not a Delta table: no _delta_log/ with commits found (use format = \"parquet\" for plain Parquet files)",
        ),
        other => Error::location(location, other),
    })?;
    // The scan reads data files through the session's store for this bucket: make it the
    // one configured with this table's options.
    storage::register_store(state.runtime_env(), &url, storage)?;
    let state = session_state(state)?.clone();
    let provider = table.table_provider().with_session(Arc::new(state)).await?;
    Ok(provider)
}
