//! Lake access: opening Parquet and Delta tables by location, on the local disk, in
//! memory or on S3. Project inputs and SQL `CREATE EXTERNAL TABLE` share one path, the
//! [`LakeTableFactory`], so a table reads the same whichever way it was declared.

mod factory;
pub mod storage;
mod subset;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::DFSchema;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::logical_expr::CreateExternalTable;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use url::Url;

pub use factory::{delta_version_at, LakeTableFactory};
pub use storage::{resolve_location, StorageOptions};
pub use subset::FileSubset;

use crate::error::{Error, Result};

/// How a table's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Delta if the location holds a `_delta_log/`, otherwise Parquet.
    #[default]
    Auto,
    Parquet,
    Delta,
}

impl Format {
    /// The name DataFusion's `STORED AS` uses for this format.
    pub fn file_type(self) -> &'static str {
        match self {
            Format::Delta => "DELTA",
            Format::Parquet | Format::Auto => "PARQUET",
        }
    }
}

/// Which version of a Delta table to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TimeTravel {
    #[default]
    Latest,
    Version(i64),
    /// An RFC 3339 timestamp: the version current at that time.
    Timestamp(String),
}

/// Everything needed to open one table.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub location: String,
    pub format: Format,
    pub time_travel: TimeTravel,
    pub storage: StorageOptions,
}

impl TableSpec {
    pub fn new(location: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            format: Format::Auto,
            time_travel: TimeTravel::Latest,
            storage: StorageOptions::default(),
        }
    }
}

/// Opens the table described by `spec`. Relative paths resolve against `base`.
pub async fn open(
    state: &dyn Session,
    name: &str,
    spec: &TableSpec,
    base: Option<&Path>,
) -> Result<Arc<dyn TableProvider>> {
    let url = resolve_location(&spec.location, base)?;
    // An explicit format goes straight to the factory, which checks the location itself.
    let format = match spec.format {
        Format::Auto => detect_format(&url, &spec.storage).await?,
        f => f,
    };
    if format != Format::Delta && spec.time_travel != TimeTravel::Latest {
        return Err(Error::location(
            &spec.location,
            "version/timestamp time travel needs a Delta table, but this is Parquet",
        ));
    }
    let mut options: HashMap<String, String> = spec.storage.for_sql();
    match &spec.time_travel {
        TimeTravel::Latest => {}
        TimeTravel::Version(v) => {
            options.insert("version".into(), v.to_string());
        }
        TimeTravel::Timestamp(t) => {
            options.insert("timestamp".into(), t.clone());
        }
    }
    let cmd = CreateExternalTable::builder(
        name,
        url.to_string(),
        format.file_type(),
        Arc::new(DFSchema::empty()),
    )
    .with_options(options)
    .build();
    LakeTableFactory::new(format)
        .create(state, &cmd)
        .await
        .map_err(Error::from)
}

fn has_glob(url: &Url) -> bool {
    url.path().contains(['*', '?', '['])
}

pub(crate) fn object_path(url: &Url) -> Result<ObjectPath> {
    ObjectPath::from_url_path(url.path()).map_err(|e| Error::location(url.as_str(), e))
}

/// What a location points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    File,
    Directory,
    /// A glob, resolved by the reader.
    Pattern,
}

/// Fails unless something is stored at `url`, naming the location and the store's answer.
pub(crate) async fn stat(url: &Url, storage: &StorageOptions) -> Result<Stored> {
    if has_glob(url) {
        return Ok(Stored::Pattern);
    }
    let store = storage::object_store_for(url, storage)?;
    let path = object_path(url)?;
    if !url.path().ends_with('/') && store.head(&path).await.is_ok() {
        return Ok(Stored::File);
    }
    match store.list(Some(&path)).next().await {
        Some(Ok(_)) => Ok(Stored::Directory),
        Some(Err(e)) => Err(Error::location(url.as_str(), e)),
        None => Err(Error::location(
            url.as_str(),
            "no such file or directory: nothing is stored there",
        )),
    }
}

async fn ensure_exists(url: &Url, storage: &StorageOptions) -> Result<()> {
    stat(url, storage).await.map(|_| ())
}

/// The first problem in the Parquet files under `url`, naming the file: a footer that cannot
/// be read, or a column name used twice (readers would silently take one of them). `all`:
/// every file; otherwise the first only, a cheap check on every open.
pub(crate) async fn find_bad_parquet(
    url: &Url,
    storage: &StorageOptions,
    all: bool,
) -> Option<String> {
    if has_glob(url) {
        return None;
    }
    let store = storage::object_store_for(url, storage).ok()?;
    let prefix = object_path(url).ok()?;
    let mut files = store.list(Some(&prefix));
    while let Some(Ok(meta)) = files.next().await {
        if !meta.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let footer = DFParquetMetadata::new(store.as_ref(), &meta);
        match footer.fetch_metadata().await {
            Err(e) => return Some(format!("cannot read Parquet file '{}': {e}", meta.location)),
            Ok(parquet) => {
                let mut seen = std::collections::HashSet::new();
                let root = parquet.file_metadata().schema_descr().root_schema();
                if let Some(twice) = root.get_fields().iter().find(|f| !seen.insert(f.name())) {
                    return Some(format!(
                        "Parquet file '{}' has more than one column named '{}': which one is meant is ambiguous",
                        meta.location,
                        twice.name()
                    ));
                }
            }
        }
        if !all {
            break;
        }
    }
    None
}

/// `full` (opened from `spec`, pinned as [`pin`] pins it) reading only `files`, keys of
/// its snapshot's listing.
pub async fn open_files(
    state: &dyn Session,
    full: Arc<dyn TableProvider>,
    spec: &TableSpec,
    files: &[String],
) -> Result<Arc<dyn TableProvider>> {
    match (spec.format, &spec.time_travel) {
        (Format::Delta, TimeTravel::Version(v)) => {
            let url = resolve_location(&spec.location, None)?;
            factory::open_delta_files(state, &url, &spec.storage, *v as u64, files).await
        }
        _ => Ok(Arc::new(FileSubset::new(
            full,
            files.iter().cloned().collect(),
        ))),
    }
}

/// Delta when a `_delta_log/` sits under the location, Parquet otherwise.
pub async fn detect_format(url: &Url, storage: &StorageOptions) -> Result<Format> {
    if has_glob(url) || url.path().ends_with(".parquet") {
        return Ok(Format::Parquet);
    }
    ensure_exists(url, storage).await?;
    let store = storage::object_store_for(url, storage)?;
    let log = object_path(url)?.join("_delta_log");
    match store.list(Some(&log)).next().await {
        Some(Ok(_)) => Ok(Format::Delta),
        Some(Err(e)) => Err(Error::location(url.as_str(), e)),
        None => Ok(Format::Parquet),
    }
}

/// What a run read of one table: the Delta version, or the Parquet files' count, size and
/// latest change, so a later run can tell whether anything changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Every data file read: object-store path (Parquet) or URI (Delta) -> size and last
    /// change. What incremental runs compare; too long for the catalog.
    #[serde(skip)]
    pub listing: std::collections::BTreeMap<String, (u64, i64)>,
}

/// Pins `spec` to what is there now (or at `as_of` for a Delta table without an explicit
/// version), and describes it.
pub async fn pin(spec: &TableSpec, as_of: Option<&str>) -> Result<(TableSpec, Snapshot)> {
    let url = resolve_location(&spec.location, None)?;
    let format = match spec.format {
        Format::Auto => detect_format(&url, &spec.storage).await?,
        f => f,
    };
    let mut pinned = spec.clone();
    pinned.format = format;
    if format == Format::Delta {
        let (table, note) = match &spec.time_travel {
            TimeTravel::Version(v) => (
                factory::delta_at_version(&url, &spec.storage, *v as u64).await?,
                None,
            ),
            TimeTravel::Timestamp(t) => delta_version_at(&url, &spec.storage, Some(t)).await?,
            TimeTravel::Latest => delta_version_at(&url, &spec.storage, as_of).await?,
        };
        let version = table.version().unwrap_or(0);
        pinned.time_travel = TimeTravel::Version(version as i64);
        let listing = factory::delta_files(&url, &table)?.into_iter().collect();
        let snapshot = Snapshot {
            format: "delta".into(),
            version: Some(version),
            files: None,
            bytes: None,
            last_modified: None,
            note,
            listing,
        };
        return Ok((pinned, snapshot));
    }
    ensure_exists(&url, &spec.storage).await?;
    let store = storage::object_store_for(&url, &spec.storage)?;
    let prefix = object_path(&url)?;
    let (mut files, mut bytes, mut latest) = (0usize, 0u64, None);
    let mut listing = std::collections::BTreeMap::new();
    let mut listed = store.list(Some(&prefix));
    while let Some(meta) = listed.next().await {
        let meta = meta.map_err(|e| Error::location(url.as_str(), e))?;
        if meta
            .location
            .filename()
            .is_some_and(|f| f.starts_with(['.', '_']))
        {
            continue;
        }
        files += 1;
        bytes += meta.size;
        latest = latest.max(Some(meta.last_modified));
        listing.insert(
            meta.location.to_string(),
            (meta.size, meta.last_modified.timestamp_micros()),
        );
    }
    if files == 0 {
        if let Ok(meta) = store.head(&prefix).await {
            (files, bytes, latest) = (1, meta.size, Some(meta.last_modified));
            listing.insert(
                meta.location.to_string(),
                (meta.size, meta.last_modified.timestamp_micros()),
            );
        }
    }
    let snapshot = Snapshot {
        format: "parquet".into(),
        version: None,
        files: Some(files),
        bytes: Some(bytes),
        last_modified: latest.map(|t| t.to_rfc3339()),
        note: None,
        listing,
    };
    Ok((pinned, snapshot))
}
