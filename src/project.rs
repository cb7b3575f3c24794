//! The project file, `c360.toml`: which tables make up the lake and which of their columns
//! identify a person. Errors name the file, the line and the key, and say what was expected.
//!
//! ```toml
//! [project]
//! name = "shop"
//!
//! [storage]                       # defaults for every input on an object store
//! aws_region = "eu-west-1"
//!
//! [[inputs]]
//! name = "identifies"
//! location = "s3://lake/identifies"   # or a path relative to this file
//! format = "delta"                    # auto (default) | parquet | delta
//! version = 3                         # or timestamp = "2026-01-31T00:00:00Z"
//! event_time = "ts"
//! ids = { anonymous_id = "anonymous_id", user_id = "user_id", email = "email" }
//! storage = { aws_endpoint = "${S3_ENDPOINT}" }
//! ```
//!
//! `ids` maps a column to its id type: one of [`WELL_KNOWN_ID_TYPES`] or any other
//! lower-case name. `${VAR}` in a location or storage value is read from the environment.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::prelude::{ident, lit, DataFrame, SessionContext};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::features::{Catalog, RawFeature, RawTrait};
use crate::identity::config::{IdentityConfig, RawIdentity};
use crate::lake::{self, Format, Snapshot, StorageOptions, TableSpec, TimeTravel};

/// Id types c360 knows how to normalize; others are accepted and compared as written.
pub const WELL_KNOWN_ID_TYPES: [&str; 6] = [
    "anonymous_id",
    "user_id",
    "email",
    "phone",
    "crm_id",
    "payment_id",
];

/// A validated project.
#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    /// The project file, as given.
    pub path: PathBuf,
    pub inputs: Vec<Input>,
    /// The `[identity]` section, with defaults where it is silent.
    pub identity: IdentityConfig,
    /// Whether the file has an `[identity]` section: sessions then build the graph.
    pub has_identity: bool,
    /// `[[features]]` and `[[traits]]`.
    pub catalog: Catalog,
    /// `[storage]`: defaults for inputs on object stores, and for the run's output.
    pub storage: StorageOptions,
}

/// One input table of the lake.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub table: TableSpec,
    pub ids: Vec<IdColumn>,
    pub event_time: Option<String>,
    /// Line of the `[[inputs]]` entry, for later errors.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdColumn {
    pub column: String,
    pub id_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    #[serde(default)]
    project: RawMeta,
    #[serde(default)]
    storage: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    inputs: Vec<Spanned<RawInput>>,
    identity: Option<RawIdentity>,
    #[serde(default)]
    features: Vec<Spanned<RawFeature>>,
    #[serde(default)]
    traits: Vec<Spanned<RawTrait>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: Spanned<String>,
    location: Spanned<String>,
    #[serde(default)]
    format: Format,
    version: Option<Spanned<i64>>,
    timestamp: Option<Spanned<String>>,
    event_time: Option<String>,
    #[serde(default)]
    ids: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    storage: BTreeMap<String, Spanned<String>>,
}

/// Reads a project file and validates it.
impl Project {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading project file '{}'", path.display()), e))?;
        Self::parse(&text, path)
    }

    /// Parses `text` as the project file at `path` (used for messages and relative locations).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let raw: RawProject = toml::from_str(text)
            .map_err(|e| Error::config(&shown, e.to_string().trim_end().to_string()))?;
        let at = |span: std::ops::Range<usize>, key: &str, msg: String| {
            Error::config(
                &shown,
                format!("line {}, key `{key}`: {msg}", line_of(text, span.start)),
            )
        };
        if raw.inputs.is_empty() {
            return Err(Error::config(
                &shown,
                "no inputs: expected at least one [[inputs]] table with `name` and `location`",
            ));
        }
        let defaults = storage_options(&raw.storage, "storage", &at)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut seen = HashSet::new();
        let mut inputs = Vec::with_capacity(raw.inputs.len());
        for spanned in &raw.inputs {
            let line = line_of(text, spanned.span().start);
            let r = spanned.get_ref();
            let name = r.name.get_ref().trim().to_string();
            if !is_identifier(&name) {
                return Err(at(r.name.span(), "inputs.name", format!(
                    "'{name}' is not a valid table name: expected letters, digits and '_', not starting with a digit"
                )));
            }
            if !seen.insert(name.to_lowercase()) {
                return Err(at(
                    r.name.span(),
                    "inputs.name",
                    format!("input '{name}' is declared twice"),
                ));
            }
            let location = expand_env(r.location.get_ref())
                .map_err(|m| at(r.location.span(), "inputs.location", m))?;
            let location = resolve_relative(&location, &base);
            let time_travel = match (&r.version, &r.timestamp) {
                (Some(v), Some(_)) => {
                    return Err(at(
                        v.span(),
                        "inputs.version",
                        "give either `version` or `timestamp`, not both".into(),
                    ))
                }
                (Some(v), None) if *v.get_ref() < 0 => {
                    return Err(at(
                        v.span(),
                        "inputs.version",
                        format!("expected a Delta version >= 0, got {}", v.get_ref()),
                    ))
                }
                (Some(v), None) => TimeTravel::Version(*v.get_ref()),
                (None, Some(t)) => {
                    chrono::DateTime::parse_from_rfc3339(t.get_ref()).map_err(|e| {
                        at(t.span(), "inputs.timestamp", format!(
                            "expected an RFC 3339 timestamp such as \"2026-01-31T00:00:00Z\", got \"{}\": {e}",
                            t.get_ref()
                        ))
                    })?;
                    TimeTravel::Timestamp(t.get_ref().clone())
                }
                (None, None) => TimeTravel::Latest,
            };
            if r.format == Format::Parquet && time_travel != TimeTravel::Latest {
                let span = r
                    .version
                    .as_ref()
                    .map(Spanned::span)
                    .or(r.timestamp.as_ref().map(Spanned::span));
                return Err(at(
                    span.unwrap_or(0..0),
                    "inputs.format",
                    "`version`/`timestamp` need a Delta table, but format is \"parquet\"".into(),
                ));
            }
            let mut ids = Vec::with_capacity(r.ids.len());
            for (column, id_type) in &r.ids {
                let t = id_type.get_ref().trim();
                if !is_identifier(t) || t.chars().any(|c| c.is_ascii_uppercase()) {
                    return Err(at(id_type.span(), &format!("inputs.ids.{column}"), format!(
                        "'{t}' is not a valid id type: expected one of {} or another lower-case name",
                        WELL_KNOWN_ID_TYPES.join(", ")
                    )));
                }
                ids.push(IdColumn {
                    column: column.clone(),
                    id_type: t.to_string(),
                });
            }
            let own = storage_options(&r.storage, "inputs.storage", &at)?;
            // `[storage]` is for object stores: a local input takes only its own options,
            // so a stray one is still reported.
            let on_store = location.contains("://") && !location.starts_with("file://");
            let storage = match on_store {
                true => defaults.merged(&own),
                false => own,
            };
            inputs.push(Input {
                name,
                table: TableSpec {
                    location,
                    format: r.format,
                    time_travel,
                    storage,
                },
                ids,
                event_time: r.event_time.clone(),
                line,
            });
        }
        let mut declared: Vec<String> = inputs
            .iter()
            .flat_map(|i| i.ids.iter().map(|c| c.id_type.clone()))
            .collect();
        declared.sort();
        declared.dedup();
        let identity = IdentityConfig::from_raw(
            raw.identity.as_ref().unwrap_or(&RawIdentity::default()),
            &declared,
            &at,
        )?;
        let catalog = Catalog::from_raw(
            &raw.features,
            &raw.traits,
            &inputs,
            &identity.priority,
            &|offset| line_of(text, offset),
            &at,
        )?;
        Ok(Project {
            catalog,
            storage: defaults,
            name: raw.project.name.unwrap_or_else(|| "c360".into()),
            path: path.to_path_buf(),
            inputs,
            identity,
            has_identity: raw.identity.is_some(),
        })
    }

    /// Opens every input and registers it in `ctx` under its name, checking that the
    /// declared id and event-time columns exist.
    pub async fn register_inputs(&self, ctx: &SessionContext) -> Result<()> {
        let state = ctx.state();
        for input in &self.inputs {
            let provider = lake::open(&state, &input.name, &input.table, None)
                .await
                .map_err(|e| input.error(e))?;
            input.check_columns(&provider.schema(), &self.path)?;
            ctx.register_table(input.name.as_str(), provider)?;
        }
        Ok(())
    }

    /// Registers every input as it was at `as_of` (UTC micros): Delta tables at the
    /// version current then, rows with a later event time left out. Returns what was read.
    pub async fn register_inputs_as_of(
        &self,
        ctx: &SessionContext,
        as_of: i64,
    ) -> Result<Vec<OpenedInput>> {
        let state = ctx.state();
        let at = chrono::DateTime::from_timestamp_micros(as_of)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut opened = vec![];
        for input in &self.inputs {
            let (spec, snapshot) = lake::pin(&input.table, Some(&at))
                .await
                .map_err(|e| input.error(e))?;
            let provider = lake::open(&state, &input.name, &spec, None)
                .await
                .map_err(|e| input.error(e))?;
            input.check_columns(&provider.schema(), &self.path)?;
            let input = OpenedInput {
                name: input.name.clone(),
                event_time: input.event_time.clone(),
                spec,
                provider,
                snapshot,
            };
            input.register(ctx, None, as_of)?;
            opened.push(input);
        }
        Ok(opened)
    }
}

/// An input pinned to what a run reads of it.
pub struct OpenedInput {
    pub name: String,
    pub event_time: Option<String>,
    /// Pinned: a Delta table at one version.
    pub spec: TableSpec,
    /// All its rows, whatever their event time.
    pub provider: Arc<dyn TableProvider>,
    pub snapshot: Snapshot,
}

impl OpenedInput {
    /// Registers under the input's name the rows of `provider` (default: the whole table)
    /// with an event time at or before `as_of`, or all of them without an event time.
    pub fn register(
        &self,
        ctx: &SessionContext,
        provider: Option<Arc<dyn TableProvider>>,
        as_of: i64,
    ) -> Result<()> {
        let provider = provider.unwrap_or_else(|| self.provider.clone());
        let provider = match &self.event_time {
            Some(column) => ctx
                .read_table(provider)?
                .filter(ident(column).lt_eq(lit(utc(as_of))))?
                .into_view(),
            None => provider,
        };
        ctx.deregister_table(self.name.as_str())?;
        ctx.register_table(self.name.as_str(), provider)?;
        Ok(())
    }

    /// Registers under the input's name only the rows a run continuing one as of `since`
    /// has not read: those of files in `new`, and those of files in `old` whose event time
    /// is after `since` (and, as always, at or before `as_of`).
    pub async fn register_unread(
        &self,
        ctx: &SessionContext,
        (new, old): (&[String], &[String]),
        since: i64,
        as_of: i64,
    ) -> Result<()> {
        let mut unread = self.read_files(ctx, new).await?;
        if let (Some(column), false) = (&self.event_time, old.is_empty() || as_of <= since) {
            let later = self
                .read_files(ctx, old)
                .await?
                .filter(ident(column).gt(lit(utc(since))))?;
            unread = unread.union(later)?;
        }
        self.register(ctx, Some(unread.into_view()), as_of)
    }

    async fn read_files(&self, ctx: &SessionContext, files: &[String]) -> Result<DataFrame> {
        if files.is_empty() {
            return Ok(ctx.read_table(self.provider.clone())?.filter(lit(false))?);
        }
        let subset =
            lake::open_files(&ctx.state(), self.provider.clone(), &self.spec, files).await?;
        Ok(ctx.read_table(subset)?)
    }
}

/// `micros` as a UTC timestamp literal.
fn utc(micros: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()))
}

impl Input {
    fn error(&self, source: Error) -> Error {
        Error::Input {
            input: self.name.clone(),
            location: self.table.location.clone(),
            source: Box::new(source),
        }
    }

    /// A project-file error at this input's line, under `inputs.<key>`.
    fn config_error(&self, project: &Path, key: &str, message: String) -> Error {
        Error::config(
            project.display().to_string(),
            format!("line {}, key `inputs.{key}`: {message}", self.line),
        )
    }

    fn check_columns(&self, schema: &SchemaRef, project: &Path) -> Result<()> {
        if schema.fields().is_empty() {
            return Err(self.error(Error::location(
                &self.table.location,
                "it holds no columns: its files are empty (0 bytes) or have an empty schema",
            )));
        }
        if let Some(column) = &self.event_time {
            if let Ok(field) = schema.field_with_name(column) {
                use arrow::datatypes::DataType as T;
                let temporal = matches!(
                    field.data_type(),
                    T::Timestamp(_, _)
                        | T::Date32
                        | T::Date64
                        | T::Utf8
                        | T::LargeUtf8
                        | T::Utf8View
                );
                if !temporal {
                    return Err(self.config_error(
                        project,
                        "event_time",
                        format!(
                            "column '{column}' of input '{}' is {}; expected a timestamp, a date, or text such as 2026-06-30T00:00:00Z",
                            self.name,
                            field.data_type()
                        ),
                    ));
                }
            }
        }
        let declared = self
            .ids
            .iter()
            .map(|id| (id.column.as_str(), "ids"))
            .chain(self.event_time.as_deref().map(|c| (c, "event_time")));
        for (column, key) in declared {
            if schema.field_with_name(column).is_err() {
                let available: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(self.config_error(
                    project,
                    key,
                    format!(
                        "input '{}' has no column '{column}'; its columns are: {}",
                        self.name,
                        available.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn storage_options<F>(
    raw: &BTreeMap<String, Spanned<String>>,
    key: &str,
    at: &F,
) -> Result<StorageOptions>
where
    F: Fn(std::ops::Range<usize>, &str, String) -> Error,
{
    let mut pairs = Vec::with_capacity(raw.len());
    for (k, v) in raw {
        let value = expand_env(v.get_ref()).map_err(|m| at(v.span(), &format!("{key}.{k}"), m))?;
        pairs.push((k.as_str(), value));
    }
    for (k, _) in &pairs {
        if let Err(e) = StorageOptions::parse([(*k, "")]) {
            let span = raw[*k].span();
            return Err(at(span, &format!("{key}.{k}"), e.cause()));
        }
    }
    StorageOptions::parse(pairs.iter().map(|(k, v)| (*k, v.as_str())))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Plain relative paths are relative to the project file, not to the working directory.
fn resolve_relative(location: &str, base: &Path) -> String {
    if location.contains("://") || Path::new(location).is_absolute() {
        return location.to_string();
    }
    base.join(location).to_string_lossy().into_owned()
}

/// Replaces `${NAME}` with the environment variable NAME.
fn expand_env(value: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed '${{' in \"{value}\""));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(format!("environment variable '{name}' is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Project> {
        Project::parse(text, Path::new("/p/c360.toml"))
    }

    const OK: &str = r#"
[project]
name = "t"

[[inputs]]
name = "tracks"
location = "lake/tracks"
event_time = "ts"
ids = { anonymous_id = "anonymous_id", uid = "user_id", loyalty = "loyalty_card" }
"#;

    #[test]
    fn valid_project() {
        let p = parse(OK).unwrap();
        assert_eq!(p.name, "t");
        let i = &p.inputs[0];
        assert_eq!(i.table.location, "/p/lake/tracks");
        assert_eq!(i.line, 5);
        assert!(i.ids.contains(&IdColumn {
            column: "uid".into(),
            id_type: "user_id".into()
        }));
        assert!(i.ids.iter().any(|c| c.id_type == "loyalty_card"));
    }

    #[test]
    fn errors_name_line_and_key() {
        let e = parse(&OK.replace("location =", "locaton ="))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 7") && e.contains("locaton"), "{e}");
        let e = parse(&OK.replace("\"t\"", "3")).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("string"), "{e}");
        let e = parse(&OK.replace("\"user_id\"", "\"User Id\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 9") && e.contains("inputs.ids.uid"), "{e}");
        let e = parse(&format!(
            "{OK}version = 1\ntimestamp = \"2026-01-01T00:00:00Z\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 10") && e.contains("not both"), "{e}");
        let e = parse(&format!("{OK}timestamp = \"yesterday\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 10") && e.contains("RFC 3339"), "{e}");
        let e = parse(&format!("{OK}storage = {{ aws_endpont = \"x\" }}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 10") && e.contains("aws_endpont"), "{e}");
        let e = parse("[project]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("no inputs"), "{e}");
        let e = parse(&format!(
            "{OK}\n[[inputs]]\nname = \"tracks\"\nlocation = \"x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("declared twice") && e.contains("line 12"), "{e}");
        let e = parse(&OK.replace("lake/tracks", "${C360_SURELY_UNSET_VAR}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("C360_SURELY_UNSET_VAR") && e.contains("line 7"),
            "{e}"
        );
    }
}
