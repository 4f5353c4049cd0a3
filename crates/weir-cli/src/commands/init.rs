//! `weir init`: a project that runs as soon as it is created.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create (must be empty or absent).
    pub dir: PathBuf,
}

const PIPELINE: &str = r#"# A starter pipeline: read orders, clean them, set bad rows aside, write Parquet.
# Run it with `weir run pipeline.yaml`; check edits with `weir validate pipeline.yaml`.
name: starter
description: Clean raw orders and load them as Parquet.
owner: data-team
contacts: [data-team@example.com]

variables:
  min_amount: { type: float, default: 0 }

state:
  last_run: { type: timestamp, default: "1970-01-01T00:00:00Z", update: run_started_at }

steps:
  orders:
    read_csv: { path: data/orders.csv }
  clean:
    map:
      input: orders
      columns:
        order_id: order_id
        email: lower(trim(email))
        amount: amount
        ordered_at: to_date(ordered_at)
  checked:
    validate:
      input: clean
      rules:
        email_format: { regex: { column: email, pattern: '^[^@\s]+@[^@\s]+\.[a-z]+$' } }
        amount_positive: { positive: amount }
  big_enough:
    filter: { input: checked, where: "amount >= $min_amount" }
  out:
    write_parquet: { input: big_enough, path: out/orders.parquet }
"#;

const TESTS: &str = r#"# The pipeline's test cases: `weir test .` runs them (docs/testing.md).
cases:
  bad rows are set aside and small orders left out:
    variables: { min_amount: 10 }
    given:
      orders:
        rows:
          - { order_id: 1, email: " Ada@Example.com ", amount: 19.99, ordered_at: "2024-01-15" }
          - { order_id: 2, email: bob@example.com, amount: 5.0, ordered_at: "2024-01-16" }
          - { order_id: 3, email: not-an-email, amount: 7.5, ordered_at: "2024-01-16" }
    expect:
      steps:
        out:
          rows:
            - { order_id: 1, email: ada@example.com, amount: 19.99 }
      dead_letters:
        - { step: checked, reason: email_format, record: { order_id: 3 } }
"#;

const ORDERS: &str = "order_id,email,amount,ordered_at
1, Ada@Example.com ,19.99,2024-01-15
2,bob@example.com,5.00,2024-01-16
3,not-an-email,7.50,2024-01-16
4,cy@example.com,-3.00,2024-01-17
";

pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    if args.dir.exists() && args.dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty", args.dir.display());
    }
    std::fs::create_dir_all(args.dir.join("data")).with_context(|| format!("cannot create {}", args.dir.display()))?;
    std::fs::write(args.dir.join("pipeline.yaml"), PIPELINE)?;
    std::fs::write(args.dir.join("pipeline.test.yaml"), TESTS)?;
    std::fs::write(args.dir.join("data/orders.csv"), ORDERS)?;
    std::fs::write(args.dir.join(".gitignore"), ".weir/\nout/\n")?;
    println!(
        "created {0}/pipeline.yaml and its tests; run it with:\n  weir run {0}/pipeline.yaml\nand its tests with:\n  weir test {0}",
        args.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
