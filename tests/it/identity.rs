//! The identity graph against the generator's ground truth, and canonical ids across runs.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};
use c360::generate::{generate, GenerateOptions, LakeFormat, PEOPLE_PER_CHUNK};
use c360::identity::{self, IdentityGraph};
use c360::project::Project;
use datafusion::physical_plan::replace_children_if_necessary;
use datafusion::prelude::SessionContext;

use crate::common::{copy_dir, demo, strings};

struct TruthRow {
    id_type: String,
    value: String,
    person: Option<String>,
    shared: bool,
}

async fn truth(ctx: &SessionContext, dir: &std::path::Path) -> Vec<TruthRow> {
    let path = dir.join("truth/identifiers.parquet");
    let df = ctx
        .read_parquet(path.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let mut out = vec![];
    for b in df.collect().await.unwrap() {
        let col = |i: usize| {
            arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap()
        };
        let (p, t, v) = (col(0), col(1), col(2));
        let (p, t, v) = (
            p.as_string::<i32>(),
            t.as_string::<i32>(),
            v.as_string::<i32>(),
        );
        let shared = b.column(3).as_boolean();
        for r in 0..b.num_rows() {
            out.push(TruthRow {
                id_type: t.value(r).into(),
                value: v.value(r).into(),
                person: p.is_valid(r).then(|| p.value(r).to_string()),
                shared: shared.value(r),
            });
        }
    }
    out
}

async fn graph_of(
    dir: &std::path::Path,
    previous: Option<&identity::Previous>,
) -> (SessionContext, IdentityGraph) {
    let ctx = c360::session().unwrap();
    let project = Project::load(dir.join("c360.toml")).unwrap();
    project.register_inputs(&ctx).await.unwrap();
    let g = identity::build(&ctx, &project, previous, None)
        .await
        .unwrap();
    (ctx, g)
}

#[tokio::test]
async fn demo_graph_matches_the_ground_truth() {
    let (ctx, g) = graph_of(&demo(), None).await;
    let truth = truth(&ctx, &demo()).await;
    let mut id_of_person: HashMap<String, String> = HashMap::new();
    let mut person_of_id: HashMap<String, String> = HashMap::new();
    for row in &truth {
        let canonical = g.canonical_id(&row.id_type, &row.value).map(str::to_string);
        match (&row.person, row.shared) {
            // Junk never enters the graph: it is quarantined by the blocklist.
            (None, _) => assert!(
                canonical.is_none(),
                "junk {}:{} was stitched",
                row.id_type,
                row.value
            ),
            // A shared device links no one: it stands alone.
            (Some(_), true) => {
                let c = canonical.expect("shared devices stay in the graph");
                let hub = g
                    .quarantine
                    .iter()
                    .any(|q| q.value == row.value && q.rule.starts_with("hub"));
                assert!(
                    hub,
                    "shared device {} is not quarantined as a hub",
                    row.value
                );
                assert!(!person_of_id.contains_key(&c) || person_of_id[&c] == "<shared>");
                person_of_id.insert(c, "<shared>".into());
            }
            (Some(p), false) => {
                let c =
                    canonical.unwrap_or_else(|| panic!("{}:{} is missing", row.id_type, row.value));
                let known = id_of_person.entry(p.clone()).or_insert_with(|| c.clone());
                assert_eq!(
                    known, &c,
                    "{p}'s identifiers have two canonical ids ({}:{})",
                    row.id_type, row.value
                );
                let owner = person_of_id.entry(c.clone()).or_insert_with(|| p.clone());
                assert_eq!(owner, p, "{p} and {owner} share canonical id {c}");
            }
        }
    }
    assert_eq!(id_of_person.len(), 300);
    let quarantined: HashSet<&str> = g.quarantine.iter().map(|q| q.value.as_str()).collect();
    for junk in [
        "test@test.com",
        "unknown",
        "00000000-0000-0000-0000-000000000000",
        "+15555555555",
    ] {
        assert!(
            quarantined.contains(junk),
            "{junk} is not in the quarantine"
        );
    }
}

/// Clusters untouched by new data keep their canonical ids when 5% more people arrive.
#[tokio::test]
async fn canonical_ids_are_stable_across_runs() {
    let (old_dir, new_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, customers) in [(&old_dir, 200), (&new_dir, 210)] {
        let opts = GenerateOptions {
            customers,
            out: dir.path().to_path_buf(),
            seed: 11,
            format: LakeFormat::Parquet,
            chunk: PEOPLE_PER_CHUNK,
        };
        generate(&opts).await.unwrap();
    }
    let (ctx, old) = graph_of(old_dir.path(), None).await;
    let previous = old.as_previous();
    let (_, new) = graph_of(new_dir.path(), Some(&previous)).await;
    // Identifiers that new people's rows carry.
    let truth = truth(&ctx, new_dir.path()).await;
    let touched: HashSet<(String, String)> = truth
        .iter()
        .filter(|r| r.person.as_deref().is_some_and(|p| p >= "p0000200"))
        .map(|r| (r.id_type.clone(), r.value.clone()))
        .collect();
    let mut clusters: HashMap<&str, Vec<&(String, String)>> = HashMap::new();
    for (key, (canonical, _)) in &previous {
        clusters.entry(canonical.as_str()).or_default().push(key);
    }
    let mut checked = 0;
    for (canonical, keys) in clusters {
        if keys.iter().any(|k| touched.contains(*k)) {
            continue;
        }
        for (t, v) in keys {
            assert_eq!(
                new.canonical_id(t, v),
                Some(canonical),
                "{t}:{v} changed id"
            );
        }
        checked += 1;
    }
    assert!(checked >= 190, "only {checked} clusters checked");
    // A rebuild without the previous graph gives the same ids: they come from the data alone.
    let (_, again) = graph_of(old_dir.path(), None).await;
    for ((t, v), (canonical, _)) in &previous {
        assert_eq!(again.canonical_id(t, v), Some(canonical.as_str()));
    }
}

#[test]
fn why_merged_follows_accepted_edges() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (ctx, g) = graph_of(&demo(), None).await;
        let g = std::sync::Arc::new(g);
        identity::register_tables(&ctx, g.clone()).unwrap();
        // A person's email and one of their devices: joined through accepted edges.
        let batches = ctx
            .sql("SELECT a.id_value AS email, b.id_value AS device FROM identity_graph a JOIN identity_graph b USING (canonical_id) \
                  WHERE a.id_type = 'email' AND b.id_type = 'anonymous_id' ORDER BY 1, 2 LIMIT 1")
            .await.unwrap().collect().await.unwrap();
        let email = batches[0].column(0).as_string::<i32>().value(0).to_string();
        let device = batches[0].column(1).as_string::<i32>().value(0).to_string();
        let path = g.why_merged(("email", &email), ("anonymous_id", &device)).expect("joined");
        assert!(!path.is_empty() && path.iter().all(|e| e.accepted));
        let sql = format!("SELECT count(*) FROM why_merged('email', '  {}  ', 'anonymous_id', '{device}')", email.to_uppercase());
        let n = crate::common::scalar(&ctx, &sql).await;
        assert_eq!(n as usize, path.len());
        // Two people are not joined: no rows.
        let sql = "SELECT count(*) FROM why_merged('email', 'nobody@nowhere.io', 'anonymous_id', 'x')";
        assert_eq!(crate::common::scalar(&ctx, sql).await, 0);
    });
}

/// Each of `view`'s rows, printed, sorted.
async fn sorted_lines(ctx: &SessionContext, view: &str) -> Vec<String> {
    let batches = ctx
        .sql(&format!("SELECT * FROM {view}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

async fn explained(ctx: &SessionContext, view: &str) -> String {
    let sql = format!("EXPLAIN SELECT * FROM {view}");
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string()
}

/// A full run's stitched views take each row's person by its position in the identity
/// read: row for row the same as looking its identifiers up. The demo's Parquet inputs are
/// read in the files' own partitions; its Delta inputs are one small file group each,
/// which the read spreads round robin, so they look persons up. Read in other partitions
/// than the identity read's, every input looks persons up again.
#[tokio::test]
async fn stitched_rows_by_position_equal_the_lookup() {
    const AS_OF: i64 = 1_782_777_600_000_000; // 2026-06-30T00:00:00Z
    let ctx = c360::session().unwrap();
    let project = Project::load(demo().join("c360.toml")).unwrap();
    project.register_inputs_as_of(&ctx, AS_OF).await.unwrap();
    let mut g = identity::build_counting(&ctx, &project, None, None, Default::default(), true)
        .await
        .unwrap();
    let rows = std::mem::take(&mut g.rows);
    let g = std::sync::Arc::new(g);
    identity::register_tables(&ctx, g.clone()).unwrap();
    let plan = c360::features::FeaturePlan::for_session(&project, AS_OF, &ctx, None);
    plan.create_views(&ctx).await.unwrap();
    let mut looked_up = vec![];
    for input in &g.inputs {
        looked_up.push(sorted_lines(&ctx, &c360::features::stitched(input)).await);
    }

    let replaced = identity::stitch_by_position(&ctx, &g, rows).await.unwrap();
    assert_eq!(replaced, ["tracks", "identifies"]);
    for (input, expected) in g.inputs.iter().zip(&looked_up) {
        let view = c360::features::stitched(input);
        let plan = explained(&ctx, &view).await;
        let by_position = replaced.contains(input);
        assert_eq!(
            plan.contains("StitchedRowsExec"),
            by_position,
            "{view}:\n{plan}"
        );
        assert_eq!(plan.contains("person_key"), !by_position, "{view}:\n{plan}");
        assert_eq!(&sorted_lines(&ctx, &view).await, expected, "{view}");
    }
    let persons = crate::common::scalar(
        &ctx,
        "SELECT count(c360_person) FROM stitched_tracks WHERE c360_id IS NOT NULL",
    )
    .await;
    assert!(persons > 1000, "only {persons} tracks rows have a person");

    let partitions = ctx.state().config().target_partitions();
    let other = if partitions > 1 { 1 } else { 3 };
    ctx.sql(&format!(
        "SET datafusion.execution.target_partitions = {other}"
    ))
    .await
    .unwrap();
    let plan = explained(&ctx, "stitched_tracks").await;
    assert!(
        !plan.contains("StitchedRowsExec") && plan.contains("person_key"),
        "{plan}"
    );
    assert_eq!(sorted_lines(&ctx, "stitched_tracks").await, looked_up[0]);

    // A plan whose scan was regrouped after planning fails rather than misplace persons.
    let set = |n: usize| format!("SET datafusion.execution.target_partitions = {n}");
    let physical = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            ctx.sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap()
        }
    };
    ctx.sql(&set(partitions)).await.unwrap();
    let mut node = physical("SELECT * FROM stitched_tracks").await;
    while node.name() != "StitchedRowsExec" {
        node = node.children()[0].clone();
    }
    ctx.sql(&set(other)).await.unwrap();
    let regrouped = physical("SELECT * FROM tracks").await;
    let node = replace_children_if_necessary(node, vec![regrouped]).unwrap();
    let err = node.execute(0, ctx.task_ctx()).err().unwrap().to_string();
    assert!(err.contains("no longer reads"), "{err}");
}

/// The closure's memory is reserved in DataFusion's pool: over the limit it fails cleanly.
#[tokio::test]
async fn closure_respects_the_memory_limit() {
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(256 * 1024, 1.0)
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    c360::register(&ctx).unwrap();
    ctx.sql(
        "CREATE TABLE e AS SELECT 'a' AS id_type_a, CAST(v AS VARCHAR) AS id_value_a, \
         'b' AS id_type_b, CAST(v + 1 AS VARCHAR) AS id_value_b FROM generate_series(1, 200000) t(v)",
    )
    .await
    .unwrap();
    let err = ctx
        .sql("SELECT count(*) FROM stitch('e')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Resources exhausted") && err.contains("StitchExec"),
        "{err}"
    );
    // Within the limit the same query runs.
    let ctx = c360::session().unwrap();
    ctx.sql("CREATE TABLE e AS SELECT 'a' AS id_type_a, '1' AS id_value_a, 'b' AS id_type_b, '2' AS id_value_b").await.unwrap();
    assert_eq!(
        crate::common::scalar(&ctx, "SELECT count(*) FROM stitch('e')").await,
        2
    );
}

/// `c360 identity` keeps ids across runs: unchanged people keep theirs, a merge keeps the
/// oldest, a split leaves the id with the larger part; identity_changes says which.
#[tokio::test]
async fn identity_job_tracks_merges_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, out) = (dir.path().join("lake"), dir.path().join("out"));
    std::fs::write(
        dir.path().join("c360.toml"),
        "[[inputs]]\nname = \"logins\"\nlocation = \"lake\"\nevent_time = \"ts\"\nids = { device = \"anonymous_id\", mail = \"email\" }\n\n[identity]\n",
    )
    .unwrap();
    let ctx = SessionContext::new();
    // Each run rewrites the lake with these rows: (device, email, day of January).
    let runs: [&[(&str, &str, u32)]; 3] = [
        &[
            ("d1", "old@x.com", 1),
            ("d2", "old@x.com", 2),
            ("d3", "new@x.com", 5),
        ],
        &[
            ("d1", "old@x.com", 1),
            ("d2", "old@x.com", 2),
            ("d3", "new@x.com", 5),
            ("d8", "new@x.com", 5),
            ("d3", "old@x.com", 6),
        ],
        &[
            ("d1", "old@x.com", 1),
            ("d3", "new@x.com", 5),
            ("d8", "new@x.com", 5),
            ("d9", "new@x.com", 7),
            ("d2", "d2@x.com", 8),
        ],
    ];
    let mut ids = vec![];
    for rows in runs {
        let _ = std::fs::remove_dir_all(&lake);
        std::fs::create_dir_all(&lake).unwrap();
        let values: Vec<String> = rows
            .iter()
            .map(|(d, m, day)| format!("('{d}', '{m}', TIMESTAMP '2026-01-{day:02}T00:00:00Z')"))
            .collect();
        let copy = format!(
            "COPY (SELECT column1 AS device, column2 AS mail, column3 AS ts FROM (VALUES {})) TO '{}/part-0.parquet'",
            values.join(", "),
            lake.display()
        );
        ctx.sql(&copy).await.unwrap().collect().await.unwrap();
        let run = crate::common::c360(dir.path())
            .args(["identity", "--project"])
            .arg(dir.path().join("c360.toml"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", crate::common::text(&run.stderr));
        let read = |name: &str| {
            let path = out.join(format!("{name}.parquet"));
            let ctx = ctx.clone();
            async move {
                let df = ctx
                    .read_parquet(path.to_str().unwrap(), Default::default())
                    .await
                    .unwrap();
                df.collect().await.unwrap()
            }
        };
        let graph = read("identity_graph").await;
        let map: HashMap<String, String> = strings(&graph, 1)
            .into_iter()
            .zip(strings(&graph, 2))
            .map(|(v, c)| (v.unwrap(), c.unwrap()))
            .collect();
        let kinds: Vec<String> = strings(&read("identity_changes").await, 1)
            .into_iter()
            .flatten()
            .collect();
        ids.push((map, kinds));
    }
    let (first, second, third) = (&ids[0].0, &ids[1].0, &ids[2].0);
    // Run 1: two people.
    assert_eq!(first["d1"], first["d2"]);
    assert_ne!(first["d1"], first["d3"]);
    // Run 2: a login links them; the older person's id survives the merge.
    assert_eq!(second["d3"], first["d1"]);
    assert_eq!(second["new@x.com"], first["d1"]);
    assert!(ids[1].1.contains(&"merged".to_string()), "{:?}", ids[1].1);
    // Run 3: the link is gone and d2 moved to its own email. Of the merged person's
    // identifiers, {d3, d8, new@x.com} hold three and keep the id; {d1, old@x.com} hold two
    // and get a new one, as does {d2, d2@x.com}.
    assert_eq!(third["d3"], first["d1"]);
    assert_eq!(third["d9"], third["d3"]);
    assert_ne!(third["d1"], third["d3"]);
    assert_ne!(third["d2"], third["d3"]);
    assert_ne!(third["d2"], third["d1"]);
    assert!(ids[2].1.contains(&"split".to_string()), "{:?}", ids[2].1);
}

/// Writes `rows` (device, user, email, day) as a Parquet input and builds its graph.
async fn tiny_graph(rows: &[(&str, &str, &str, u32)], identity: &str) -> IdentityGraph {
    let dir = tempfile::tempdir().unwrap();
    let ctx = c360::session().unwrap();
    let values: Vec<String> = rows
        .iter()
        .map(|(d, u, e, day)| {
            format!("('{d}', '{u}', '{e}', TIMESTAMP '2026-01-{day:02}T00:00:00Z')")
        })
        .collect();
    let file = dir.path().join("t/part-0.parquet");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    ctx.sql(&format!(
        "COPY (SELECT nullif(column1, '') AS d, nullif(column2, '') AS u, nullif(column3, '') AS e, column4 AS ts FROM (VALUES {})) TO '{}'",
        values.join(", "),
        file.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    let toml = format!(
        "[[inputs]]\nname = \"t\"\nlocation = \"t\"\nevent_time = \"ts\"\nids = {{ d = \"anonymous_id\", u = \"user_id\", e = \"email\" }}\n\n{identity}"
    );
    let path = dir.path().join("c360.toml");
    std::fs::write(&path, toml).unwrap();
    let project = Project::load(&path).unwrap();
    project.register_inputs(&ctx).await.unwrap();
    identity::build(&ctx, &project, None, None).await.unwrap()
}

/// Limits keep the most trusted, earliest evidence and quarantine the rest, naming the rule.
#[tokio::test]
async fn limits_reject_the_least_trusted_evidence() {
    let g = tiny_graph(
        &[
            ("d1", "u1", "", 1),
            ("d1", "u2", "", 3), // a second account on the same device
            ("", "u1", "a@x.com", 2),
            ("", "u1", "b@x.com", 4), // a second email for the same account
            ("", "u2", "c@x.com", 5),
        ],
        "[identity]\n[identity.limits]\nuser_id = 1\nemail = 1\n",
    )
    .await;
    // user_id-email links outrank device links: u1 keeps a@x.com (earlier), b@x.com is refused.
    assert_eq!(
        g.canonical_id("email", "a@x.com"),
        g.canonical_id("user_id", "u1")
    );
    assert_ne!(
        g.canonical_id("email", "b@x.com"),
        g.canonical_id("user_id", "u1")
    );
    assert_eq!(
        g.canonical_id("email", "c@x.com"),
        g.canonical_id("user_id", "u2")
    );
    // d1 joins u1 (seen first); joining u2 too would give one person two user ids.
    assert_eq!(
        g.canonical_id("anonymous_id", "d1"),
        g.canonical_id("user_id", "u1")
    );
    assert_ne!(
        g.canonical_id("user_id", "u2"),
        g.canonical_id("user_id", "u1")
    );
    let rules: Vec<(String, String, String)> = g
        .quarantine
        .iter()
        .map(|q| {
            (
                q.value.clone(),
                q.other.clone().unwrap_or_default().1,
                q.rule.clone(),
            )
        })
        .collect();
    assert!(
        rules.contains(&(
            "u1".into(),
            "b@x.com".into(),
            "limit: at most 1 email per person".into()
        )),
        "{rules:?}"
    );
    assert!(
        // Ends in trust order: the user id, then the device.
        rules.contains(&(
            "u2".into(),
            "d1".into(),
            "limit: at most 1 user_id per person".into()
        )),
        "{rules:?}"
    );
    // Without limits, everything is one person.
    let g = tiny_graph(&[("d1", "u1", "", 1), ("d1", "u2", "", 3)], "[identity]\n").await;
    assert_eq!(
        g.canonical_id("user_id", "u1"),
        g.canonical_id("user_id", "u2")
    );
    // A hub rule instead quarantines the device and keeps both accounts apart.
    let g = tiny_graph(
        &[("d1", "u1", "", 1), ("d1", "u2", "", 3)],
        "[identity.hubs]\nanonymous_id = { user_id = 1 }\n",
    )
    .await;
    assert_ne!(
        g.canonical_id("user_id", "u1"),
        g.canonical_id("user_id", "u2")
    );
    assert!(g
        .quarantine
        .iter()
        .any(|q| q.value == "d1" && q.rule.starts_with("hub")));
}

/// Later inputs are read while earlier ones are merged, yet a run that meets several
/// unreadable inputs reports the first in the project's order, whichever failed first.
#[tokio::test]
async fn the_first_unreadable_input_in_project_order_is_reported() {
    let lake = tempfile::tempdir().unwrap();
    copy_dir(&demo(), lake.path());
    // Footers intact, so the inputs register; their pages no longer decode.
    let spoil = |file: &str| {
        let file = lake.path().join("parquet").join(file);
        let mut bytes = std::fs::read(&file).unwrap();
        let half = bytes.len() / 2;
        bytes[4..half].fill(0xAB);
        std::fs::write(&file, bytes).unwrap();
    };
    let failure = || async {
        let ctx = c360::session().unwrap();
        let project = Project::load(lake.path().join("c360.toml")).unwrap();
        project.register_inputs(&ctx).await.unwrap();
        match identity::build(&ctx, &project, None, None).await {
            Ok(_) => panic!("a spoiled input was read"),
            Err(e) => e.to_string(),
        }
    };
    spoil("identifies/part-00000.parquet");
    let error = failure().await;
    assert!(
        error.starts_with("input 'identifies': reading its identifiers"),
        "{error}"
    );
    spoil("tracks/event_month=2026-06/part-00000.parquet");
    let error = failure().await;
    assert!(
        error.starts_with("input 'tracks': reading its identifiers"),
        "{error}"
    );
}
