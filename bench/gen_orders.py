"""Writes N synthetic order rows as CSV (about 100 bytes a row), deterministic for a given N.

1% of rows are a newer version of the previous order (same order_id, later updated_at), 0.2% have a broken email
and 0.1% a negative amount, so validation and dedup have work to do. DuckDB generates it: fast and reproducible.

    python3 bench/gen_orders.py bench/data/orders.csv 10000000
"""
import sys
from pathlib import Path

import duckdb


def main(path: str, rows: int) -> None:
    duckdb.sql(
        f"""
        COPY (
          SELECT
            CASE WHEN i % 100 = 7 THEN i - 1 ELSE i END AS order_id,
            hash(i) % 100000 AS customer_id,
            CASE WHEN i % 500 = 3 THEN 'broken-email'
                 ELSE ' User' || (hash(i) % 100000) || '@Example.com ' END AS email,
            CASE WHEN i % 1000 = 5 THEN -1.0 ELSE round((hash(i * 7) % 100000) / 100.0 + 1, 2) END AS amount,
            ['P', 'P', 'P', 'R', 'C'][CAST(hash(i * 3) % 5 AS BIGINT) + 1] AS status,
            DATE '2023-01-01' + CAST(hash(i * 11) % 730 AS INTEGER) AS order_date,
            TIMESTAMP '2023-01-01 00:00:00' + to_seconds(i) AS updated_at
          FROM range(1, {rows} + 1) t(i)
        ) TO '{path}' (HEADER, DELIMITER ',')
        """
    )


def orders_csv(rows: int) -> Path:
    """bench/data/orders-ROWS.csv, generated first if it is missing: the input the orders benchmarks share."""
    path = Path(__file__).resolve().parent / "data" / f"orders-{rows}.csv"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        print(f"generating {rows:,} orders -> {path}", flush=True)
        main(str(path), rows)
    return path


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
