//! The paginated JSON API that `bench/api/compare.py` reads with Weir and with dlt: `GET /items?page=N` returns
//! `{"data": [...], "has_more": bool}`, records generated from their id so every run serves the same data.
//! Part of the benchmark, not the product.
//!
//!     cargo run --release -p weir-cli --example api_bench_server -- PORT RECORDS PAGE_SIZE

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

#[derive(Clone, Copy)]
struct Data {
    records: u64,
    page_size: u64,
}

async fn items(State(data): State<Data>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let first = (page - 1) * data.page_size + 1;
    let last = (first + data.page_size - 1).min(data.records);
    let records: Vec<_> = (first..=last)
        .map(|id| {
            let city = ["Oslo", "Lyon", "Porto", "Turku"][(id % 4) as usize];
            json!({
                "id": id,
                "name": format!("customer {id}"),
                "email": format!("user{id}@example.com"),
                "amount": (id % 10_000) as f64 / 100.0,
                "created_at": format!("2024-{:02}-{:02}T{:02}:00:00Z", id % 12 + 1, id % 28 + 1, id % 24),
                "address": { "city": city, "zip": format!("{:05}", id % 99_999) },
            })
        })
        .collect();
    axum::Json(json!({ "data": records, "has_more": last < data.records }))
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> =
        std::env::args().skip(1).map(|a| a.parse().expect("numbers: PORT RECORDS PAGE_SIZE")).collect();
    let [port, records, page_size] = args[..] else { panic!("usage: api_bench_server PORT RECORDS PAGE_SIZE") };
    let app = Router::new().route("/items", get(items)).with_state(Data { records, page_size });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port as u16)).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
