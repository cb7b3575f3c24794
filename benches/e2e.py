"""End-to-end benchmark: `c360 run` against the same customer 360 in DuckDB, on one lake.

    cargo build --release
    python benches/e2e.py --customers 100000          # 1000000
    python benches/e2e.py --customers 10000000 --engines c360 --memory-limit 12G

Generates the lake with `c360 generate --format parquet` (kept between runs), runs the
release `c360 run` and `benches/duckdb_c360.py` each under `/usr/bin/time -v`, checks the
two agree (the same partition of identifiers into people, the same feature values), and
prints wall time, peak RSS and their ratios, per phase where both report phases.
`--engines c360` runs c360 alone (a 10M lake takes 15 GB of disk, and each engine's output
and spill files several more) and checks its partition against the generator's truth;
`--memory-limit` is passed to `c360 run`.
Needs the Python packages of scripts/requirements-test.txt (duckdb).
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

AS_OF = "2026-06-30T00:00:00Z"
ROOT = Path(__file__).resolve().parent.parent


def c360_binary():
    if os.environ.get("C360_BIN"):
        return os.environ["C360_BIN"]
    meta = json.loads(
        subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT)
    )
    binary = Path(meta["target_directory"]) / "release" / "c360"
    if not binary.exists():
        sys.exit(f"{binary} not found: run `cargo build --release` first")
    return str(binary)


def timed(cmd, work, name):
    """Runs `cmd` under /usr/bin/time -v; returns (wall s, peak RSS bytes, stdout, stderr)."""
    report = work / f"{name}.time"
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", "-o", str(report)] + cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text()).group(1))
    return wall, rss_kib * 1024, done.stdout, done.stderr


def c360_phases(stderr):
    """Seconds per phase from `c360 run`'s JSON progress lines."""
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    at = {e["phase"]: e["elapsed_s"] for e in events if e["phase"] != "written"}
    built = next(e for e in events if e["phase"] == "identity graph built")
    return {
        "identity": at["identity graph built"],
        "closure": built["detail"]["closure_s"],
        "features": at["done"] - at["identity graph built"],
    }


def compare(work):
    import duckdb

    con = duckdb.connect()
    c, d = work / "c360", work / "duckdb"
    con.execute(f"CREATE VIEW g AS SELECT * FROM '{c}/identity_graph.parquet'")
    con.execute(f"CREATE VIEW h AS SELECT * FROM '{d}/duckdb_identity.parquet'")
    only_c = con.execute("SELECT count(*) FROM g ANTI JOIN h USING (id_type, id_value)").fetchone()[0]
    only_d = con.execute("SELECT count(*) FROM h ANTI JOIN g USING (id_type, id_value)").fetchone()[0]
    # People on whom the partitions disagree: c360 people whose identifiers DuckDB splits or
    # joins with others.
    split = con.execute(
        """SELECT count(*) FROM (
             SELECT canonical_id FROM g JOIN h USING (id_type, id_value)
             GROUP BY canonical_id HAVING count(DISTINCT label) > 1)"""
    ).fetchone()[0]
    joined = con.execute(
        """SELECT count(*) FROM (
             SELECT label FROM g JOIN h USING (id_type, id_value)
             GROUP BY label HAVING count(DISTINCT canonical_id) > 1)"""
    ).fetchone()[0]
    people = con.execute("SELECT count(DISTINCT canonical_id) FROM g").fetchone()[0]
    con.execute(
        f"""CREATE VIEW pairs AS
            SELECT canonical_id, any_value(label) AS label FROM g JOIN h USING (id_type, id_value)
            GROUP BY canonical_id HAVING count(DISTINCT label) = 1"""
    )
    columns = [
        "n_events", "n_orders", "order_revenue", "revenue_30d", "payment_total", "lifetime_revenue",
        "last_products_viewed", "favourite_product", "first_name", "first_seen", "last_seen",
    ]
    diffs = {}
    for col in columns:
        diffs[col] = con.execute(
            f"""SELECT count(*) FROM '{c}/customer_360.parquet' x
                JOIN pairs ON pairs.canonical_id = x.c360_id
                JOIN '{d}/duckdb_customer_360.parquet' y ON y.person = pairs.label
                WHERE x.{col} IS DISTINCT FROM y.{col}"""
        ).fetchone()[0]
    compared = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    return {
        "people": people,
        "identifiers_only_in_c360": only_c,
        "identifiers_only_in_duckdb": only_d,
        "people_split_by_duckdb": split,
        "duckdb_people_joining_several": joined,
        "people_compared": compared,
        "feature_mismatches": diffs,
    }


def against_truth(lake, out):
    """c360's partition of identifiers against the generator's truth: every identifier of a
    person (not junk, not a shared device) in the graph, each person one canonical id."""
    import duckdb

    con = duckdb.connect(config={"memory_limit": "8GB"})
    con.execute(
        f"""CREATE TABLE j AS SELECT g.canonical_id, t.person_id
            FROM '{lake}/truth/identifiers.parquet' t
            LEFT JOIN '{out}/identity_graph.parquet' g USING (id_type, id_value)
            WHERE NOT t.junk AND NOT t.shared"""
    )
    one = lambda sql: con.execute(sql).fetchone()[0]
    return {
        "truth_identifiers": one("SELECT count(*) FROM j"),
        "missing_from_graph": one("SELECT count(*) FROM j WHERE canonical_id IS NULL"),
        "people": one("SELECT count(DISTINCT person_id) FROM j"),
        "canonical_ids_joining_people": one(
            """SELECT count(*) FROM (SELECT canonical_id FROM j WHERE canonical_id IS NOT NULL
               GROUP BY 1 HAVING count(DISTINCT person_id) > 1)"""
        ),
        "people_split": one(
            "SELECT count(*) FROM (SELECT person_id FROM j GROUP BY 1 HAVING count(DISTINCT canonical_id) > 1)"
        ),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--dir", default="/tmp/c360-bench", help="where lakes and outputs go")
    ap.add_argument("--engines", default="c360,duckdb", help="c360,duckdb or c360")
    ap.add_argument("--memory-limit", help="passed to c360 run, e.g. 12G")
    args = ap.parse_args()
    engines = set(args.engines.split(","))
    if not engines <= {"c360", "duckdb"} or "c360" not in engines:
        sys.exit("--engines: c360,duckdb or c360")
    c360 = c360_binary()
    base = Path(args.dir)
    lake = base / f"lake-{args.customers}"
    work = base / f"run-{args.customers}"
    work.mkdir(parents=True, exist_ok=True)
    if not (lake / "c360.toml").exists():
        print(f"generating {args.customers} customers into {lake} ...", flush=True)
        t = time.perf_counter()
        subprocess.run(
            [c360, "generate", "--customers", str(args.customers), "--format", "parquet", "--out", str(lake)],
            check=True,
        )
        print(f"generated in {time.perf_counter() - t:.1f} s", flush=True)
    # A first run on both sides: a previous output would make c360 keep ids stable against it.
    shutil.rmtree(work / "c360", ignore_errors=True)
    (work / "duckdb").mkdir(exist_ok=True)
    results = {"customers": args.customers, "as_of": AS_OF, "cores": os.cpu_count()}

    limit = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    wall, rss, out, err = timed(
        [c360, "run", "--project", str(lake / "c360.toml"), "--as-of", AS_OF, "--output", str(work / "c360")]
        + limit,
        work,
        "c360",
    )
    results["c360"] = {"wall_s": round(wall, 2), "peak_rss_gib": round(rss / 2**30, 2), **c360_phases(err)}
    rows = int(re.search(r"from (\d+) rows", out).group(1))
    results["c360"]["input_rows"] = rows
    results["c360"]["us_per_row"] = round(wall / rows * 1e6, 3)
    print(out.strip(), flush=True)
    if "duckdb" in engines:
        results.update(against_duckdb(lake, work, results["c360"]))
    else:
        results["truth"] = against_truth(lake, work / "c360")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def against_duckdb(lake, work, c):
    """Runs the DuckDB customer 360 on `lake`; its figures, the agreement with c360's
    output and the ratios to c360's figures `c`."""
    results = {}
    wall, rss, out, _ = timed(
        [sys.executable, str(ROOT / "benches" / "duckdb_c360.py"), str(lake), str(work / "duckdb"), AS_OF],
        work,
        "duckdb",
    )
    phases = json.loads(out.strip().splitlines()[-1])
    results["duckdb"] = {
        "wall_s": round(wall, 2),
        "peak_rss_gib": round(rss / 2**30, 2),
        "identity": phases["identity"],
        "closure": phases["identity_components"],
        "features": phases["features"],
        "iterations": phases["iterations"],
    }
    results["agreement"] = compare(work)
    d = results["duckdb"]
    results["ratio"] = {
        "wall": round(d["wall_s"] / c["wall_s"], 2),
        "identity": round(d["identity"] / c["identity"], 2),
        "closure": round(d["closure"] / c["closure"], 1),
        "features": round(d["features"] / c["features"], 2),
        "peak_rss": round(c["peak_rss_gib"] / d["peak_rss_gib"], 2),
    }
    return results


if __name__ == "__main__":
    main()
