"""The orders job (examples/orders/pipeline.yaml) in DuckDB: same parse, cleaning, rules, dedup and aggregate."""
import sys

import duckdb

src, out = sys.argv[1], sys.argv[2]
duckdb.sql(
    f"""
    COPY (
      WITH raw AS (
        SELECT * FROM read_csv('{src}', header = true, columns = {{
          'order_id': 'BIGINT', 'customer_id': 'BIGINT', 'email': 'VARCHAR', 'amount': 'DOUBLE',
          'status': 'VARCHAR', 'order_date': 'DATE', 'updated_at': 'TIMESTAMP'}})
      ),
      clean AS (
        SELECT order_id, customer_id, lower(trim(email)) AS email, amount,
               CASE status WHEN 'P' THEN 'paid' WHEN 'R' THEN 'refunded' WHEN 'C' THEN 'cancelled'
                           ELSE 'unknown' END AS status,
               order_date, updated_at
        FROM raw
      ),
      valid AS (
        SELECT * FROM clean
        WHERE regexp_matches(email, '^[^@\\s]+@[^@\\s]+\\.[a-z]{{2,}}$') IS NOT FALSE
          AND (amount > 0) IS NOT FALSE
          AND order_id IS NOT NULL AND customer_id IS NOT NULL
      ),
      latest AS (SELECT DISTINCT ON (order_id) * FROM valid ORDER BY order_id, updated_at DESC)
      SELECT customer_id, date_trunc('month', order_date) AS month, sum(amount) AS total_spent,
             count(*) AS order_count, avg(amount) AS avg_order_value
      FROM latest WHERE status = 'paid'
      GROUP BY customer_id, date_trunc('month', order_date)
    ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
    """
)
