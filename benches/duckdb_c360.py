"""The demo project's customer 360 in DuckDB SQL, as a competent DuckDB user would write it
without c360: the same normalization and blocklist, the same star edges and hub rule,
components by iterative min-label propagation (as Splink does), then the same features.

usage: duckdb_c360.py LAKE_DIR OUT_DIR AS_OF
Writes OUT_DIR/duckdb_identity.parquet (id_type, id_value, label) and
OUT_DIR/duckdb_customer_360.parquet, and prints one JSON line of phase timings.

Not modelled: per-person limits ([identity.limits]); the benchmark counts the people on
whom the two disagree.
"""

import json
import sys
import time

import duckdb

PRIORITY = ["user_id", "crm_id", "email", "phone", "payment_id", "anonymous_id"]

# Input -> (event-time column, {column: id type}), as in the generated c360.toml.
INPUTS = {
    "tracks": ("ts", {"anonymous_id": "anonymous_id", "user_id": "user_id"}),
    "identifies": ("ts", {"anonymous_id": "anonymous_id", "user_id": "user_id", "email": "email", "phone": "phone"}),
    "orders": ("ts", {"user_id": "user_id", "email": "email", "phone": "phone"}),
    "crm_contacts": ("updated_at", {"crm_id": "crm_id", "email": "email", "phone": "phone"}),
    "payments": ("ts", {"payment_id": "payment_id", "customer_email": "email"}),
}

# c360's default blocklist, as RE2 patterns per id type ("*": every type).
BLOCKLIST = [
    ("*", r"^\s*$"),
    ("*", r"^(?i)(null|none|nil|n/?a|unknown|undefined|anonymous|test|-|0|\(null\))$"),
    ("email", r"^(?i)(test|example|noreply|no-reply|none|null|fake|abc)@(test|example|email|none|domain|mail)\.(com|org|net)$"),
    ("email", r"@(example\.(com|org|net))$"),
    ("anonymous_id", r"^[0-]+$"),
    ("anonymous_id", r"^(?i)(00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$"),
    ("phone", r"^\+?1?(0{10}|1{10}|2{10}|3{10}|4{10}|5{10}|6{10}|7{10}|8{10}|9{10})$"),
    ("phone", r"^\+?(0+|1+|2+|3+|4+|5+|6+|7+|8+|9+)$"),
]


def normalize(id_type, column):
    c = f'"{column}"'
    if id_type == "email":
        e = f"lower(trim({c}))"
        return f"CASE WHEN regexp_matches({e}, '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$') THEN {e} END"
    if id_type == "phone":
        d = f"regexp_replace({c}, '[^0-9]', '', 'g')"
        return (
            f"CASE WHEN length({d}) = 10 THEN '+1' || {d} "
            f"WHEN length({d}) = 11 AND starts_with({d}, '1') THEN '+' || {d} END"
        )
    return f"nullif(trim(CAST({c} AS VARCHAR)), '')"


def blocked(id_type):
    rules = [p for t, p in BLOCKLIST if t in ("*", id_type)]
    return " OR ".join(f"regexp_matches(value, '{p}')" for p in rules)


def ranked(ids):
    """An input's (column, id type) pairs, most trusted type first."""
    return sorted(ids.items(), key=lambda ci: PRIORITY.index(ci[1]))


def source(lake, name):
    path = f"{lake}/parquet/{name}/**/*.parquet"
    return f"read_parquet('{path}', hive_partitioning = {str(name == 'tracks').lower()})"


def main():
    lake, out, as_of = sys.argv[1], sys.argv[2], sys.argv[3]
    con = duckdb.connect()
    phases = {}
    start = time.perf_counter()
    mark = start

    def phase(name):
        nonlocal mark
        now = time.perf_counter()
        phases[name] = round(now - mark, 3)
        mark = now

    cutoff = f"TIMESTAMPTZ '{as_of}'"
    # Each input with its identifiers normalized alongside, in columns named after their id
    # type and in order of trust: a row's most trusted identifier is a COALESCE.
    for name, (ts, ids) in INPUTS.items():
        normalized = ", ".join(f'{normalize(t, c)} AS "#{t}"' for c, t in ranked(ids))
        con.execute(
            f"CREATE TABLE raw_{name} AS SELECT *, {normalized} FROM {source(lake, name)} WHERE {ts} <= {cutoff}"
        )
    phase("read")

    # The blocklist's patterns meet each distinct value once.
    distinct = " UNION ".join(
        f"SELECT '{t}' AS id_type, \"#{t}\" AS value FROM raw_{name}"
        for name, (_, ids) in INPUTS.items()
        for _, t in ranked(ids)
    )
    blocks = " OR ".join(f"(id_type = '{t}' AND ({blocked(t)}))" for t in PRIORITY)
    con.execute(f"CREATE TABLE blocked AS SELECT * FROM ({distinct}) WHERE value IS NOT NULL AND ({blocks})")
    # Blocked values read as NULL through a view: an UPDATE of each column rewrites the
    # tables (it cost a third of the identity phase at 1M customers).
    for name, (_, ids) in INPUTS.items():
        cleared = ", ".join(
            f"CASE WHEN \"#{t}\" IN (SELECT value FROM blocked WHERE id_type = '{t}') THEN NULL ELSE \"#{t}\" END AS \"#{t}\""
            for _, t in ranked(ids)
        )
        con.execute(f"CREATE VIEW {name} AS SELECT * REPLACE ({cleared}) FROM raw_{name}")
    seen = " UNION ALL ".join(
        f"SELECT '{t}' AS id_type, \"#{t}\" AS value, {ts} AS ts FROM {name} WHERE \"#{t}\" IS NOT NULL"
        for name, (ts, ids) in INPUTS.items()
        for _, t in ranked(ids)
    )
    con.execute(
        f"""CREATE TABLE nodes AS
            SELECT row_number() OVER () AS id, id_type, value, min(ts) AS first_seen, max(ts) AS last_seen
            FROM ({seen}) GROUP BY id_type, value"""
    )
    # A star around each row's most trusted identifier: the columns before one, coalesced.
    links = []
    for name, (_, ids) in INPUTS.items():
        types = [t for _, t in ranked(ids)]
        for j in range(1, len(types)):
            before = [f'"#{t}"' for t in types[:j]]
            centre_type = " ".join(f"WHEN {c} IS NOT NULL THEN '{t}'" for c, t in zip(before, types))
            links.append(
                f"""SELECT CASE {centre_type} END AS ct, coalesce({", ".join(before)}) AS cv,
                           '{types[j]}' AS ot, "#{types[j]}" AS ov
                    FROM {name} WHERE "#{types[j]}" IS NOT NULL AND coalesce({", ".join(before)}) IS NOT NULL"""
            )
    con.execute(
        f"""CREATE TABLE edges AS
            SELECT DISTINCT least(c.id, o.id) AS a, greatest(c.id, o.id) AS b
            FROM (SELECT DISTINCT * FROM ({" UNION ALL ".join(links)})) l
            JOIN nodes c ON c.id_type = l.ct AND c.value = l.cv
            JOIN nodes o ON o.id_type = l.ot AND o.value = l.ov"""
    )
    # Hubs: a device linked to more than one user id links no one.
    con.execute(
        """CREATE TABLE hubs AS
           SELECT d.id FROM nodes d
           JOIN (SELECT a AS x, b AS y FROM edges UNION ALL SELECT b, a FROM edges) e ON e.x = d.id
           JOIN nodes u ON u.id = e.y
           WHERE d.id_type = 'anonymous_id' AND u.id_type = 'user_id'
           GROUP BY d.id HAVING count(DISTINCT u.id) > 1"""
    )
    con.execute("DELETE FROM edges WHERE a IN (SELECT id FROM hubs) OR b IN (SELECT id FROM hubs)")
    phase("identity_edges")

    # Min-label propagation until nothing changes.
    con.execute("CREATE TABLE both_ways AS SELECT a AS x, b AS y FROM edges UNION ALL SELECT b, a FROM edges")
    con.execute("CREATE TABLE labels AS SELECT id, id AS label FROM nodes")
    iterations = 0
    while True:
        iterations += 1
        con.execute(
            """CREATE OR REPLACE TABLE next AS
               SELECT l.id, least(l.label, coalesce(min(n.label), l.label)) AS label
               FROM labels l LEFT JOIN both_ways e ON e.x = l.id LEFT JOIN labels n ON n.id = e.y
               GROUP BY l.id, l.label"""
        )
        changed = con.execute(
            "SELECT count(*) FROM next JOIN labels USING (id) WHERE next.label <> labels.label"
        ).fetchone()[0]
        con.execute("DROP TABLE labels")
        con.execute("ALTER TABLE next RENAME TO labels")
        if changed == 0:
            break
    con.execute("CREATE TABLE node_person AS SELECT n.id_type, n.value, l.label FROM nodes n JOIN labels l USING (id)")
    # The closure on prepared edges ends here; writing it out counts with the features, as
    # c360 writes its graph's tables while computing them.
    phase("identity_components")
    con.execute(
        f"""COPY (SELECT id_type, value AS id_value, label FROM node_person)
            TO '{out}/duckdb_identity.parquet' (FORMAT parquet)"""
    )

    # Each row's person: the label of its most trusted identifier.
    for name, (_, ids) in INPUTS.items():
        columns = [(f'"#{t}"', t) for _, t in ranked(ids)]
        centre_type = " ".join(f"WHEN {c} IS NOT NULL THEN '{t}'" for c, t in columns)
        centre = f"coalesce({', '.join(c for c, _ in columns)})"
        con.execute(
            f"""CREATE VIEW s_{name} AS
                SELECT p.label AS person, t.* FROM {name} t
                JOIN node_person p ON p.id_type = CASE {centre_type} END AND p.value = {centre}"""
        )
    con.execute(
        f"""COPY (
            WITH people AS (
              SELECT l.label AS person, min(n.first_seen) AS first_seen, max(n.last_seen) AS last_seen
              FROM labels l JOIN nodes n USING (id) GROUP BY l.label
            ),
            t AS (
              SELECT person, count(*) AS n_events,
                     sum(revenue) FILTER (WHERE event = 'order_completed') AS track_revenue
              FROM s_tracks GROUP BY person
            ),
            v AS (
              SELECT person,
                     list(product_id ORDER BY ts DESC, product_id)[1:5] AS last_products_viewed
              FROM s_tracks WHERE event = 'product_viewed' AND product_id IS NOT NULL GROUP BY person
            ),
            f AS (
              SELECT person, arg_min(product_id, (-n, product_id)) AS favourite_product
              FROM (SELECT person, product_id, count(*) AS n FROM s_tracks
                    WHERE event = 'product_viewed' AND product_id IS NOT NULL GROUP BY ALL)
              GROUP BY person
            ),
            o AS (
              SELECT person, count(*) AS n_orders, sum(amount) AS order_revenue,
                     coalesce(sum(amount) FILTER (WHERE ts > {cutoff} - INTERVAL 30 DAY), 0) AS revenue_30d
              FROM s_orders GROUP BY person
            ),
            p AS (SELECT person, sum(amount) AS payment_total FROM s_payments GROUP BY person),
            c AS (
              SELECT person, list(first_name ORDER BY updated_at DESC, first_name)[1] AS first_name,
                     list(last_name ORDER BY updated_at DESC, last_name)[1] AS last_name
              FROM s_crm_contacts GROUP BY person
            )
            SELECT people.person, people.first_seen, people.last_seen, c.first_name, c.last_name,
                   coalesce(t.n_events, 0) AS n_events, coalesce(v.last_products_viewed, []) AS last_products_viewed,
                   f.favourite_product, t.track_revenue, coalesce(o.n_orders, 0) AS n_orders, o.order_revenue,
                   coalesce(o.revenue_30d, 0) AS revenue_30d, p.payment_total,
                   coalesce(t.track_revenue, 0) + coalesce(o.order_revenue, 0) + coalesce(p.payment_total, 0) AS lifetime_revenue,
                   o.order_revenue / nullif(o.n_orders, 0) AS avg_order_value
            FROM people LEFT JOIN t USING (person) LEFT JOIN v USING (person) LEFT JOIN f USING (person)
            LEFT JOIN o USING (person) LEFT JOIN p USING (person) LEFT JOIN c USING (person)
            ORDER BY people.person
        ) TO '{out}/duckdb_customer_360.parquet' (FORMAT parquet)"""
    )
    phase("features")
    phases["identity"] = round(phases["read"] + phases["identity_edges"] + phases["identity_components"], 3)
    phases["total"] = round(time.perf_counter() - start, 3)
    phases["iterations"] = iterations
    print(json.dumps(phases))


if __name__ == "__main__":
    main()
