//! The demo-lake generator: deterministic, stable as the population grows, and its
//! ground truth is exactly what the rows can tell a correct stitcher.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use arrow::util::pretty::pretty_format_batches;
use c360::generate::{generate, GenerateOptions, LakeFormat, PEOPLE_PER_CHUNK};
use c360::project::Project;
use datafusion::prelude::SessionContext;

use crate::common::{demo, strings, DEMO_TABLES};

async fn generated(dir: &Path, customers: usize, seed: u64, chunk: usize) -> SessionContext {
    generate(&GenerateOptions {
        customers,
        out: dir.to_path_buf(),
        seed,
        format: LakeFormat::Both,
        chunk,
    })
    .await
    .unwrap();
    let ctx = c360::session().unwrap();
    Project::load(dir.join("c360.toml"))
        .unwrap()
        .register_inputs(&ctx)
        .await
        .unwrap();
    for truth in ["identifiers", "people"] {
        let loc = dir.join("truth").join(format!("{truth}.parquet"));
        ctx.register_parquet(
            format!("truth_{truth}"),
            loc.to_str().unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    ctx
}

/// Every row of `table`, in a fixed order.
async fn dump(ctx: &SessionContext, table: &str, filter: &str) -> String {
    let schema = ctx.table(table).await.unwrap().schema().clone();
    let order: Vec<String> = (1..=schema.fields().len()).map(|i| i.to_string()).collect();
    let sql = format!(
        "SELECT * FROM {table} {filter} ORDER BY {}",
        order.join(", ")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// Every table and the truth hold the same rows in both lakes.
async fn assert_same_lake(a: &SessionContext, b: &SessionContext, how: &str) {
    for table in DEMO_TABLES
        .iter()
        .chain(&["truth_identifiers", "truth_people"])
    {
        assert_eq!(
            dump(a, table, "").await,
            dump(b, table, "").await,
            "{table} differs {how}"
        );
    }
}

#[tokio::test]
async fn same_seed_same_lake_and_people_do_not_depend_on_population() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (ca, cb, cc) = (
        generated(a.path(), 40, 7, PEOPLE_PER_CHUNK).await,
        generated(b.path(), 40, 7, PEOPLE_PER_CHUNK).await,
        generated(c.path(), 60, 7, PEOPLE_PER_CHUNK).await,
    );
    assert_same_lake(&ca, &cb, "between runs").await;
    let first = "WHERE person_id < 'p0000040'";
    assert_eq!(
        dump(&ca, "truth_people", first).await,
        dump(&cc, "truth_people", first).await
    );
    let other = tempfile::tempdir().unwrap();
    let co = generated(other.path(), 40, 8, PEOPLE_PER_CHUNK).await;
    assert_ne!(
        dump(&ca, "identifies", "").await,
        dump(&co, "identifies", "").await,
        "the seed changes nothing"
    );
}

#[tokio::test]
async fn chunks_change_files_not_rows() {
    let (whole, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cw = generated(whole.path(), 300, 7, PEOPLE_PER_CHUNK).await;
    // Split the population between a device's owner and the neighbour who borrows it.
    let batches = cw
        .sql(
            "SELECT max(person_id) FROM truth_identifiers WHERE shared \
             GROUP BY id_value ORDER BY 1 LIMIT 1",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let borrower = strings(&batches, 0)[0].clone().expect("a lent device");
    let chunk: usize = borrower[1..].parse().unwrap();
    let cs = generated(split.path(), 300, 7, chunk).await;
    let how = format!("when people are simulated {chunk} at a time");
    assert_same_lake(&cw, &cs, &how).await;
    let files = |dir: &Path| {
        std::fs::read_dir(dir.join("parquet/orders"))
            .unwrap()
            .count()
    };
    assert!(files(split.path()) > files(whole.path()));
}

/// Union-find over identifier keys, enough to check the truth.
#[derive(Default)]
struct Components {
    index: HashMap<String, usize>,
    parent: Vec<usize>,
}

impl Components {
    fn id(&mut self, key: &str) -> usize {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.parent.len();
        self.parent.push(i);
        self.index.insert(key.to_string(), i);
        i
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.parent[a] = b;
    }
}

#[tokio::test]
async fn demo_truth_is_what_the_rows_tell() {
    let ctx = c360::session().unwrap();
    let project = Project::load(demo().join("c360.toml")).unwrap();
    project.register_inputs(&ctx).await.unwrap();
    let truth_path = demo().join("truth/identifiers.parquet");
    ctx.register_parquet("truth", truth_path.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let truth = ctx
        .sql("SELECT id_type || ':' || id_value, person_id, shared, junk FROM truth")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let (keys, people) = (strings(&truth, 0), strings(&truth, 1));
    let (shared, junk) = (strings(&truth, 2), strings(&truth, 3));
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut excluded: HashSet<String> = HashSet::new();
    for i in 0..keys.len() {
        let key = keys[i].clone().unwrap();
        if junk[i].as_deref() == Some("true") || shared[i].as_deref() == Some("true") {
            excluded.insert(key);
        } else {
            assert!(
                owner
                    .insert(key.clone(), people[i].clone().unwrap())
                    .is_none(),
                "{key} has two owners"
            );
        }
    }
    assert!(excluded.iter().any(|k| k == "email:test@test.com"));
    assert!(
        excluded
            .iter()
            .any(|k| k.starts_with("anonymous_id:") && !k.ends_with("0000-000000000000")),
        "no shared device"
    );

    // Stitch each row's identifiers (a star per row), skipping junk and shared ones.
    let mut comps = Components::default();
    let mut seen = HashSet::new();
    for input in &project.inputs {
        let cols: Vec<String> = input
            .ids
            .iter()
            .map(|id| match id.id_type.as_str() {
                "email" => format!("'email:' || normalize_email({})", id.column),
                "phone" => format!("'phone:' || normalize_phone({})", id.column),
                t => format!("'{t}:' || nullif(trim({}), '')", id.column),
            })
            .collect();
        let rows = ctx
            .sql(&format!("SELECT {} FROM {}", cols.join(", "), input.name))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let columns: Vec<Vec<Option<String>>> =
            (0..cols.len()).map(|c| strings(&rows, c)).collect();
        for r in 0..columns[0].len() {
            let ids: Vec<usize> = columns
                .iter()
                .filter_map(|c| c[r].clone())
                .inspect(|k| {
                    seen.insert(k.clone());
                })
                .filter(|k| !excluded.contains(k))
                .map(|k| comps.id(&k))
                .collect();
            for w in ids.windows(2) {
                comps.union(w[0], w[1]);
            }
        }
    }
    // Every identifier in the rows is in the truth, and every truth identifier is in the rows.
    for key in &seen {
        assert!(
            owner.contains_key(key) || excluded.contains(key),
            "{key} is missing from the truth"
        );
    }
    for key in owner.keys() {
        assert!(
            seen.contains(key),
            "{key} is in the truth but not in the data"
        );
    }
    // Each component is exactly one person's identifiers.
    let mut person_of_component: HashMap<usize, String> = HashMap::new();
    let mut component_of_person: HashMap<String, usize> = HashMap::new();
    for (key, person) in &owner {
        let i = comps.id(key);
        let c = comps.find(i);
        let p = person_of_component
            .entry(c)
            .or_insert_with(|| person.clone());
        assert_eq!(p, person, "{key} joins two people");
        let c2 = *component_of_person.entry(person.clone()).or_insert(c);
        assert_eq!(
            c, c2,
            "{person}'s identifiers are not all connected ({key})"
        );
    }
    assert!(
        component_of_person.len() > 250,
        "{}",
        component_of_person.len()
    );
}
