"""The orders job (examples/orders/pipeline.yaml) in Polars' streaming lazy API."""
import sys

import polars as pl

src, out = sys.argv[1], sys.argv[2]
schema = {
    "order_id": pl.Int64, "customer_id": pl.Int64, "email": pl.String, "amount": pl.Float64,
    "status": pl.String, "order_date": pl.Date, "updated_at": pl.Datetime("us"),
}
labels = {"P": "paid", "R": "refunded", "C": "cancelled"}
(
    pl.scan_csv(src, schema=schema)
    .select(
        "order_id", "customer_id",
        pl.col("email").str.strip_chars().str.to_lowercase().alias("email"),
        "amount",
        pl.col("status").replace_strict(labels, default="unknown").alias("status"),
        "order_date", "updated_at",
    )
    .filter(
        pl.col("email").str.contains(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$").fill_null(True)
        & (pl.col("amount") > 0).fill_null(True)
        & pl.col("order_id").is_not_null()
        & pl.col("customer_id").is_not_null()
    )
    .sort("updated_at", descending=True)
    .unique(subset=["order_id"], keep="first")
    .filter(pl.col("status") == "paid")
    .group_by("customer_id", pl.col("order_date").dt.truncate("1mo").alias("month"))
    .agg(
        pl.col("amount").sum().alias("total_spent"),
        pl.len().alias("order_count"),
        pl.col("amount").mean().alias("avg_order_value"),
    )
    .sink_parquet(out, compression="zstd")
)
