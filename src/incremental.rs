//! Incremental runs. Each run leaves `_c360_state.json` beside its output, published with
//! it: the as-of time, the signatures of the identity configuration and of the feature
//! definitions, and every data file it read of each input (with size and last change for
//! Parquet files; Delta files never change in place).
//!
//! A later run over the same output compares. When every file it read before is still
//! there unchanged, it reads only what it has not read: new files, and rows of old files
//! whose event time passed the previous as-of time. It adds them to the previous graph and
//! recomputes the people they touch. Anything else (a file removed or rewritten, a Delta
//! table compacted, a changed identity configuration, an earlier as-of time,
//! `--full-refresh`) makes a full run, and the run says why.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::signature;
use crate::lake::Snapshot;
use crate::project::Project;

/// The state file, beside the output's tables.
pub const STATE_FILE: &str = "_c360_state.json";
const STATE_VERSION: u32 = 1;

/// What a run read, for the next one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// UTC micros.
    pub as_of: i64,
    pub identity: String,
    pub features: String,
    pub inputs: BTreeMap<String, InputState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputState {
    /// Path or URI -> (size, last change).
    pub files: BTreeMap<String, (u64, i64)>,
    /// Rows read into the identity graph, by every run this one continues.
    pub rows: u64,
}

/// What an incremental run reads of one input: all of the new files, and the rows of old
/// files whose event time passed the previous as-of time.
#[derive(Debug, Clone, Default)]
pub struct Unread {
    pub new: Vec<String>,
    pub old: Vec<String>,
}

/// How a run goes.
#[derive(Debug, Clone)]
pub enum Mode {
    Full {
        reason: String,
    },
    Incremental {
        /// The previous run's as-of time.
        since: i64,
        inputs: BTreeMap<String, Unread>,
        /// Rows each input gave the previous graph.
        rows: BTreeMap<String, u64>,
        /// The feature definitions changed: every person's features are recomputed.
        features_changed: bool,
    },
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Full { .. } => "full",
            Mode::Incremental { .. } => "incremental",
        }
    }
}

/// Signature of everything the identity graph depends on besides the rows: the
/// `[identity]` section and each input's name, location, ids and event time.
pub fn identity_signature(project: &Project) -> String {
    let mut parts = vec![project.identity.canonical_text()];
    for i in &project.inputs {
        // As a URL: the same lake named from another folder is the same lake.
        let location = crate::lake::resolve_location(&i.table.location, None)
            .map_or_else(|_| i.table.location.clone(), |url| url.to_string());
        parts.push(format!(
            "{}|{location}|{:?}|{:?}|{:?}",
            i.name, i.table.format, i.ids, i.event_time
        ));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    signature(&refs)
}

/// Signature of every trait and feature definition, in order.
pub fn features_signature(project: &Project) -> String {
    let mut parts: Vec<String> = project.identity.priority.clone();
    parts.extend(
        project
            .catalog
            .traits
            .iter()
            .map(|t| format!("{}={}", t.name, t.signature())),
    );
    parts.extend(
        project
            .catalog
            .features
            .iter()
            .map(|f| format!("{}={}", f.name, f.signature())),
    );
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    signature(&refs)
}

/// The state a run reading `read` as of `as_of` leaves, with `rows` per input.
pub fn state_after(
    project: &Project,
    as_of: i64,
    read: &[(String, &Snapshot)],
    rows: &BTreeMap<String, u64>,
) -> State {
    State {
        version: STATE_VERSION,
        as_of,
        identity: identity_signature(project),
        features: features_signature(project),
        inputs: read
            .iter()
            .map(|(name, snapshot)| {
                let state = InputState {
                    files: snapshot.listing.clone(),
                    rows: rows.get(name).copied().unwrap_or(0),
                };
                (name.clone(), state)
            })
            .collect(),
    }
}

/// Decides how a run as of `as_of` that found `read` goes, after a run that left
/// `previous` (or a reason there is none to continue).
pub fn decide(
    previous: std::result::Result<State, String>,
    project: &Project,
    as_of: i64,
    read: &[(String, &Snapshot)],
    full_refresh: bool,
) -> Mode {
    let full = |reason: String| Mode::Full { reason };
    if full_refresh {
        return full("--full-refresh".into());
    }
    let previous = match previous {
        Ok(p) => p,
        Err(reason) => return full(reason),
    };
    if previous.version != STATE_VERSION {
        return full(format!(
            "the previous run's state is of version {}, not {STATE_VERSION}",
            previous.version
        ));
    }
    if previous.identity != identity_signature(project) {
        return full("the identity configuration or the inputs changed".into());
    }
    if as_of < previous.as_of {
        return full("the as-of time is before the previous run's".into());
    }
    let mut inputs = BTreeMap::new();
    for (name, snapshot) in read {
        let Some(before) = previous.inputs.get(name) else {
            return full(format!("input '{name}' is new"));
        };
        if snapshot.listing.is_empty() {
            return full(format!(
                "input '{name}': its files cannot be listed (a glob or an empty location)"
            ));
        }
        let mut unread = Unread::default();
        for (file, meta) in &before.files {
            match snapshot.listing.get(file) {
                None => return full(format!("input '{name}': '{file}' was removed")),
                Some(now) if now != meta => {
                    return full(format!("input '{name}': '{file}' was rewritten"))
                }
                Some(_) => unread.old.push(file.clone()),
            }
        }
        unread.new = snapshot
            .listing
            .keys()
            .filter(|f| !before.files.contains_key(*f))
            .cloned()
            .collect();
        inputs.insert(name.clone(), unread);
    }
    Mode::Incremental {
        since: previous.as_of,
        inputs,
        rows: previous
            .inputs
            .iter()
            .map(|(name, i)| (name.clone(), i.rows))
            .collect(),
        features_changed: previous.features != features_signature(project),
    }
}
