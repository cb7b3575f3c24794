"""Incremental benchmark: what a scheduled rerun costs when a little data arrived.

    cargo build --release
    python benches/e2e.py --customers 1000000        # generates the lake once
    python benches/incremental.py --customers 1000000

On a hard-linked copy of the e2e lake with a few files held back (one tracks file of the
last month, one identifies file), it times under `/usr/bin/time -v`:
  1. a full run,
  2. a rerun with nothing new,
  3. a rerun after the held-back files land (incremental),
  4. the same with `--full-refresh`, the peer it must equal,
and checks with DuckDB that runs 3 and 4 published the same customer_360 and graph.
"""

import argparse
import json
import shutil
from pathlib import Path

import duckdb

from e2e import AS_OF, c360_binary, timed

TABLES = ["customer_360", "identity_graph", "identity_edges", "identity_quarantine", "identity_changes"]


def held_back(lake):
    """The files the lake receives between the first run and the third."""
    tracks = sorted((lake / "parquet" / "tracks" / "event_month=2026-06").glob("*.parquet"))
    identifies = sorted((lake / "parquet" / "identifies").glob("*.parquet"))
    return [tracks[-1], identifies[-1]]


def same_tables(a, b):
    con = duckdb.connect()
    for table in TABLES:
        fa, fb = a / f"{table}.parquet", b / f"{table}.parquet"
        differ = con.sql(
            f"SELECT count(*) FROM ((SELECT * FROM '{fa}' EXCEPT ALL SELECT * FROM '{fb}') "
            f"UNION ALL (SELECT * FROM '{fb}' EXCEPT ALL SELECT * FROM '{fa}'))"
        ).fetchall()[0][0]
        if differ:
            raise SystemExit(f"{table}: {differ} rows differ between the incremental and the full run")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100000)
    parser.add_argument("--dir", default="/tmp/c360-bench")
    args = parser.parse_args()
    root = Path(args.dir)
    source = root / f"lake-{args.customers}"
    if not (source / "c360.toml").exists():
        raise SystemExit(f"{source} not found: run benches/e2e.py --customers {args.customers} first")
    work = root / f"incremental-{args.customers}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lake = work / "lake"
    shutil.copytree(source, lake, copy_function=lambda s, d: Path(d).hardlink_to(s))
    aside = work / "aside"
    aside.mkdir()
    moved = []
    for f in held_back(lake):
        target = aside / f"{f.parent.name}-{f.name}"
        f.rename(target)
        moved.append((target, f))

    c360 = c360_binary()
    project = str(lake / "c360.toml")

    def run(name, output, *extra):
        cmd = [c360, "run", "--project", project, "--as-of", AS_OF, "--output", str(output), "--log-format", "json", *extra]
        wall, rss, _, _ = timed(cmd, work, name)
        report = json.loads((output / "run_report.json").read_text())
        return {
            "seconds": round(wall, 2),
            "peak_rss_gib": round(rss / 2**30, 2),
            "mode": report["mode"],
            "rows_in": report["rows_in"],
            "people_computed": report["people_computed"],
            "people": report["tables"][0]["rows"],
        }

    inc, full = work / "inc", work / "full"
    results = {"customers": args.customers, "as_of": AS_OF, "held_back": [str(f) for _, f in moved]}
    results["1 full run"] = run("full", inc)
    results["2 nothing new"] = run("noop", inc)
    # Both continue the same previous output, so ids and id changes compare.
    shutil.copytree(inc, full)
    for target, f in moved:
        target.rename(f)
    results["3 new files, incremental"] = run("incremental", inc)
    results["4 new files, --full-refresh"] = run("refresh", full, "--full-refresh")
    same_tables(inc, full)
    results["incremental equals full"] = True
    full_s = results["4 new files, --full-refresh"]["seconds"]
    results["speedup, incremental vs full refresh"] = round(full_s / results["3 new files, incremental"]["seconds"], 2)
    results["speedup, nothing new vs full run"] = round(results["1 full run"]["seconds"] / results["2 nothing new"]["seconds"], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
