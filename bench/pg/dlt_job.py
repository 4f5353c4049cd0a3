"""The benchmark's upsert in dlt: sql_database source (pyarrow backend) merged into PostgreSQL by id."""
import sys

import dlt
from dlt.sources.sql_database import sql_table

url, work_dir = sys.argv[1], sys.argv[2]
source = sql_table(credentials=url.replace("postgresql://", "postgresql+psycopg2://", 1), table="src_orders", backend="pyarrow", chunk_size=100_000)
pipeline = dlt.pipeline(
    pipeline_name="bench_pg_upsert",
    pipelines_dir=work_dir,
    destination=dlt.destinations.postgres(url),
    dataset_name="dlt_bench",
)
info = pipeline.run(source, table_name="dst_orders", write_disposition="merge", primary_key="id")
print(info)
