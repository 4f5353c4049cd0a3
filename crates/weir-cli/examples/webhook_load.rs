//! The load generator of `bench/serve/webhook_load.py`: for a fixed time, `CONCURRENCY` workers post batches of
//! `BATCH` events (unique ids) to a `weir serve` webhook and time each acknowledgement; then it checks that every
//! acknowledged event is in the PostgreSQL table. Part of the benchmark, not the product.
//!
//!     cargo run --release -p weir-cli --example webhook_load -- URL TOKEN SECONDS CONCURRENCY BATCH DB_URL TABLE

use std::time::{Duration, Instant};

use serde_json::json;

struct Worker {
    latencies: Vec<Duration>,
    acked: Vec<i64>,
    refused: u64,
}

async fn work(id: i64, url: String, token: String, until: Instant, batch: i64) -> Worker {
    let http = reqwest::Client::new();
    let mut out = Worker { latencies: Vec::new(), acked: Vec::new(), refused: 0 };
    let mut seq = 0i64;
    while Instant::now() < until {
        let first = id * 1_000_000_000 + seq;
        seq += batch;
        let events: Vec<_> = (first..first + batch)
            .map(|n| {
                let kind = ["view", "click", "buy"][(n % 3) as usize];
                json!({ "id": n, "kind": kind, "amount": (n % 1000) as f64 / 10.0 })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "events": events })).expect("JSON");
        let started = Instant::now();
        let response = http.post(&url).bearer_auth(&token).body(body).send().await;
        let ok = matches!(&response, Ok(r) if r.status().is_success());
        if let Ok(r) = response {
            let _ = r.bytes().await;
        }
        out.latencies.push(started.elapsed());
        if ok {
            out.acked.extend(first..first + batch);
        } else {
            out.refused += 1;
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, seconds, concurrency, batch, db_url, table] = args.as_slice() else {
        panic!("usage: webhook_load URL TOKEN SECONDS CONCURRENCY BATCH DB_URL TABLE");
    };
    let until = Instant::now() + Duration::from_secs_f64(seconds.parse().expect("SECONDS"));
    let batch: i64 = batch.parse().expect("BATCH");
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.parse::<i64>().expect("CONCURRENCY"))
        .map(|id| tokio::spawn(work(id, url.clone(), token.clone(), until, batch)))
        .collect();
    let mut latencies = Vec::new();
    let mut acked = Vec::new();
    let mut refused = 0;
    for w in workers {
        let w = w.await.expect("worker");
        latencies.extend(w.latencies);
        acked.extend(w.acked);
        refused += w.refused;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)];

    let (client, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await.expect("PostgreSQL");
    tokio::spawn(connection);
    let stored: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table} WHERE id = ANY($1)"), &[&acked])
        .await
        .expect("count")
        .get(0);
    println!(
        "{}",
        json!({
            "requests": latencies.len(),
            "refused": refused,
            "events_acked": acked.len(),
            "events_per_second": acked.len() as f64 / elapsed,
            "p50_ms": pct(0.50).as_secs_f64() * 1000.0,
            "p99_ms": pct(0.99).as_secs_f64() * 1000.0,
            "max_ms": latencies.last().map_or(0.0, |l| l.as_secs_f64() * 1000.0),
            "acked_missing": acked.len() as i64 - stored,
        })
    );
}
