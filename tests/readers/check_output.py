"""Reads a c360 run's output with the engines its users read it with, and checks what
they see against what the Rust test computed: DuckDB and Spark read the Parquet tables,
the deltalake package reads the Delta tables.

usage: check_output.py PARQUET_DIR DELTA_DIR EXPECTED_JSON
"""

import json
import sys
from decimal import Decimal


def fail(engine, message):
    sys.exit(f"{engine}: {message}")


def check(engine, got, want, what):
    if got != want:
        fail(engine, f"{what}: expected {want!r}, got {got!r}")


def duckdb_reads(parquet_dir, expected):
    import duckdb

    path = f"{parquet_dir}/customer_360.parquet"
    con = duckdb.connect()
    rows = con.execute(f"SELECT count(*) FROM '{path}'").fetchone()[0]
    check("duckdb", rows, expected["rows"], "row count")
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')").fetchall())
    for column, want in {
        "c360_id": "VARCHAR",
        "emails": "VARCHAR[]",
        "first_seen": "TIMESTAMP WITH TIME ZONE",
        "lifetime_revenue": "DECIMAL(24,2)",
        "revenue_30d": "DECIMAL(38,2)",
        "n_orders": "BIGINT",
        "last_products_viewed": "VARCHAR[]",
    }.items():
        check("duckdb", types.get(column), want, f"type of {column}")
    for person in expected["people"]:
        got = con.execute(
            f"SELECT lifetime_revenue, n_orders, last_products_viewed, first_name, epoch_us(first_seen) "
            f"FROM '{path}' WHERE c360_id = ?",
            [person["c360_id"]],
        ).fetchone()
        want = (
            Decimal(person["lifetime_revenue"]),
            person["n_orders"],
            person["last_products_viewed"],
            person["first_name"],
            person["first_seen_us"],
        )
        check("duckdb", got, want, f"row of {person['c360_id']}")
    kv = {
        k.decode(): v.decode()
        for k, v in con.execute(f"SELECT key, value FROM parquet_kv_metadata('{path}')").fetchall()
    }
    check("duckdb", kv.get("c360.as_of"), expected["as_of"], "footer c360.as_of")
    catalog = json.loads(kv["c360.catalog"])
    names = [c["name"] for c in catalog["columns"]]
    check("duckdb", names, list(types.keys()), "footer catalog columns")
    graph = con.execute(f"SELECT count(*) FROM '{parquet_dir}/identity_graph.parquet'").fetchone()[0]
    check("duckdb", graph, expected["identifiers"], "identity_graph rows")


def spark_reads(parquet_dir, expected):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("c360-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    try:
        df = spark.read.parquet(f"{parquet_dir}/customer_360.parquet")
        check("spark", df.count(), expected["rows"], "row count")
        types = dict(df.dtypes)
        for column, want in {
            "c360_id": "string",
            "emails": "array<string>",
            "first_seen": "timestamp",
            "lifetime_revenue": "decimal(24,2)",
            "revenue_30d": "decimal(38,2)",
            "n_orders": "bigint",
            "last_products_viewed": "array<string>",
        }.items():
            check("spark", types.get(column), want, f"type of {column}")
        for person in expected["people"]:
            row = df.where(df.c360_id == person["c360_id"]).collect()
            check("spark", len(row), 1, f"rows for {person['c360_id']}")
            row = row[0]
            check("spark", row.lifetime_revenue, Decimal(person["lifetime_revenue"]), "lifetime_revenue")
            check("spark", row.n_orders, person["n_orders"], "n_orders")
            check("spark", list(row.last_products_viewed), person["last_products_viewed"], "last_products_viewed")
            check("spark", row.first_name, person["first_name"], "first_name")
            first_seen_us = round(row.first_seen.timestamp() * 1_000_000)
            check("spark", first_seen_us, person["first_seen_us"], "first_seen")
    finally:
        spark.stop()


def deltalake_reads(delta_dir, expected):
    from deltalake import DeltaTable

    table = DeltaTable(f"{delta_dir}/customer_360")
    data = table.to_pyarrow_table()
    check("deltalake", data.num_rows, expected["rows"], "row count")
    rows = {r["c360_id"]: r for r in data.to_pylist()}
    for person in expected["people"]:
        row = rows.get(person["c360_id"])
        if row is None:
            fail("deltalake", f"no row for {person['c360_id']}")
        check("deltalake", row["lifetime_revenue"], Decimal(person["lifetime_revenue"]), "lifetime_revenue")
        check("deltalake", row["n_orders"], person["n_orders"], "n_orders")
        check("deltalake", row["last_products_viewed"], person["last_products_viewed"], "last_products_viewed")
    graph = DeltaTable(f"{delta_dir}/identity_graph").to_pyarrow_table()
    check("deltalake", graph.num_rows, expected["identifiers"], "identity_graph rows")


def main():
    parquet_dir, delta_dir, expected = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    duckdb_reads(parquet_dir, expected)
    deltalake_reads(delta_dir, expected)
    spark_reads(parquet_dir, expected)
    print("duckdb, spark and deltalake read the output as expected")


if __name__ == "__main__":
    main()
