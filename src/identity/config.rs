//! `[identity]` in `c360.toml`: how identifiers are normalized, which values never stitch,
//! and the guards against over-merging.
//!
//! ```toml
//! [identity]
//! # Most trusted first: stars are centred on, and limits keep, higher-priority evidence.
//! priority = ["user_id", "crm_id", "email", "phone", "payment_id", "anonymous_id"]
//!
//! [identity.normalize]        # per id type: email | phone | trim | lower | none | SQL using `value`
//! loyalty_card = "upper(trim(value))"
//!
//! [identity.blocklist]        # exact values, or /regular expressions/, per id type
//! email = ["noreply@shop.com", "/^test\\d*@/"]
//! defaults = true             # also the built-in junk list (empty, unknown, test@test.com, ...)
//!
//! [identity.hubs]             # an identifier linked to more than N of another type is quarantined
//! anonymous_id = { user_id = 1, email = 10 }
//!
//! [identity.limits]           # at most N identifiers of a type per person
//! user_id = 1
//! email = 5
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use regex::{Regex, RegexSet};
use serde::Deserialize;
use toml::Spanned;

/// The order used when no `priority` is given: stable ids first, device ids last.
pub const DEFAULT_PRIORITY: [&str; 6] = [
    "user_id",
    "crm_id",
    "payment_id",
    "email",
    "phone",
    "anonymous_id",
];

/// Junk that must never stitch two people, per id type (`*` for all types).
const DEFAULT_BLOCKLIST: &[(&str, &str)] = &[
    ("*", "/^\\s*$/"),
    ("*", "/^(?i)(null|none|nil|n/?a|unknown|undefined|anonymous|test|-|0|\\(null\\))$/"),
    ("email", "/^(?i)(test|example|noreply|no-reply|none|null|fake|abc)@(test|example|email|none|domain|mail)\\.(com|org|net)$/"),
    ("email", "/@(example\\.(com|org|net))$/"),
    ("anonymous_id", "/^[0-]+$/"),
    ("anonymous_id", "/^(?i)(00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$/"),
    // One digit repeated, with or without the North American country code.
    ("phone", "/^\\+?1?(0{10}|1{10}|2{10}|3{10}|4{10}|5{10}|6{10}|7{10}|8{10}|9{10})$/"),
    ("phone", "/^\\+?(0+|1+|2+|3+|4+|5+|6+|7+|8+|9+)$/"),
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    priority: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    normalize: BTreeMap<String, Spanned<String>>,
    /// `defaults = bool`, and per id type a list of values and `/patterns/`.
    #[serde(default)]
    blocklist: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    hubs: BTreeMap<String, BTreeMap<String, Spanned<u64>>>,
    #[serde(default)]
    limits: BTreeMap<String, Spanned<u64>>,
}

/// How one id type's raw values become comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalize {
    Email,
    Phone,
    Trim,
    Lower,
    None,
    /// A SQL expression over `value`.
    Sql(String),
}

impl Normalize {
    fn default_for(id_type: &str) -> Self {
        match id_type {
            "email" => Normalize::Email,
            "phone" => Normalize::Phone,
            _ => Normalize::Trim,
        }
    }

    /// The SQL expression normalizing `column` (already quoted).
    pub fn sql(&self, column: &str) -> String {
        match self {
            Normalize::Email => format!("normalize_email({column})"),
            Normalize::Phone => format!("normalize_phone({column})"),
            Normalize::Trim => format!("normalize_id(CAST({column} AS VARCHAR))"),
            Normalize::Lower => format!("normalize_id(CAST({column} AS VARCHAR), true)"),
            Normalize::None => format!("CAST({column} AS VARCHAR)"),
            Normalize::Sql(expr) => {
                let value = Regex::new(r"\bvalue\b").expect("static regex");
                format!("CAST(({}) AS VARCHAR)", value.replace_all(expr, column))
            }
        }
    }
}

/// Values of one id type that never stitch.
#[derive(Debug, Clone, Default)]
pub struct Blocklist {
    exact: HashSet<String>,
    /// Pattern entries as written (`/.../`), and all of them as one set: every distinct
    /// identifier read meets them, and almost none matches, so one scan decides.
    patterns: Vec<String>,
    set: RegexSet,
}

impl Blocklist {
    /// The rule that blocks `value`, if any: the first pattern matching it. A clone per
    /// thread keeps the regular expressions' scratch space its own.
    pub fn rule_for(&self, value: &str) -> Option<String> {
        if !self.exact.is_empty() && self.exact.contains(value) {
            return Some(format!("{BLOCKLIST_RULE} '{value}'"));
        }
        if !self.set.is_match(value) {
            return None;
        }
        let first = self.set.matches(value).into_iter().next()?;
        Some(format!("{BLOCKLIST_RULE} {}", self.patterns[first]))
    }

    fn add_pattern(&mut self, entry: &str, pattern: &str) -> Result<(), String> {
        // Alone first, for an error naming the pattern at fault.
        Regex::new(pattern).map_err(|e| format!("invalid regular expression /{pattern}/: {e}"))?;
        let mut patterns: Vec<&str> = self.set.patterns().iter().map(String::as_str).collect();
        patterns.push(pattern);
        self.set = RegexSet::new(patterns).expect("each pattern compiles alone");
        self.patterns.push(entry.to_string());
        Ok(())
    }
}

/// How quarantine entries of blocklisted values begin.
pub const BLOCKLIST_RULE: &str = "blocklist:";

/// The validated `[identity]` section.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// Every id type in use, most trusted first.
    pub priority: Vec<String>,
    pub normalize: HashMap<String, Normalize>,
    pub blocklist: HashMap<String, Blocklist>,
    /// `(type, other type) -> most distinct identifiers of the other type` before a hub.
    pub hubs: HashMap<(String, String), u64>,
    /// Most identifiers of a type per person.
    pub limits: HashMap<String, u64>,
}

impl IdentityConfig {
    /// Everything the configuration says, in a fixed order: what its signature hashes.
    pub fn canonical_text(&self) -> String {
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.join(";")
        };
        let blocklists = self.blocklist.iter().map(|(t, b)| {
            let mut exact: Vec<&String> = b.exact.iter().collect();
            exact.sort();
            let patterns: Vec<&String> = b.patterns.iter().collect();
            format!("{t}={exact:?}{patterns:?}")
        });
        format!(
            "priority={:?}|normalize={}|blocklist={}|hubs={}|limits={}",
            self.priority,
            sorted(
                self.normalize
                    .iter()
                    .map(|(t, n)| format!("{t}={n:?}"))
                    .collect()
            ),
            sorted(blocklists.collect()),
            sorted(
                self.hubs
                    .iter()
                    .map(|((a, b), n)| format!("{a}>{b}={n}"))
                    .collect()
            ),
            sorted(
                self.limits
                    .iter()
                    .map(|(t, n)| format!("{t}={n}"))
                    .collect()
            ),
        )
    }

    /// Validates `raw` against the id types the inputs declare. `at` turns a span, a key and
    /// a message into an error naming the line.
    pub(crate) fn from_raw<E>(
        raw: &RawIdentity,
        declared: &[String],
        at: &dyn Fn(std::ops::Range<usize>, &str, String) -> E,
    ) -> Result<Self, E> {
        let known = |t: &str, span: std::ops::Range<usize>, key: &str| -> Result<(), E> {
            if declared.iter().any(|d| d == t) {
                Ok(())
            } else {
                Err(at(
                    span,
                    key,
                    format!(
                        "unknown id type '{t}': no input declares it; declared types are {}",
                        declared.join(", ")
                    ),
                ))
            }
        };
        let mut priority: Vec<String> = match &raw.priority {
            Some(p) => {
                for t in p.get_ref() {
                    known(t, p.span(), "identity.priority")?;
                }
                let mut seen = HashSet::new();
                if let Some(dup) = p.get_ref().iter().find(|t| !seen.insert(t.as_str())) {
                    return Err(at(
                        p.span(),
                        "identity.priority",
                        format!("'{dup}' is listed twice"),
                    ));
                }
                p.get_ref().clone()
            }
            None => DEFAULT_PRIORITY.iter().map(|s| s.to_string()).collect(),
        };
        // Types not ranked come last, in name order.
        let mut rest: Vec<&String> = declared.iter().filter(|d| !priority.contains(d)).collect();
        rest.sort();
        priority.extend(rest.into_iter().cloned());
        priority.retain(|t| declared.contains(t));

        let mut normalize: HashMap<String, Normalize> = declared
            .iter()
            .map(|t| (t.clone(), Normalize::default_for(t)))
            .collect();
        for (t, rule) in &raw.normalize {
            known(t, rule.span(), &format!("identity.normalize.{t}"))?;
            let parsed = match rule.get_ref().trim() {
                "email" => Normalize::Email,
                "phone" => Normalize::Phone,
                "trim" => Normalize::Trim,
                "lower" => Normalize::Lower,
                "none" => Normalize::None,
                expr if expr.contains("value") => Normalize::Sql(expr.to_string()),
                other => {
                    return Err(at(rule.span(), &format!("identity.normalize.{t}"), format!(
                        "expected email, phone, trim, lower, none or a SQL expression using `value`, got \"{other}\""
                    )))
                }
            };
            normalize.insert(t.clone(), parsed);
        }

        let mut blocklist: HashMap<String, Blocklist> = HashMap::new();
        let mut add = |t: &str, entry: &str| -> Result<(), String> {
            let targets: Vec<String> = if t == "*" {
                declared.to_vec()
            } else {
                vec![t.to_string()]
            };
            for target in targets {
                let list = blocklist.entry(target).or_default();
                match entry.strip_prefix('/').and_then(|e| e.strip_suffix('/')) {
                    Some(pattern) => list.add_pattern(entry, pattern)?,
                    None => {
                        list.exact.insert(entry.to_string());
                    }
                }
            }
            Ok(())
        };
        let use_defaults = match raw.blocklist.get("defaults") {
            None => true,
            Some(v) => v.get_ref().as_bool().ok_or_else(|| {
                at(
                    v.span(),
                    "identity.blocklist.defaults",
                    "expected true or false".into(),
                )
            })?,
        };
        if use_defaults {
            for (t, entry) in DEFAULT_BLOCKLIST {
                if *t == "*" || declared.iter().any(|d| d == t) {
                    add(t, entry).expect("built-in patterns compile");
                }
            }
        }
        for (t, entries) in raw.blocklist.iter().filter(|(k, _)| *k != "defaults") {
            let key = format!("identity.blocklist.{t}");
            known(t, entries.span(), &key)?;
            let list: Option<Vec<&str>> = entries
                .get_ref()
                .as_array()
                .and_then(|a| a.iter().map(toml::Value::as_str).collect());
            let Some(list) = list else {
                return Err(at(
                    entries.span(),
                    &key,
                    "expected a list of strings: values, or /regular expressions/".into(),
                ));
            };
            for entry in list {
                add(t, entry).map_err(|m| at(entries.span(), &key, m))?;
            }
        }

        let mut hubs = HashMap::new();
        for (t, others) in &raw.hubs {
            for (other, max) in others {
                let key = format!("identity.hubs.{t}.{other}");
                known(t, max.span(), &key)?;
                known(other, max.span(), &key)?;
                hubs.insert((t.clone(), other.clone()), *max.get_ref());
            }
        }
        let mut limits = HashMap::new();
        for (t, max) in &raw.limits {
            let key = format!("identity.limits.{t}");
            known(t, max.span(), &key)?;
            if *max.get_ref() == 0 {
                return Err(at(max.span(), &key, "a limit must be at least 1".into()));
            }
            limits.insert(t.clone(), *max.get_ref());
        }
        Ok(Self {
            priority,
            normalize,
            blocklist,
            hubs,
            limits,
        })
    }

    /// Rank of an id type: 0 is most trusted.
    pub fn rank(&self, id_type: &str) -> usize {
        self.priority
            .iter()
            .position(|t| t == id_type)
            .unwrap_or(self.priority.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(raw: &str, declared: &[&str]) -> Result<IdentityConfig, String> {
        let raw: RawIdentity = toml::from_str(raw).map_err(|e| e.to_string())?;
        let declared: Vec<String> = declared.iter().map(|s| s.to_string()).collect();
        IdentityConfig::from_raw(&raw, &declared, &|_, key, msg| format!("{key}: {msg}"))
    }

    #[test]
    fn defaults_block_junk_and_keep_real_values() {
        let c = config("", &["email", "phone", "anonymous_id", "user_id"]).unwrap();
        let blocked = |t: &str, v: &str| c.blocklist[t].rule_for(v).is_some();
        for (t, v) in [
            ("email", "test@test.com"),
            ("email", "noreply@example.com"),
            ("user_id", "unknown"),
            ("user_id", "NULL"),
            ("user_id", "undefined"),
            ("anonymous_id", "00000000-0000-0000-0000-000000000000"),
            ("phone", "+15555555555"),
            ("phone", "+10000000000"),
        ] {
            assert!(blocked(t, v), "{t} {v} should be blocked");
        }
        for (t, v) in [
            ("email", "ada@shop.io"),
            ("user_id", "u123"),
            ("phone", "+14155550123"),
            ("anonymous_id", "0b1c-77"),
        ] {
            assert!(!blocked(t, v), "{t} {v} should pass");
        }
        assert_eq!(c.priority, ["user_id", "email", "phone", "anonymous_id"]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = config("[blocklist]\nemail = [\"/(unclosed/\"]", &["email"]).unwrap_err();
        assert!(
            e.contains("identity.blocklist.email") && e.contains("invalid regular expression"),
            "{e}"
        );
        let e = config("[limits]\nfax = 1", &["email"]).unwrap_err();
        assert!(e.contains("unknown id type 'fax'"), "{e}");
        let e = config("priority = [\"email\", \"email\"]", &["email"]).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = config("[normalize]\nemail = \"upper\"", &["email"]).unwrap_err();
        assert!(e.contains("expected email, phone"), "{e}");
        let e = config("[hubs]\nemail = { fax = 2 }", &["email"]).unwrap_err();
        assert!(e.contains("unknown id type 'fax'"), "{e}");
    }

    #[test]
    fn custom_rules() {
        let c = config("[normalize]\ncard = \"upper(value)\"\n[blocklist]\ndefaults = false\ncard = [\"X1\", \"/^TEST/\"]", &["card"]).unwrap();
        assert_eq!(
            c.normalize["card"].sql("\"c\""),
            "CAST((upper(\"c\")) AS VARCHAR)"
        );
        assert!(c.blocklist["card"].rule_for("X1").is_some());
        assert!(c.blocklist["card"].rule_for("TEST9").is_some());
        assert!(c.blocklist["card"].rule_for("unknown").is_none());
    }
}
