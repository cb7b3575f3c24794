//! `c360 generate`: a deterministic, realistic multi-source lake with known ground truth.
//!
//! Five source tables (`tracks`, `identifies`, `orders`, `crm_contacts`, `payments`) as
//! Parquet (several files; `tracks` hive-partitioned by `event_month`) and as Delta (two
//! commits each: the older half of the rows, then the newer half), a `c360.toml` declaring
//! them, and `truth/`: `identifiers` (every identifier in the data, normalized, with its
//! person; junk values have none, shared devices have two) and `people` (each person's
//! expected feature values).

mod people;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Decimal128Array, Int64Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder,
};
use arrow::datatypes::{DataType, Field};
use clap::ValueEnum;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;

use people::{Kind, Lake, Micros};
pub use people::{JUNK_DEVICE, JUNK_EMAIL, JUNK_PHONE, JUNK_PHONE_E164, JUNK_USER_ID};

use crate::error::{Error, Result};
use crate::materialize::{
    batch, strings, utc_micros as times, utc_micros_field as ts_field, write_parquet,
    writer_properties, ParquetFile,
};

/// Which table formats to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LakeFormat {
    Parquet,
    Delta,
    Both,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub customers: usize,
    pub out: PathBuf,
    pub seed: u64,
    pub format: LakeFormat,
    /// People simulated at a time ([`PEOPLE_PER_CHUNK`] unless testing): bounds memory,
    /// changes only how rows are spread over files.
    pub chunk: usize,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    pub people: usize,
    pub tables: Vec<(&'static str, usize)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: usize = self.tables.iter().map(|(_, n)| n).sum();
        write!(f, "wrote a lake of {} people, {rows} rows (", self.people)?;
        for (i, (name, n)) in self.tables.iter().enumerate() {
            write!(f, "{}{name} {n}", if i > 0 { ", " } else { "" })?;
        }
        write!(f, ") to {}", self.out.display())
    }
}

/// Rows written per Parquet file.
const ROWS_PER_FILE: usize = 250_000;

/// People simulated and written at a time: about 3 GiB of rows in memory.
pub const PEOPLE_PER_CHUNK: usize = 250_000;

type TableFn = fn(&Lake) -> Result<RecordBatch>;

const TABLES: [(&str, TableFn); 5] = [
    ("tracks", tracks),
    ("identifies", identifies),
    ("orders", orders),
    ("crm_contacts", crm),
    ("payments", payments),
];

/// Generates the lake described by `opts`, `opts.chunk` people at a time: each chunk's rows
/// are sorted by time and appended to every table as new files.
pub async fn generate(opts: &GenerateOptions) -> Result<Summary> {
    if opts.customers == 0 || opts.chunk == 0 {
        return Err(Error::Usage(
            "--customers and --chunk must be at least 1".into(),
        ));
    }
    let out = &opts.out;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(format!("creating '{}'", out.display()), e))?;
    for (name, _) in TABLES {
        remove_dir(&out.join("parquet").join(name))?;
        remove_dir(&out.join("delta").join(name))?;
    }
    let truth_dir = out.join("truth");
    remove_dir(&truth_dir)?;
    let mut truth = Truth::default();
    let mut rows = [0; TABLES.len()];
    let borrowed = people::borrowers(opts.seed, opts.customers);
    for start in (0..opts.customers).step_by(opts.chunk) {
        let range = start..(start + opts.chunk).min(opts.customers);
        let lake = people::simulate(opts.seed, range, &borrowed);
        for ((name, table), rows) in TABLES.iter().zip(&mut rows) {
            let batch = table(&lake)?;
            *rows += batch.num_rows();
            if opts.format != LakeFormat::Delta {
                let dir = out.join("parquet").join(name);
                if *name == "tracks" {
                    write_partitioned(&dir, &batch, "event_month")?;
                } else {
                    write_parquet_files(&dir, &batch)?;
                }
            }
            if opts.format != LakeFormat::Parquet {
                let partitions: &[&str] = if *name == "tracks" {
                    &["event_month"]
                } else {
                    &[]
                };
                let dir = out.join("delta").join(name);
                write_delta(&dir, &batch, partitions, start == 0).await?;
            }
        }
        truth.add(&truth_dir, &lake)?;
    }
    truth.publish()?;
    let project = out.join("c360.toml");
    std::fs::write(&project, project_file(opts.format))
        .map_err(|e| Error::io(format!("writing '{}'", project.display()), e))?;
    Ok(Summary {
        out: out.clone(),
        people: opts.customers,
        tables: TABLES.iter().map(|(n, _)| *n).zip(rows).collect(),
    })
}

/// `truth/identifiers.parquet` and `truth/people.parquet`, written chunk by chunk.
#[derive(Default)]
struct Truth {
    files: Option<(ParquetFile, ParquetFile)>,
    /// Junk values already written: unlike a person's identifiers, they recur in every chunk.
    junk: HashSet<(&'static str, String)>,
}

impl Truth {
    fn add(&mut self, dir: &Path, lake: &Lake) -> Result<()> {
        let ids = truth_identifiers(lake, &mut self.junk)?;
        let people = truth_people(lake)?;
        if self.files.is_none() {
            self.files = Some((
                ParquetFile::create(&dir.join("identifiers.parquet"), ids.schema())?,
                ParquetFile::create(&dir.join("people.parquet"), people.schema())?,
            ));
        }
        let (id_file, people_file) = self.files.as_mut().expect("just created");
        id_file.write(&ids)?;
        people_file.write(&people)
    }

    fn publish(self) -> Result<()> {
        let (ids, people) = self.files.expect("a lake has at least one chunk");
        ids.publish()?;
        people.publish()
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing '{}'", dir.display()), e))
        }
        _ => Ok(()),
    }
}

/// Identity rules for the generated lake: defaults catch its junk values; a device signed
/// into by two accounts is a household's shared device and must link no one.
const IDENTITY_SECTION: &str = r#"[identity]
priority = ["user_id", "crm_id", "email", "phone", "payment_id", "anonymous_id"]

[identity.hubs]
# A device signed into by more than one account is shared: it links no one.
anonymous_id = { user_id = 1 }

[identity.limits]
user_id = 1

# What the customer 360 knows about each person.

[[traits]]
name = "first_name"
description = "First name as the CRM has it"
rule = "priority"
from = ["crm_contacts.first_name"]

[[traits]]
name = "last_name"
description = "Last name as the CRM has it"
rule = "priority"
from = ["crm_contacts.last_name"]

[[features]]
name = "n_events"
description = "Clickstream events"
owner = "analytics"
input = "tracks"
expr = "count(*)"

[[features]]
name = "last_products_viewed"
description = "The five products viewed most recently, most recent first"
owner = "analytics"
input = "tracks"
expr = "last_n(product_id, ts, 5)"
filter = "event = 'product_viewed'"

[[features]]
name = "favourite_product"
description = "The product viewed most often"
owner = "analytics"
input = "tracks"
expr = "most_frequent(product_id)"
filter = "event = 'product_viewed'"

[[features]]
name = "track_revenue"
description = "Revenue of order_completed events in the clickstream"
owner = "finance"
input = "tracks"
expr = "sum(revenue)"
filter = "event = 'order_completed'"

[[features]]
name = "n_orders"
description = "Orders placed"
owner = "finance"
input = "orders"
expr = "count(*)"

[[features]]
name = "order_revenue"
description = "Revenue of all orders"
owner = "finance"
input = "orders"
expr = "sum(amount)"

[[features]]
name = "revenue_30d"
description = "Order revenue in the 30 days up to the as-of time"
owner = "finance"
input = "orders"
expr = "sum_in_window(amount, ts, INTERVAL '30 days')"

[[features]]
name = "payment_total"
description = "Payments received"
owner = "finance"
input = "payments"
expr = "sum(amount)"

[[features]]
name = "lifetime_revenue"
description = "Revenue across every source: clickstream, orders and payments"
owner = "finance"
expr = "coalesce(track_revenue, 0) + coalesce(order_revenue, 0) + coalesce(payment_total, 0)"

[[features]]
name = "avg_order_value"
description = "Order revenue per order"
owner = "finance"
expr = "order_revenue / nullif(n_orders, 0)"
"#;

/// The project file for the generated lake: clickstream as Parquet (what event pipelines
/// drop), business systems as Delta.
fn project_file(format: LakeFormat) -> String {
    let pick = |preferred: &str| match format {
        LakeFormat::Parquet => "parquet",
        LakeFormat::Delta => "delta",
        LakeFormat::Both => {
            if preferred == "parquet" {
                "parquet"
            } else {
                "delta"
            }
        }
    };
    let input = |name: &str, preferred: &str, time: &str, ids: &str| {
        let f = pick(preferred);
        format!(
            "[[inputs]]\nname = \"{name}\"\nlocation = \"{f}/{name}\"\nformat = \"{f}\"\nevent_time = \"{time}\"\nids = {{ {ids} }}\n\n"
        )
    };
    let mut s = String::from(
        "# The demo lake written by `c360 generate`: five source systems describing the same people.\n\n\
         [project]\nname = \"demo\"\n\n",
    );
    s += &input(
        "tracks",
        "parquet",
        "ts",
        "anonymous_id = \"anonymous_id\", user_id = \"user_id\"",
    );
    s += &input(
        "identifies",
        "parquet",
        "ts",
        "anonymous_id = \"anonymous_id\", user_id = \"user_id\", email = \"email\", phone = \"phone\"",
    );
    s += &input(
        "orders",
        "delta",
        "ts",
        "user_id = \"user_id\", email = \"email\", phone = \"phone\"",
    );
    s += &input(
        "crm_contacts",
        "delta",
        "updated_at",
        "crm_id = \"crm_id\", email = \"email\", phone = \"phone\"",
    );
    s += &input(
        "payments",
        "delta",
        "ts",
        "payment_id = \"payment_id\", customer_email = \"email\"",
    );
    s += IDENTITY_SECTION;
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

fn money_field(name: &str) -> Field {
    Field::new(name, DataType::Decimal128(12, 2), true)
}

fn money(v: impl Iterator<Item = Option<i64>>) -> Result<ArrayRef> {
    let a = v.map(|c| c.map(i128::from)).collect::<Decimal128Array>();
    Ok(Arc::new(a.with_precision_and_scale(12, 2)?))
}

/// Sorts rows by time: source systems append in time order.
fn by_time<T>(rows: &[T], ts: impl Fn(&T) -> Micros) -> Vec<&T> {
    let mut v: Vec<&T> = rows.iter().collect();
    v.sort_by_key(|r| ts(r));
    v
}

fn month(ts: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(ts)
        .map(|d| d.format("%Y-%m").to_string())
        .unwrap_or_default()
}

fn tracks(lake: &Lake) -> Result<RecordBatch> {
    let rows = by_time(&lake.tracks, |r| r.ts);
    let months: Vec<String> = rows.iter().map(|r| month(r.ts)).collect();
    batch(
        vec![
            Field::new("anonymous_id", DataType::Utf8, true),
            Field::new("user_id", DataType::Utf8, true),
            Field::new("event", DataType::Utf8, false),
            Field::new("product_id", DataType::Utf8, true),
            money_field("revenue"),
            ts_field("ts", false),
            Field::new("event_month", DataType::Utf8, false),
        ],
        vec![
            strings(rows.iter().map(|r| Some(r.anonymous_id.as_str()))),
            strings(rows.iter().map(|r| r.user_id.as_deref())),
            strings(rows.iter().map(|r| Some(r.event))),
            strings(rows.iter().map(|r| r.product_id.as_deref())),
            money(rows.iter().map(|r| r.revenue_cents))?,
            times(rows.iter().map(|r| Some(r.ts))),
            strings(months.iter().map(|m| Some(m.as_str()))),
        ],
    )
}

fn identifies(lake: &Lake) -> Result<RecordBatch> {
    let rows = by_time(&lake.identifies, |r| r.ts);
    batch(
        vec![
            Field::new("anonymous_id", DataType::Utf8, true),
            Field::new("user_id", DataType::Utf8, true),
            Field::new("email", DataType::Utf8, true),
            Field::new("phone", DataType::Utf8, true),
            ts_field("ts", false),
        ],
        vec![
            strings(rows.iter().map(|r| Some(r.anonymous_id.as_str()))),
            strings(rows.iter().map(|r| r.user_id.as_deref())),
            strings(rows.iter().map(|r| r.email.as_deref())),
            strings(rows.iter().map(|r| r.phone.as_deref())),
            times(rows.iter().map(|r| Some(r.ts))),
        ],
    )
}

fn orders(lake: &Lake) -> Result<RecordBatch> {
    let rows = by_time(&lake.orders, |r| r.ts);
    batch(
        vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("user_id", DataType::Utf8, true),
            Field::new("email", DataType::Utf8, true),
            Field::new("phone", DataType::Utf8, true),
            money_field("amount"),
            Field::new("currency", DataType::Utf8, false),
            ts_field("ts", false),
        ],
        vec![
            strings(rows.iter().map(|r| Some(r.order_id.as_str()))),
            strings(rows.iter().map(|r| r.user_id.as_deref())),
            strings(rows.iter().map(|r| r.email.as_deref())),
            strings(rows.iter().map(|r| r.phone.as_deref())),
            money(rows.iter().map(|r| Some(r.amount_cents)))?,
            strings(rows.iter().map(|_| Some("USD"))),
            times(rows.iter().map(|r| Some(r.ts))),
        ],
    )
}

fn crm(lake: &Lake) -> Result<RecordBatch> {
    let rows = by_time(&lake.crm, |r| r.updated_at);
    batch(
        vec![
            Field::new("crm_id", DataType::Utf8, false),
            Field::new("email", DataType::Utf8, true),
            Field::new("phone", DataType::Utf8, true),
            Field::new("first_name", DataType::Utf8, true),
            Field::new("last_name", DataType::Utf8, true),
            ts_field("updated_at", false),
        ],
        vec![
            strings(rows.iter().map(|r| Some(r.crm_id.as_str()))),
            strings(rows.iter().map(|r| r.email.as_deref())),
            strings(rows.iter().map(|r| r.phone.as_deref())),
            strings(rows.iter().map(|r| Some(r.first_name.as_str()))),
            strings(rows.iter().map(|r| Some(r.last_name.as_str()))),
            times(rows.iter().map(|r| Some(r.updated_at))),
        ],
    )
}

fn payments(lake: &Lake) -> Result<RecordBatch> {
    let rows = by_time(&lake.payments, |r| r.ts);
    batch(
        vec![
            Field::new("payment_id", DataType::Utf8, false),
            Field::new("customer_email", DataType::Utf8, true),
            money_field("amount"),
            ts_field("ts", false),
        ],
        vec![
            strings(rows.iter().map(|r| Some(r.payment_id.as_str()))),
            strings(rows.iter().map(|r| Some(r.customer_email.as_str()))),
            money(rows.iter().map(|r| Some(r.amount_cents)))?,
            times(rows.iter().map(|r| Some(r.ts))),
        ],
    )
}

type Id<'a> = (&'static str, &'a str, Option<usize>);

fn sorted<'a>(ids: &'a [(&'static str, String, Option<usize>)]) -> Vec<Id<'a>> {
    let mut ids: Vec<Id> = ids.iter().map(|(t, v, p)| (*t, v.as_str(), *p)).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn truth_identifiers(
    lake: &Lake,
    junk_written: &mut HashSet<(&'static str, String)>,
) -> Result<RecordBatch> {
    let mut ids = sorted(&lake.ids);
    // A value that is junk anywhere is junk everywhere.
    let junk: HashSet<(&str, &str)> = ids
        .iter()
        .filter(|(_, _, p)| p.is_none())
        .map(|(t, v, _)| (*t, *v))
        .collect();
    ids.retain(|(t, v, p)| p.is_none() || !junk.contains(&(*t, *v)));
    let mut owners: HashMap<(&str, &str), usize> = HashMap::new();
    for (t, v, p) in ids.iter().chain(&sorted(&lake.neighbour_ids)) {
        if p.is_some() {
            *owners.entry((*t, *v)).or_default() += 1;
        }
    }
    ids.retain(|(t, v, p)| p.is_some() || junk_written.insert((t, v.to_string())));
    let shared: Vec<bool> = ids
        .iter()
        .map(|(t, v, p)| p.is_some() && owners[&(*t, *v)] > 1)
        .collect();
    batch(
        vec![
            Field::new("person_id", DataType::Utf8, true),
            Field::new("id_type", DataType::Utf8, false),
            Field::new("id_value", DataType::Utf8, false),
            Field::new("shared", DataType::Boolean, false),
            Field::new("junk", DataType::Boolean, false),
        ],
        vec![
            strings(
                ids.iter()
                    .map(|(_, _, p)| p.map(|p| lake.people[p - lake.first].id.as_str())),
            ),
            strings(ids.iter().map(|(t, _, _)| Some(*t))),
            strings(ids.iter().map(|(_, v, _)| Some(*v))),
            Arc::new(BooleanArray::from(shared)),
            Arc::new(
                ids.iter()
                    .map(|(_, _, p)| Some(p.is_none()))
                    .collect::<BooleanArray>(),
            ),
        ],
    )
}

fn truth_people(lake: &Lake) -> Result<RecordBatch> {
    let p = &lake.people;
    let e = &lake.expected;
    let kind = |k: Kind| match k {
        Kind::Anonymous => "anonymous",
        Kind::Registered => "registered",
        Kind::Guest => "guest",
    };
    let ints = |f: fn(&people::Expected) -> i64| -> ArrayRef {
        Arc::new(e.iter().map(f).collect::<Int64Array>())
    };
    batch(
        vec![
            Field::new("person_id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("first_name", DataType::Utf8, true),
            Field::new("last_name", DataType::Utf8, true),
            Field::new("n_events", DataType::Int64, false),
            Field::new("n_orders", DataType::Int64, false),
            money_field("order_revenue"),
            Field::new("n_payments", DataType::Int64, false),
            money_field("payment_total"),
            ts_field("first_seen", true),
            ts_field("last_seen", true),
            money_field("lifetime_revenue"),
            money_field("revenue_30d"),
            Field::new(
                "last_products_viewed",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
        ],
        vec![
            strings(p.iter().map(|x| Some(x.id.as_str()))),
            strings(p.iter().map(|x| Some(kind(x.kind)))),
            strings(p.iter().map(|x| x.crm_id.as_ref().map(|_| x.first_name))),
            strings(p.iter().map(|x| x.crm_id.as_ref().map(|_| x.last_name))),
            ints(|x| x.n_events),
            ints(|x| x.n_orders),
            money(e.iter().map(|x| Some(x.order_revenue_cents)))?,
            ints(|x| x.n_payments),
            money(e.iter().map(|x| Some(x.payment_total_cents)))?,
            times(e.iter().map(|x| x.first_seen)),
            times(e.iter().map(|x| x.last_seen)),
            money(e.iter().map(|x| {
                Some(x.track_revenue_cents + x.order_revenue_cents + x.payment_total_cents)
            }))?,
            money(e.iter().map(|x| Some(x.revenue_30d_cents)))?,
            {
                let mut b = ListBuilder::new(StringBuilder::new());
                for x in e {
                    for p in x.last_viewed(5) {
                        b.values().append_value(p);
                    }
                    b.append(true);
                }
                Arc::new(b.finish()) as ArrayRef
            },
        ],
    )
}

fn write_parquet_file(path: &Path, batch: &RecordBatch) -> Result<()> {
    write_parquet(path, batch.schema(), std::slice::from_ref(batch))
}

/// At least two files per table, so readers meet multi-file tables even at demo scale;
/// numbered after those already in `dir`.
fn write_parquet_files(dir: &Path, batch: &RecordBatch) -> Result<()> {
    let files = batch.num_rows().div_ceil(ROWS_PER_FILE).max(2);
    let per_file = batch.num_rows().div_ceil(files).max(1);
    let first = match std::fs::read_dir(dir) {
        Ok(entries) => entries.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::io(format!("listing '{}'", dir.display()), e)),
    };
    for (k, offset) in (0..batch.num_rows().max(1))
        .step_by(per_file)
        .enumerate()
        .map(|(k, o)| (first + k, o))
    {
        let len = per_file.min(batch.num_rows() - offset);
        write_parquet_file(
            &dir.join(format!("part-{k:05}.parquet")),
            &batch.slice(offset, len),
        )?;
    }
    Ok(())
}

/// Hive layout, `dir/column=value/part-*.parquet`, the column kept out of the files.
fn write_partitioned(dir: &Path, batch: &RecordBatch, column: &str) -> Result<()> {
    let idx = batch.schema().index_of(column)?;
    let values = batch
        .column(idx)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Usage(format!("partition column {column} must be a string")))?;
    let mut data = batch.clone();
    data.remove_column(idx);
    // Rows are sorted by time, so each month is one contiguous run.
    let mut start = 0;
    while start < batch.num_rows() {
        let value = values.value(start);
        let mut end = start;
        while end < batch.num_rows() && values.value(end) == value {
            end += 1;
        }
        write_parquet_files(
            &dir.join(format!("{column}={value}")),
            &data.slice(start, end - start),
        )?;
        start = end;
    }
    Ok(())
}

/// Two commits: the older half of the rows, then the newer half. The first creates the
/// table if `create`, else both are appended.
async fn write_delta(
    dir: &Path,
    batch: &RecordBatch,
    partitions: &[&str],
    create: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating '{}'", dir.display()), e))?;
    let url =
        url::Url::from_directory_path(std::path::absolute(dir).map_err(|e| Error::io("", e))?)
            .map_err(|()| Error::location(dir.display().to_string(), "not a valid path"))?;
    let half = batch.num_rows() / 2;
    let mut table = DeltaTable::try_from_url(url).await?;
    for (mode, part) in [
        (
            if create {
                SaveMode::ErrorIfExists
            } else {
                SaveMode::Append
            },
            batch.slice(0, half),
        ),
        (SaveMode::Append, batch.slice(half, batch.num_rows() - half)),
    ] {
        table = table
            .write(vec![part])
            .with_save_mode(mode)
            .with_partition_columns(partitions.iter().map(|s| s.to_string()))
            .with_writer_properties(writer_properties())
            .await?;
    }
    Ok(())
}
