//! The SQL a run executes, generated from the project so it can be printed (`c360 explain`)
//! and audited: one stitched view per input, one aggregate per (input, filter, window),
//! one query per trait, then one statement joining them to the people of the identity graph.

use std::collections::{BTreeMap, HashSet};

use datafusion::prelude::{DataFrame, SessionContext};

use super::{id_list_column, Catalog, Feature, Rule, Trait};
use crate::error::{Error, Result};
use crate::project::Project;

/// One named piece of the plan, shown by `c360 explain`.
#[derive(Debug, Clone)]
pub struct Step {
    /// What it computes, e.g. `feature n_orders`.
    pub title: String,
    pub sql: String,
}

/// Everything a run executes, in order.
#[derive(Debug, Clone)]
pub struct FeaturePlan {
    /// `CREATE VIEW stitched_<input>` statements.
    pub views: Vec<Step>,
    /// Each trait's and feature's own part of the final statement.
    pub parts: Vec<Step>,
    /// The statement producing `customer_360`.
    pub query: String,
    /// Per input: the stitched view's query, its rows with their person.
    pub stitched: BTreeMap<String, String>,
}

/// One aggregate scan: (input, filter, window) applied to all its rows.
type ScanKey = (String, String, String);

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The view of `input` whose rows carry their person's `c360_id`.
pub fn stitched(input: &str) -> String {
    format!("stitched_{input}")
}

/// A timestamp literal for `micros` since the epoch, UTC.
pub fn timestamp_literal(micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!(
        "TIMESTAMP {}",
        text(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    )
}

impl FeaturePlan {
    /// Generates the plan of `project` for a run whose as-of time is `as_of` (UTC micros).
    /// `aggregates` names the session's aggregate functions. With `only`, the people whose
    /// `c360_person` that table lists in its column `person`, and no one else.
    pub fn new(
        project: &Project,
        catalog: &Catalog,
        as_of: i64,
        aggregates: &HashSet<String>,
        only: Option<&str>,
    ) -> Self {
        let only = only.map(|table| format!("c360_person IN (SELECT person FROM {table})"));
        let mut stitched_queries = BTreeMap::new();
        let config = &project.identity;
        let mut views = vec![];
        for input in project.inputs.iter().filter(|i| !i.ids.is_empty()) {
            let mut ids = input.ids.clone();
            ids.sort_by_key(|id| (config.rank(&id.id_type), id.column.clone()));
            let lookup = |function: &str| {
                let calls: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        format!(
                            "{function}({}, {})",
                            text(&id.id_type),
                            config.normalize[&id.id_type].sql(&quote(&id.column))
                        )
                    })
                    .collect();
                match calls.len() {
                    1 => calls[0].clone(),
                    _ => format!("COALESCE({})", calls.join(", ")),
                }
            };
            let (key, person) = (lookup("person_key"), lookup("canonical_id"));
            let select = format!(
                "SELECT {key} AS c360_person, {person} AS c360_id, *\nFROM {}",
                quote(&input.name)
            );
            let view = match &only {
                Some(only) => format!("SELECT *\nFROM (\n{}\n)\nWHERE {only}", indent(&select)),
                None => select.clone(),
            };
            views.push(Step {
                title: format!("stitched rows of {}", input.name),
                sql: format!("CREATE VIEW {} AS\n{view}", stitched(&input.name)),
            });
            stitched_queries.insert(input.name.clone(), select);
        }

        let event_time = |input: &str| {
            project
                .inputs
                .iter()
                .find(|i| i.name == input)
                .and_then(|i| i.event_time.clone())
        };
        let mut ctes: Vec<(String, String)> = vec![];
        let mut parts = vec![];
        let mut people = people_sql(&config.priority);
        if let Some(only) = &only {
            people.push_str(&format!("\nWHERE {only}"));
        }
        ctes.push(("people".into(), people.clone()));
        parts.push(Step {
            title: "people: one row per canonical id, identifiers grouped by type".into(),
            sql: people,
        });

        let mut joins: Vec<(String, Vec<String>)> = vec![];
        for (i, t) in catalog.traits.iter().enumerate() {
            let cte = format!("trait_{i}");
            let sql = trait_sql(t, &event_time);
            parts.push(Step {
                title: format!("trait {} ({})", t.name, t.rule_name()),
                sql: sql.clone(),
            });
            ctes.push((cte.clone(), sql));
            joins.push((cte.clone(), vec![format!("{cte}.{}", quote(&t.name))]));
        }

        // One scan per input: a feature that is one aggregate call takes its filter and
        // window as a FILTER clause; other expressions get a scan of their own.
        let mut groups: BTreeMap<ScanKey, Vec<(&Feature, String)>> = BTreeMap::new();
        for f in catalog.features.iter().filter(|f| f.input.is_some()) {
            let input = f.input.clone().unwrap_or_default();
            let mut conditions = vec![];
            if let Some(filter) = &f.filter {
                conditions.push(format!("({filter})"));
            }
            if let Some(window) = &f.window {
                conditions.push(window_condition(&event_time(&input), window, as_of));
            }
            let (key, expr) = if conditions.is_empty() {
                ((input, String::new(), String::new()), f.expr.clone())
            } else if single_aggregate(&f.expr, aggregates) {
                let expr = format!("{} FILTER (WHERE {})", f.expr, conditions.join(" AND "));
                ((input, String::new(), String::new()), expr)
            } else {
                let key = (
                    input,
                    f.filter.clone().unwrap_or_default(),
                    f.window.clone().unwrap_or_default(),
                );
                (key, f.expr.clone())
            };
            groups.entry(key).or_default().push((f, expr));
        }
        for (g, ((input, filter, window), features)) in groups.into_iter().enumerate() {
            let cte = format!("features_{g}");
            // Rows of no one form a NULL group, which the join to people drops: filtering
            // them out first would look every row's person up twice.
            let mut conditions = vec![];
            if !filter.is_empty() {
                conditions.push(format!("({filter})"));
            }
            if !window.is_empty() {
                conditions.push(window_condition(&event_time(&input), &window, as_of));
            }
            let filter = match conditions.is_empty() {
                true => String::new(),
                false => format!("\nWHERE {}", conditions.join("\n  AND ")),
            };
            let from = format!("FROM {}{filter}\nGROUP BY c360_person", stitched(&input));
            for (f, expr) in &features {
                parts.push(Step {
                    title: format!("feature {}", f.name),
                    sql: format!("SELECT c360_person, {expr} AS {}\n{from}", quote(&f.name)),
                });
            }
            let columns: Vec<String> = features
                .iter()
                .map(|(f, expr)| format!("{expr} AS {}", quote(&f.name)))
                .collect();
            ctes.push((
                cte.clone(),
                format!("SELECT c360_person, {}\n{from}", columns.join(",\n       ")),
            ));
            // A person without rows gets what the aggregate gives over no rows (0 for
            // count(*), NULL for sum, [] for last_n), from a one-row CTE read as a scalar
            // subquery: a cross join would lose the people's order.
            let empty = format!("defaults_{g}");
            let defaults: Vec<String> = features
                .iter()
                .map(|(f, expr)| format!("{expr} AS {}", quote(&f.name)))
                .collect();
            ctes.push((
                empty.clone(),
                format!(
                    "SELECT {}\nFROM {}\nWHERE false",
                    defaults.join(",\n       "),
                    stitched(&input)
                ),
            ));
            let coalesced = features
                .iter()
                .map(|(f, _)| {
                    let name = quote(&f.name);
                    format!("COALESCE({cte}.{name}, (SELECT {name} FROM {empty})) AS {name}")
                })
                .collect();
            joins.push((cte, coalesced));
        }

        // Features join onto the bare person keys, and the people join last: joins by
        // person hold the features and stream the people through, identifier lists
        // uncopied and in canonical id order.
        let mut select = vec!["people.*".to_string()];
        let mut from = "(SELECT c360_person FROM people) AS persons".to_string();
        for (cte, columns) in &joins {
            select.extend(columns.iter().cloned());
            from.push_str(&format!(
                "\n  LEFT JOIN {cte} ON {cte}.c360_person = persons.c360_person"
            ));
        }
        from.push_str("\n  JOIN people ON people.c360_person = persons.c360_person");
        ctes.push((
            "level_0".into(),
            format!("SELECT {}\nFROM {from}", select.join(", ")),
        ));

        // Derived features, one level per step of their dependency order.
        let mut level_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut levels: Vec<Vec<&Feature>> = vec![];
        for f in catalog.features.iter().filter(|f| f.input.is_none()) {
            let level = catalog
                .derived_dependencies(f)
                .iter()
                .map(|d| level_of.get(d).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
                + 1;
            level_of.insert(f.name.clone(), level);
            if levels.len() < level {
                levels.resize_with(level, Vec::new);
            }
            levels[level - 1].push(f);
        }
        for (l, features) in levels.iter().enumerate() {
            let columns: Vec<String> = features
                .iter()
                .map(|f| format!("({}) AS {}", f.expr, quote(&f.name)))
                .collect();
            for f in features {
                parts.push(Step {
                    title: format!("feature {}", f.name),
                    sql: format!(
                        "SELECT c360_id, ({}) AS {}\nFROM level_{l}",
                        f.expr,
                        quote(&f.name)
                    ),
                });
            }
            ctes.push((
                format!("level_{}", l + 1),
                format!("SELECT *, {}\nFROM level_{l}", columns.join(", ")),
            ));
        }

        let mut output = vec!["c360_id".to_string()];
        output.extend(config.priority.iter().map(|t| quote(&id_list_column(t))));
        output.extend(["first_seen".to_string(), "last_seen".to_string()]);
        output.extend(catalog.traits.iter().map(|t| quote(&t.name)));
        output.extend(catalog.features.iter().map(|f| quote(&f.name)));
        let with: Vec<String> = ctes
            .iter()
            .map(|(name, sql)| format!("{name} AS (\n{}\n)", indent(sql)))
            .collect();
        let query = format!(
            "WITH {}\nSELECT {}\nFROM level_{}\nORDER BY c360_id",
            with.join(",\n"),
            output.join(", "),
            levels.len()
        );
        Self {
            views,
            parts,
            query,
            stitched: stitched_queries,
        }
    }

    /// The plan of `project` for a run in `ctx`, whose functions it may use; with `only`,
    /// for the people that table lists.
    pub fn for_session(
        project: &Project,
        as_of: i64,
        ctx: &SessionContext,
        only: Option<&str>,
    ) -> Self {
        let aggregates = ctx
            .state()
            .aggregate_functions()
            .keys()
            .map(|k| k.to_lowercase())
            .collect();
        Self::new(project, &project.catalog, as_of, &aggregates, only)
    }

    /// Queries of the people with rows that left a feature's window between the as-of
    /// times `since` and `as_of`: their features change with nothing new read.
    pub fn window_leavers(&self, project: &Project, since: i64, as_of: i64) -> Vec<String> {
        project
            .catalog
            .features
            .iter()
            .filter_map(|f| {
                let (input, window) = (f.input.as_ref()?, f.window.as_ref()?);
                let time = project.inputs.iter().find(|i| &i.name == input)?.event_time.as_ref()?;
                let (t, w) = (quote(time), text(window));
                Some(format!(
                    "SELECT DISTINCT c360_person\nFROM (\n{}\n)\nWHERE c360_person IS NOT NULL\n  AND {t} > {} - INTERVAL {w}\n  AND {t} <= {} - INTERVAL {w}",
                    indent(self.stitched.get(input)?),
                    timestamp_literal(since),
                    timestamp_literal(as_of),
                ))
            })
            .collect()
    }

    /// Creates the stitched views in `ctx`.
    pub async fn create_views(&self, ctx: &SessionContext) -> Result<()> {
        for view in &self.views {
            ctx.sql(&view.sql).await?;
        }
        Ok(())
    }

    /// Plans every part on its own first, so a bad definition is reported against the
    /// feature or trait it belongs to, then the whole statement.
    pub async fn dataframe(
        &self,
        ctx: &SessionContext,
        project: &Project,
        catalog: &Catalog,
    ) -> Result<DataFrame> {
        for part in &self.parts {
            let Some((kind, name)) = part.title.split_once(' ') else {
                continue;
            };
            let line = match kind {
                "feature" => catalog
                    .features
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.line),
                "trait" => {
                    let name = name.split(' ').next().unwrap_or(name);
                    catalog
                        .traits
                        .iter()
                        .find(|t| t.name == name)
                        .map(|t| t.line)
                }
                _ => None,
            };
            let Some(line) = line else { continue };
            let sql = if part.sql.contains("FROM level_") {
                // Derived: over the levels below it.
                let cut = self
                    .query
                    .rfind("\nSELECT c360_id,")
                    .unwrap_or(self.query.len());
                format!("{}\n{}", &self.query[..cut], part.sql)
            } else {
                part.sql.clone()
            };
            let planned = match ctx.sql(&sql).await {
                Ok(df) => df.create_physical_plan().await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = planned {
                return Err(Error::config(
                    project.path.display().to_string(),
                    format!("line {line}, {}: {}", part.title, e.strip_backtrace()),
                ));
            }
        }
        Ok(ctx.sql(&self.query).await?)
    }

    /// The whole plan as one SQL script, for `c360 explain`.
    pub fn script(&self) -> String {
        let mut out = String::new();
        for step in &self.views {
            out.push_str(&format!("-- {}\n{};\n\n", step.title, step.sql));
        }
        for step in &self.parts {
            out.push_str(&format!(
                "-- {}\n-- {}\n\n",
                step.title,
                step.sql.replace('\n', "\n-- ")
            ));
        }
        out.push_str(&format!("-- customer_360\n{};\n", self.query));
        out
    }
}

/// `ts` within `window` of the as-of time.
fn window_condition(event_time: &Option<String>, window: &str, as_of: i64) -> String {
    format!(
        "{} > {} - INTERVAL {}",
        quote(event_time.as_deref().unwrap_or_default()),
        timestamp_literal(as_of),
        text(window)
    )
}

/// Whether `expr` is exactly one call of an aggregate, `f(...)`, so a FILTER can follow it.
fn single_aggregate(expr: &str, aggregates: &HashSet<String>) -> bool {
    let expr = expr.trim();
    let Some(open) = expr.find('(') else {
        return false;
    };
    if !aggregates.contains(&expr[..open].trim().to_lowercase()) {
        return false;
    }
    let (mut depth, mut quoted) = (0usize, None::<char>);
    for (i, c) in expr.char_indices().skip_while(|(i, _)| *i < open) {
        match (quoted, c) {
            (Some(q), c) if c == q => quoted = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quoted = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return i == expr.len() - 1;
                }
            }
            _ => {}
        }
    }
    false
}

fn indent(sql: &str) -> String {
    sql.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The graph's people (see `IdentityGraph::people_table`), columns in output order.
fn people_sql(id_types: &[String]) -> String {
    let mut columns = vec!["c360_id".to_string(), "c360_person".to_string()];
    columns.extend(id_types.iter().map(|t| quote(&id_list_column(t))));
    columns.extend(["first_seen".to_string(), "last_seen".to_string()]);
    format!("SELECT {}\nFROM identity_people", columns.join(", "))
}

/// `expr` as a UTC microsecond timestamp: a zoned time keeps its instant, a naive one is
/// taken as UTC.
fn utc(expr: &str) -> String {
    format!("arrow_cast({expr}, 'Timestamp(Microsecond, Some(\"UTC\"))')")
}

fn trait_sql(t: &Trait, event_time: &dyn Fn(&str) -> Option<String>) -> String {
    let sources: Vec<String> = t
        .from
        .iter()
        .enumerate()
        .map(|(k, (input, column))| {
            // Without an event time every value is equally old: ties go to the smallest.
            let ts = match event_time(input) {
                // As UTC instants, as the identity graph reads them.
                Some(c) => utc(&quote(&c)),
                None => utc("TIMESTAMP '1970-01-01T00:00:00Z'"),
            };
            format!(
                "SELECT c360_person, CAST({col} AS VARCHAR) AS value, {ts} AS ts, {k} AS source_rank\n  FROM {}",
                stitched(input),
                col = quote(column),
            )
        })
        .collect();
    let pick = match t.rule {
        Rule::MostRecent => "array_element(last_n(value, ts, 1), 1)".to_string(),
        Rule::MostFrequent => "most_frequent(value)".to_string(),
        Rule::Priority => {
            let per_source: Vec<String> = (0..t.from.len())
                .map(|k| {
                    format!(
                        "array_element(last_n(value, ts, 1) FILTER (WHERE source_rank = {k}), 1)"
                    )
                })
                .collect();
            if per_source.len() == 1 {
                per_source[0].clone()
            } else {
                format!("COALESCE({})", per_source.join(", "))
            }
        }
    };
    format!(
        "SELECT c360_person, {pick} AS {}\nFROM (\n  {}\n)\nWHERE value IS NOT NULL AND trim(value) <> ''\nGROUP BY c360_person",
        quote(&t.name),
        sources.join("\n  UNION ALL\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_aggregate_calls() {
        let aggs: HashSet<String> = ["sum", "count", "last_n"].map(String::from).into();
        assert!(single_aggregate("sum(amount)", &aggs));
        assert!(single_aggregate(" count(*) ", &aggs));
        assert!(single_aggregate("last_n(p, ts, 5, ')')", &aggs));
        assert!(!single_aggregate("sum(a) / count(*)", &aggs));
        assert!(!single_aggregate("sum(a) FILTER (WHERE b)", &aggs));
        assert!(!single_aggregate(
            "array_element(last_n(p, ts, 1), 1)",
            &aggs
        ));
        assert!(!single_aggregate("amount", &aggs));
    }
}
