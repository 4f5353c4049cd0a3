"""The orders job (examples/orders/pipeline.yaml) in DuckDB: same parse, cleaning, rules, dedup and aggregate.

    duckdb_job.py SRC MONTHLY                   the single-load job: the monthly aggregate only
    duckdb_job.py SRC MONTHLY LATEST INVALID    the fan-out job (bench/orders/fanout.yaml): also the deduplicated
                                                orders, and the rows that break a rule (Weir's dead letters)
"""
import sys

import duckdb

src, monthly = sys.argv[1], sys.argv[2]
fan_out = len(sys.argv) == 5

RAW = f"""
  SELECT * FROM read_csv('{src}', header = true, columns = {{
    'order_id': 'BIGINT', 'customer_id': 'BIGINT', 'email': 'VARCHAR', 'amount': 'DOUBLE',
    'status': 'VARCHAR', 'order_date': 'DATE', 'updated_at': 'TIMESTAMP'}})
"""
CLEAN = """
  SELECT order_id, customer_id, lower(trim(email)) AS email, amount,
         CASE status WHEN 'P' THEN 'paid' WHEN 'R' THEN 'refunded' WHEN 'C' THEN 'cancelled'
                     ELSE 'unknown' END AS status,
         order_date, updated_at
  FROM raw
"""
RULES = """
  regexp_matches(email, '^[^@\\s]+@[^@\\s]+\\.[a-z]{2,}$') IS NOT FALSE
  AND (amount > 0) IS NOT FALSE
  AND order_id IS NOT NULL AND customer_id IS NOT NULL
"""
LATEST = "SELECT DISTINCT ON (order_id) * FROM valid ORDER BY order_id, updated_at DESC"
MONTHLY = """
  SELECT customer_id, date_trunc('month', order_date) AS month, sum(amount) AS total_spent,
         count(*) AS order_count, avg(amount) AS avg_order_value
  FROM latest WHERE status = 'paid'
  GROUP BY customer_id, date_trunc('month', order_date)
"""
PARQUET = "(FORMAT parquet, COMPRESSION zstd)"

if not fan_out:
    duckdb.sql(
        f"COPY (WITH raw AS ({RAW}), clean AS ({CLEAN}), valid AS (SELECT * FROM clean WHERE {RULES}),"
        f" latest AS ({LATEST}) {MONTHLY}) TO '{monthly}' {PARQUET}"
    )
else:
    latest_out, invalid_out = sys.argv[3], sys.argv[4]
    con = duckdb.connect()
    # The cleaned rows once, then each output from them: DuckDB has no statement with several outputs.
    con.sql(f"CREATE TEMP TABLE clean AS WITH raw AS ({RAW}) {CLEAN}")
    con.sql(f"COPY (SELECT * FROM clean WHERE NOT ({RULES})) TO '{invalid_out}' {PARQUET}")
    con.sql(f"CREATE TEMP TABLE latest AS WITH valid AS (SELECT * FROM clean WHERE {RULES}) {LATEST}")
    con.sql(f"COPY latest TO '{latest_out}' {PARQUET}")
    con.sql(f"COPY ({MONTHLY}) TO '{monthly}' {PARQUET}")
