"""The Delta benchmark's jobs in the peers, as Weir runs them in bench/delta/*.yaml.

    delta_job.py deltalake write ORDERS.csv LAKE     pip deltalake: a streamed pyarrow CSV read into write_deltalake
    delta_job.py deltalake merge CHANGES.csv LAKE    pip deltalake: DeltaTable.merge on order_id
    delta_job.py polars write ORDERS.csv LAKE        Polars: scan_csv ... collect().write_delta
    delta_job.py polars merge CHANGES.csv LAKE       Polars: write_delta(mode="merge")
    delta_job.py duckdb read LAKE OUT.csv            DuckDB's delta extension (PYTHONPATH=$WEIR_DUCKDB_DELTA)
    delta_job.py duckdb totals LAKE                  rows, order ids and sum of amounts, for the result check
"""
import glob
import os
import sys

QUERY = """SELECT status, count(*) AS orders, round(sum(amount), 2) AS total FROM {table}
WHERE month = '2024-03' GROUP BY status ORDER BY status"""


def csv_options():
    import pyarrow as pa
    import pyarrow.csv as csv

    types = {"order_id": pa.int64(), "customer_id": pa.int64(), "email": pa.string(), "amount": pa.float64(),
             "status": pa.string(), "order_date": pa.date32(), "updated_at": pa.timestamp("us")}
    return csv.ConvertOptions(column_types=types)


def deltalake_job(action, source, lake):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as csv
    from deltalake import DeltaTable, write_deltalake

    reader = csv.open_csv(source, convert_options=csv_options(), read_options=csv.ReadOptions(block_size=1 << 24))

    def with_month(batch):
        return batch.append_column("month", pc.strftime(batch.column("order_date"), "%Y-%m"))

    if action == "write":
        first = with_month(reader.read_next_batch())
        batches = pa.RecordBatchReader.from_batches(first.schema, (b for bs in ([first], map(with_month, reader)) for b in bs))
        write_deltalake(lake, batches, partition_by=["month"])
    else:
        source = pa.Table.from_batches([with_month(b) for b in reader])
        (DeltaTable(lake).merge(source, "t.order_id = s.order_id", source_alias="s", target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())


def polars_job(action, source, lake):
    import polars as pl

    frame = (pl.scan_csv(source, try_parse_dates=True)
             .with_columns(pl.col("order_date").cast(pl.Date), pl.col("updated_at").cast(pl.Datetime("us")))
             .with_columns(month=pl.col("order_date").dt.strftime("%Y-%m"))
             .collect())
    if action == "write":
        frame.write_delta(lake, delta_write_options={"partition_by": ["month"]})
    else:
        (frame.write_delta(lake, mode="merge", delta_merge_options={
            "predicate": "t.order_id = s.order_id", "source_alias": "s", "target_alias": "t"})
         .when_matched_update_all().when_not_matched_insert_all().execute())


def duckdb_job(action, lake, out=None):
    import duckdb
    import duckdb_extension_delta

    con = duckdb.connect()
    con.execute(f"LOAD '{glob.glob(duckdb_extension_delta.__path__[0] + '/extensions/*/delta.duckdb_extension')[0]}'")
    table = f"delta_scan('{lake}')"
    if action == "read":
        con.execute(f"COPY ({QUERY.format(table=table)}) TO '{out}' (HEADER)")
    else:
        print(con.execute(f"SELECT count(*), count(DISTINCT order_id), round(sum(amount), 2) FROM {table}").fetchone())


def main():
    peer, action, *args = sys.argv[1:]
    {"deltalake": deltalake_job, "polars": polars_job, "duckdb": duckdb_job}[peer](action, *args)
    sys.stdout.flush()
    os._exit(0)  # deltalake's runtime can keep a process from exiting


if __name__ == "__main__":
    main()
