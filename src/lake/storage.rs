//! Where tables live: parsing locations (plain paths, `file://`, `s3://`, `memory://`) and
//! building the object store for them from the `AWS_*` environment and per-table options,
//! so Parquet (DataFusion) and Delta (delta-rs) reads use the same credentials and endpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::memory::InMemory;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use url::Url;

use crate::error::{Error, Result};

/// Options that tune c360's own handling of a store rather than the store's protocol.
const RETRY_KEYS: [&str; 2] = ["max_retries", "retry_timeout"];
const DEFAULT_MAX_RETRIES: usize = 3;
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// One process-wide in-memory store, so what a test writes to `memory://` it can read back.
static MEMORY: LazyLock<Arc<InMemory>> = LazyLock::new(|| Arc::new(InMemory::new()));

/// Turns a location as written by a user into a URL. Plain paths are made absolute against
/// `base` (the project file's folder) or the working directory; glob characters are kept.
pub fn resolve_location(location: &str, base: Option<&Path>) -> Result<Url> {
    let location = location.trim();
    if location.is_empty() {
        return Err(Error::location(location, "the location is empty"));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        let url = Url::parse(location).map_err(|e| Error::location(location, e))?;
        return match scheme {
            "file" | "s3" | "s3a" | "memory" => Ok(url),
            "gs" | "gcs" | "az" | "abfs" | "abfss" | "azure" => Err(Error::location(
                location,
                format!("'{scheme}://' is not enabled in this build; supported: file://, s3://, memory://"),
            )),
            other => Err(Error::location(
                location,
                format!("unsupported scheme '{other}://'; expected a path, file://, s3:// or memory://"),
            )),
        };
    }
    let path = Path::new(location);
    let joined = match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    };
    let absolute = std::path::absolute(&joined).map_err(|e| Error::location(location, e))?;
    let is_dir = absolute.is_dir() || location.ends_with('/');
    let url = if is_dir {
        Url::from_directory_path(&absolute)
    } else {
        Url::from_file_path(&absolute)
    };
    url.map_err(|()| Error::location(location, "not a valid local path"))
}

/// Storage options of one table, with keys in object_store's canonical spelling
/// (`aws_endpoint`, `aws_region`, ...). Values are never shown: they may hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(BTreeMap<String, String>);

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl StorageOptions {
    /// Validates and canonicalizes keys as written in a project file or SQL `OPTIONS`
    /// (`aws.endpoint`, `AWS_ENDPOINT_URL` and `endpoint` all mean `aws_endpoint`).
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut out = BTreeMap::new();
        for (key, value) in pairs {
            if crate::redact::is_secret_key(key) {
                crate::redact::register(value);
            }
            out.insert(canonical_key(key)?, value.to_string());
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self` with `overrides` taking precedence.
    pub fn merged(&self, overrides: &StorageOptions) -> StorageOptions {
        let mut out = self.0.clone();
        out.extend(overrides.0.clone());
        Self(out)
    }

    /// These options as `CREATE EXTERNAL TABLE` option keys.
    pub fn for_sql(&self) -> std::collections::HashMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (format!("storage.{k}"), v.clone()))
            .collect()
    }

    /// The `AWS_*` environment, as options (explicit options override these).
    fn from_env() -> Self {
        let pairs = std::env::vars().filter_map(|(k, v)| {
            let key = k.to_ascii_lowercase();
            (k.starts_with("AWS_") && AmazonS3ConfigKey::from_str(&key).is_ok()).then_some((k, v))
        });
        let mut out = BTreeMap::new();
        for (k, v) in pairs {
            if let Ok(key) = canonical_key(&k) {
                out.insert(key, v);
            }
        }
        Self(out)
    }

    fn retry_config(&self, location: &str) -> Result<RetryConfig> {
        let max_retries = match self.0.get("max_retries") {
            Some(v) => v.parse().map_err(|_| {
                Error::location(
                    location,
                    format!("max_retries must be a whole number, got '{v}'"),
                )
            })?,
            None => DEFAULT_MAX_RETRIES,
        };
        let retry_timeout = match self.0.get("retry_timeout") {
            Some(v) => parse_duration(v).ok_or_else(|| {
                Error::location(
                    location,
                    format!("retry_timeout must be a duration such as '30s', got '{v}'"),
                )
            })?,
            None => DEFAULT_RETRY_TIMEOUT,
        };
        Ok(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries,
            retry_timeout,
        })
    }

    /// The full option set delta-rs should see for `url`: environment, then explicit options,
    /// then c360's retry defaults, so both readers agree.
    pub fn for_delta(&self, url: &Url) -> std::collections::HashMap<String, String> {
        let mut out: std::collections::HashMap<String, String> = match url.scheme() {
            "s3" | "s3a" => Self::from_env().merged(self).0.into_iter().collect(),
            _ => self.0.clone().into_iter().collect(),
        };
        out.entry("max_retries".into())
            .or_insert_with(|| DEFAULT_MAX_RETRIES.to_string());
        out.entry("retry_timeout".into())
            .or_insert_with(|| format!("{}s", DEFAULT_RETRY_TIMEOUT.as_secs()));
        out
    }
}

fn canonical_key(key: &str) -> Result<String> {
    let lower = key.trim().to_ascii_lowercase();
    let bare = lower
        .strip_prefix("format.")
        .or_else(|| lower.strip_prefix("storage."))
        .unwrap_or(&lower);
    let bare = match bare.strip_prefix("aws.") {
        Some(rest) => format!("aws_{rest}"),
        None => bare.to_string(),
    };
    if RETRY_KEYS.contains(&bare.as_str()) {
        return Ok(bare);
    }
    match AmazonS3ConfigKey::from_str(&bare) {
        Ok(k) => Ok(k.as_ref().to_string()),
        Err(_) => Err(Error::location(
            "",
            format!(
                "unknown storage option '{key}'; expected an S3 option such as aws_endpoint, \
                 aws_region, aws_access_key_id, aws_secret_access_key, aws_allow_http, or \
                 max_retries / retry_timeout"
            ),
        )),
    }
}

fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = v.split_at(
        v.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(v.len()),
    );
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// True when `key` (as written by a user) names a storage option rather than a format option.
pub fn is_storage_key(key: &str) -> bool {
    canonical_key(key).is_ok()
}

/// The object store serving `url`, built from the environment and `options`.
pub fn object_store_for(url: &Url, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    let location = url.as_str();
    match url.scheme() {
        "s3" | "s3a" => {
            let env = StorageOptions::from_env();
            let all = env.merged(options);
            let mut builder = AmazonS3Builder::new().with_url(location);
            for (k, v) in &all.0 {
                if RETRY_KEYS.contains(&k.as_str()) {
                    continue;
                }
                let key = AmazonS3ConfigKey::from_str(k).map_err(|e| Error::location(location, e))?;
                builder = builder.with_config(key, v);
            }
            builder = builder.with_retry(all.retry_config(location)?);
            let store = builder.build().map_err(|e| Error::location(location, e))?;
            Ok(Arc::new(store))
        }
        "memory" if options.is_empty() => Ok(MEMORY.clone()),
        "file" if options.is_empty() => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
        "memory" | "file" => Err(Error::location(
            location,
            format!("storage options {options:?} apply to object stores, not to local or in-memory tables"),
        )),
        other => Err(Error::location(location, format!("unsupported scheme '{other}://'"))),
    }
}

/// Registers the store for `url` (keyed by scheme and bucket) with DataFusion's runtime.
/// Local paths are served by DataFusion's default store and need nothing.
pub fn register_store(runtime: &RuntimeEnv, url: &Url, options: &StorageOptions) -> Result<()> {
    if url.scheme() == "file" {
        if !options.is_empty() {
            object_store_for(url, options)?;
        }
        return Ok(());
    }
    let store = object_store_for(url, options)?;
    let mut root = url.clone();
    root.set_path("/");
    runtime.register_object_store(&root, store);
    Ok(())
}

/// The shared in-memory store behind `memory://`.
pub fn memory_store() -> Arc<InMemory> {
    MEMORY.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_canonical() {
        let o = StorageOptions::parse([
            ("aws.endpoint", "http://x"),
            ("AWS_ALLOW_HTTP", "true"),
            ("format.aws_region", "eu"),
            ("max_retries", "2"),
        ])
        .unwrap();
        let keys: Vec<_> = o.0.keys().cloned().collect();
        assert_eq!(
            keys,
            ["allow_http", "aws_endpoint", "aws_region", "max_retries"]
        );
        assert!(StorageOptions::parse([("aws.endpont", "x")]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("soon"), None);
    }

    #[test]
    fn locations() {
        let u = resolve_location("data/t", Some(Path::new("/p"))).unwrap();
        assert_eq!(u.as_str(), "file:///p/data/t");
        assert_eq!(
            resolve_location("s3://b/k", None).unwrap().host_str(),
            Some("b")
        );
        assert!(resolve_location("ftp://x/y", None).is_err());
        assert!(resolve_location("gs://x/y", None).is_err());
    }
}
