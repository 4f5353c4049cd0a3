"""The API benchmark's job in dlt: its rest_api source, page-number pagination, Parquet files out."""
import sys

import dlt
from dlt.sources.rest_api import rest_api_source

base, out = sys.argv[1], sys.argv[2]
source = rest_api_source(
    {
        "client": {"base_url": base},
        "resources": [
            {
                "name": "items",
                "endpoint": {
                    "path": "items",
                    "data_selector": "data",
                    "paginator": {"type": "page_number", "page_param": "page", "base_page": 1, "total_path": None},
                },
            }
        ],
    }
)
pipeline = dlt.pipeline(
    pipeline_name="weir_api_bench",
    destination=dlt.destinations.filesystem(bucket_url=out),
    dataset_name="api",
    pipelines_dir=out + "/.dlt",
)
pipeline.run(source, loader_file_format="parquet")
