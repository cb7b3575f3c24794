//! What c360 computes about each person: `[[features]]` (an aggregate over one input's
//! stitched rows, or an expression over other features) and `[[traits]]` (one known
//! attribute chosen from several inputs by a survivorship rule).
//!
//! ```toml
//! [[features]]
//! name = "n_orders"
//! description = "Orders placed"
//! owner = "growth"
//! input = "orders"
//! expr = "count(*)"
//! filter = "currency = 'USD'"     # optional: which rows count
//! window = "30 days"              # optional: only rows in the 30 days up to the as-of time
//!
//! [[features]]
//! name = "avg_order_value"
//! expr = "order_revenue / nullif(n_orders, 0)"   # no input: over other features
//!
//! [[traits]]
//! name = "first_name"
//! rule = "priority"               # priority | most_recent | most_frequent
//! from = ["crm_contacts.first_name", "identifies.first_name"]
//! ```

mod dense;
mod join;
mod plan;

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use toml::Spanned;

pub use dense::{
    install as install_person_plans, PersonAggregate, PersonAggregateExec, PERSON_COLUMN,
};
pub use join::{PersonJoinExec, PersonPlanner};
pub use plan::{stitched, FeaturePlan, Step};

use crate::error::{Error, Result};
use crate::project::Input;

/// One `[[features]]` entry.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub description: String,
    pub owner: Option<String>,
    /// `None`: an expression over other features.
    pub input: Option<String>,
    pub expr: String,
    pub filter: Option<String>,
    pub window: Option<String>,
    pub line: usize,
}

/// How a trait picks one value among its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The first source (in `from` order) with a value; its most recent value.
    #[default]
    Priority,
    /// The most recent value of any source.
    MostRecent,
    /// The most frequent value over all sources (ties: the smallest).
    MostFrequent,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Priority => "priority",
            Rule::MostRecent => "most_recent",
            Rule::MostFrequent => "most_frequent",
        }
    }
}

/// One `[[traits]]` entry: a known attribute with survivorship.
#[derive(Debug, Clone)]
pub struct Trait {
    pub name: String,
    pub description: String,
    pub owner: Option<String>,
    pub rule: Rule,
    /// `(input, column)` in priority order.
    pub from: Vec<(String, String)>,
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFeature {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    owner: Option<String>,
    input: Option<Spanned<String>>,
    expr: Spanned<String>,
    filter: Option<String>,
    window: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrait {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    owner: Option<String>,
    #[serde(default)]
    rule: Rule,
    from: Spanned<Vec<String>>,
}

/// Features and traits of a project, validated and in computation order.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub features: Vec<Feature>,
    pub traits: Vec<Trait>,
}

/// Column names every customer-360 row has before traits and features (`c360_person`
/// only while it is computed).
pub fn reserved_columns(id_types: &[String]) -> Vec<String> {
    ["c360_id".to_string(), "c360_person".to_string()]
        .into_iter()
        .chain(id_types.iter().map(|t| id_list_column(t)))
        .chain(["first_seen".to_string(), "last_seen".to_string()])
        .collect()
}

/// The list column holding a person's identifiers of `id_type`: `emails`, `user_ids`, ...
pub fn id_list_column(id_type: &str) -> String {
    format!("{id_type}s")
}

type At<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> Error + 'a;

impl Catalog {
    /// Features whose value can change with the as-of time alone other than through a
    /// `window`: their definition reads the reference time or the clock.
    pub fn clock_dependent(&self) -> Vec<&str> {
        const CALLS: [&str; 5] = [
            "_in_window(",
            "now(",
            "current_date",
            "current_time",
            "reference_time",
        ];
        self.features
            .iter()
            .filter(|f| {
                let text = format!("{} {}", f.expr, f.filter.as_deref().unwrap_or_default())
                    .to_lowercase()
                    .replace(char::is_whitespace, "");
                CALLS.iter().any(|c| text.contains(c))
            })
            .map(|f| f.name.as_str())
            .collect()
    }

    pub(crate) fn from_raw(
        features: &[Spanned<RawFeature>],
        traits: &[Spanned<RawTrait>],
        inputs: &[Input],
        id_types: &[String],
        line_of: &dyn Fn(usize) -> usize,
        at: &At<'_>,
    ) -> Result<Self> {
        let input_names: HashSet<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        let known_inputs = || {
            let mut names: Vec<_> = input_names.iter().copied().collect();
            names.sort();
            names.join(", ")
        };
        // Why rows of `input` cannot be attributed to people, if they cannot.
        let input_problem = |input: &str| match inputs.iter().find(|i| i.name == input) {
            None => Some(format!(
                "unknown input '{input}'; the inputs are {}",
                known_inputs()
            )),
            Some(i) if i.ids.is_empty() => Some(format!(
                "input '{input}' declares no ids, so its rows belong to no one"
            )),
            Some(_) => None,
        };
        let mut taken: HashSet<String> = reserved_columns(id_types).into_iter().collect();
        let mut claim = |name: &Spanned<String>, key: &str| -> Result<String> {
            let n = name.get_ref().trim().to_string();
            if !crate::project::is_identifier(&n) || n.chars().any(|c| c.is_ascii_uppercase()) {
                return Err(at(
                    name.span(),
                    key,
                    format!(
                    "'{n}' is not a valid column name: expected lower-case letters, digits and '_'"
                ),
                ));
            }
            if !taken.insert(n.clone()) {
                return Err(at(
                    name.span(),
                    key,
                    format!(
                        "'{n}' is already a column of customer_360 (a feature, trait or id list)"
                    ),
                ));
            }
            Ok(n)
        };
        let mut catalog = Catalog::default();
        for spanned in traits {
            let r = spanned.get_ref();
            let name = claim(&r.name, "traits.name")?;
            let mut from = vec![];
            for source in r.from.get_ref() {
                let Some((input, column)) = source.split_once('.') else {
                    return Err(at(
                        r.from.span(),
                        "traits.from",
                        format!("trait '{name}': expected \"input.column\", got \"{source}\""),
                    ));
                };
                if let Some(problem) = input_problem(input) {
                    return Err(at(
                        r.from.span(),
                        "traits.from",
                        format!("trait '{name}': {problem}"),
                    ));
                }
                from.push((input.to_string(), column.to_string()));
            }
            if from.is_empty() {
                return Err(at(
                    r.from.span(),
                    "traits.from",
                    format!("trait '{name}' has no sources: expected [\"input.column\", ...]"),
                ));
            }
            catalog.traits.push(Trait {
                name,
                description: r.description.trim().to_string(),
                owner: r.owner.clone(),
                rule: r.rule,
                from,
                line: line_of(spanned.span().start),
            });
        }
        for spanned in features {
            let r = spanned.get_ref();
            let name = claim(&r.name, "features.name")?;
            let input = match &r.input {
                Some(i) => {
                    if let Some(problem) = input_problem(i.get_ref()) {
                        return Err(at(
                            i.span(),
                            "features.input",
                            format!("feature '{name}': {problem}"),
                        ));
                    }
                    Some(i.get_ref().clone())
                }
                None => None,
            };
            if let (None, Some(w)) = (&input, &r.window) {
                return Err(at(
                    w.span(),
                    "features.window",
                    format!("feature '{name}': a window needs an input whose rows it selects"),
                ));
            }
            if let (Some(i), Some(w)) = (&input, &r.window) {
                let has_time = inputs
                    .iter()
                    .any(|x| &x.name == i && x.event_time.is_some());
                if !has_time {
                    return Err(at(w.span(), "features.window", format!(
                        "feature '{name}': input '{i}' has no event_time, so a window cannot select its rows"
                    )));
                }
            }
            if r.expr.get_ref().trim().is_empty() {
                return Err(at(
                    r.expr.span(),
                    "features.expr",
                    format!("feature '{name}': expr is empty"),
                ));
            }
            catalog.features.push(Feature {
                name,
                description: r.description.trim().to_string(),
                owner: r.owner.clone(),
                input,
                expr: r.expr.get_ref().trim().to_string(),
                filter: r.filter.as_ref().map(|f| f.trim().to_string()),
                window: r.window.as_ref().map(|w| w.get_ref().trim().to_string()),
                line: line_of(spanned.span().start),
            });
        }
        catalog.order_derived().map_err(|(first, m)| {
            let span = features
                .iter()
                .find(|f| f.get_ref().name.get_ref().trim() == first)
                .map(|f| f.get_ref().expr.span())
                .unwrap_or(0..0);
            at(span, "features.expr", m)
        })?;
        Ok(catalog)
    }

    /// Names each derived feature refers to, among the features and traits.
    fn dependencies(&self, f: &Feature) -> Vec<String> {
        let known: HashSet<&str> = self
            .features
            .iter()
            .map(|f| f.name.as_str())
            .chain(self.traits.iter().map(|t| t.name.as_str()))
            .collect();
        // A feature naming itself depends on itself: a cycle of one.
        let mut deps = vec![];
        for word in identifiers(&f.expr) {
            if known.contains(word.as_str()) && !deps.contains(&word) {
                deps.push(word);
            }
        }
        deps
    }

    /// Orders derived features after what they use; a cycle is an error listing it.
    fn order_derived(&mut self) -> std::result::Result<(), (String, String)> {
        let derived: HashMap<String, Vec<String>> = self
            .features
            .iter()
            .filter(|f| f.input.is_none())
            .map(|f| (f.name.clone(), self.dependencies(f)))
            .collect();
        let mut order: Vec<String> = vec![];
        let mut state: HashMap<&str, bool> = HashMap::new(); // false: visiting, true: done
        fn visit<'a>(
            name: &'a str,
            derived: &'a HashMap<String, Vec<String>>,
            state: &mut HashMap<&'a str, bool>,
            path: &mut Vec<&'a str>,
            order: &mut Vec<String>,
        ) -> std::result::Result<(), (String, String)> {
            match state.get(name) {
                Some(true) => return Ok(()),
                Some(false) => {
                    let start = path.iter().position(|p| *p == name).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..].to_vec();
                    cycle.push(name);
                    return Err((
                        name.to_string(),
                        format!(
                            "features refer to each other in a cycle: {}",
                            cycle.join(" -> ")
                        ),
                    ));
                }
                None => {}
            }
            state.insert(name, false);
            path.push(name);
            for dep in derived.get(name).into_iter().flatten() {
                if derived.contains_key(dep) {
                    visit(dep, derived, state, path, order)?;
                }
            }
            path.pop();
            state.insert(name, true);
            order.push(name.to_string());
            Ok(())
        }
        let names: Vec<String> = self
            .features
            .iter()
            .filter(|f| f.input.is_none())
            .map(|f| f.name.clone())
            .collect();
        for name in &names {
            visit(name, &derived, &mut state, &mut vec![], &mut order)?;
        }
        let rank: HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        // Aggregates first (declared order), then derived features in dependency order.
        self.features.sort_by_key(|f| match f.input {
            Some(_) => (0, 0),
            None => (1, rank[f.name.as_str()]),
        });
        Ok(())
    }

    /// The derived features `f` needs computed before it.
    pub fn derived_dependencies(&self, f: &Feature) -> Vec<String> {
        let derived: HashSet<&str> = self
            .features
            .iter()
            .filter(|f| f.input.is_none())
            .map(|f| f.name.as_str())
            .collect();
        self.dependencies(f)
            .into_iter()
            .filter(|d| derived.contains(d.as_str()))
            .collect()
    }
}

/// Identifier-like words of a SQL expression outside string literals and quoted names
/// count as references; quoted names count too, unquoted.
fn identifiers(sql: &str) -> Vec<String> {
    let mut out = vec![];
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                }
            }
            '"' => {
                let mut word = String::new();
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                    word.push(d);
                }
                out.push(word);
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut word = c.to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        word.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(word.to_lowercase());
            }
            _ => {}
        }
    }
    out
}

/// A stable hash of a definition with its whitespace normalized: changes when what is
/// computed changes, not when the file is reformatted.
pub fn signature(parts: &[&str]) -> String {
    let normalized: Vec<String> = parts
        .iter()
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    format!("{:016x}", c360_udfs::ids::fnv1a(&refs))
}

impl Feature {
    pub fn signature(&self) -> String {
        signature(&[
            "feature",
            self.input.as_deref().unwrap_or(""),
            &self.expr,
            self.filter.as_deref().unwrap_or(""),
            self.window.as_deref().unwrap_or(""),
        ])
    }
}

impl Trait {
    pub fn signature(&self) -> String {
        let from: Vec<String> = self.from.iter().map(|(i, c)| format!("{i}.{c}")).collect();
        signature(&["trait", self.rule.name(), &from.join(",")])
    }

    pub fn rule_name(&self) -> &'static str {
        self.rule.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_skip_literals() {
        assert_eq!(
            identifiers("sum(a) / \"B c\" + 'n_orders' + coalesce(x_1, 0)"),
            vec!["sum", "a", "B c", "coalesce", "x_1"]
        );
    }

    #[test]
    fn signature_ignores_layout() {
        assert_eq!(signature(&["sum(a)  /\n b"]), signature(&["sum(a) / b"]));
        assert_ne!(signature(&["sum(a)"]), signature(&["sum(b)"]));
    }
}
