-- The demo lake at a glance (run by the README's demo command).

-- Rows per source system.
SELECT 'tracks' AS source, count(*) AS rows FROM tracks
UNION ALL SELECT 'identifies', count(*) FROM identifies
UNION ALL SELECT 'orders', count(*) FROM orders
UNION ALL SELECT 'crm_contacts', count(*) FROM crm_contacts
UNION ALL SELECT 'payments', count(*) FROM payments
ORDER BY rows DESC;

-- The same mailbox as four systems wrote it, and the one form c360 matches on.
WITH written AS (
    SELECT 'identifies' AS source, email AS raw FROM identifies
    UNION ALL SELECT 'orders', email FROM orders
    UNION ALL SELECT 'crm_contacts', email FROM crm_contacts
    UNION ALL SELECT 'payments', customer_email FROM payments
)
SELECT normalize_email(raw) AS email,
       count(DISTINCT source) AS sources,
       array_sort(array_agg(DISTINCT raw)) AS as_written
FROM written
WHERE normalize_email(raw) IS NOT NULL
GROUP BY 1
ORDER BY count(DISTINCT raw) DESC, sources DESC, email
LIMIT 5;

-- Phone numbers in every format people type, in E.164.
WITH written AS (
    SELECT phone AS raw FROM identifies
    UNION ALL SELECT phone FROM orders
    UNION ALL SELECT phone FROM crm_contacts
)
SELECT normalize_phone(raw) AS phone, array_sort(array_agg(DISTINCT raw)) AS as_written
FROM written
WHERE raw IS NOT NULL
GROUP BY 1
ORDER BY count(DISTINCT raw) DESC, phone
LIMIT 5;

-- Identity stitching: 300 real people behind 1,440 identifiers (plus shared devices,
-- which stand alone).
SELECT count(*) AS identifiers, count(DISTINCT canonical_id) AS people FROM identity_graph;

-- What was kept out of stitching, and why.
SELECT rule, count(*) AS entries, sum(rows) AS rows
FROM identity_quarantine
GROUP BY rule
ORDER BY rows DESC;

-- Why are this phone number and this payment one person?
SELECT step, id_type_a, id_value_a, id_type_b, id_value_b, source, first_seen
FROM why_merged('phone', '(213) 210-4729', 'payment_id', 'pay_0000001_0')
ORDER BY step;
