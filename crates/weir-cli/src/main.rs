//! `weir`: run, check and inspect data pipelines.
//!
//! Exit codes: 0 success, 1 the pipeline has mistakes (`validate`), 2 any other error.

mod commands;
mod load;
mod progress;
mod site;
mod testing;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// jemalloc rather than glibc's malloc, as pip `deltalake` and Polars use: Arrow's many short-lived buffers,
/// allocated on one worker thread and freed on another, made the same delta-rs merge take a fifth longer in Weir
/// than in Python, and the orders job 0.83x its time with it (bench/RESULTS.md, 2026-12-08). Mimalloc was
/// tried: less user time, twice the system time, and the merge's peak memory over 1 GB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const AFTER_HELP: &str = "\
Examples:
  weir init my-project                     scaffold a working example project
  weir validate pipeline.yaml              check a pipeline; mistakes point at line:column
  weir run pipeline.yaml --var day=2024-01-15
  weir runs pipeline.yaml                  history with per-step row counts
  weir dlq list pipeline.yaml              records that were set aside, with reasons
  weir run pipeline.yaml --resume          go on with a failed or killed run from its last checkpoint
  weir serve pipelines/                    run a directory of pipelines on their triggers, with an API
  weir test examples/                      run the pipelines' test cases (NAME.test.yaml beside NAME.yaml)
  weir docs pipelines/ -o site/            a static site: every pipeline, its lineage, schedule and dependencies

Exit codes: 0 ok, 1 the pipeline has mistakes, 2 error.";

#[derive(Debug, Parser)]
#[command(name = "weir", version, about = "Data pipelines on Arrow and DataFusion: extract, transform, load.", after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    /// `human` on a terminal, `json` (one object per line) for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, env = "WEIR_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    /// Where the embedded state store (unless `--state` names another), scratch files and load packages are kept
    /// [default: `.weir/` beside the pipeline file].
    #[arg(long, env = "WEIR_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// The state store: a SQLite file, or `postgres://…` for a store several `weir serve` instances (and `weir
    /// run`s) share [default: `state.db` in the state directory].
    #[arg(long, env = "WEIR_STATE", hide_env_values = true, global = true, value_name = "PATH|postgres://…", value_parser = parse_state)]
    state: Option<weir_engine::StateLocation>,
    /// Where each run's log lines go once a command opens its store.
    #[arg(skip)]
    run_logs: weir_engine::LogSink,
}

fn parse_state(text: &str) -> Result<weir_engine::StateLocation, String> {
    Ok(weir_engine::StateLocation::parse(text))
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline once.
    #[command(
        after_help = "Examples:\n  weir run examples/orders/pipeline.yaml --var input=/data/orders-*.csv --memory-limit 512MB\n  weir run examples/postgres/incremental_sync.yaml --dry-run   (see the DDL and merge SQL; nothing is committed)"
    )]
    Run(commands::run::RunArgs),
    /// Check pipelines without running them: YAML, step references, cycles, env vars, SQL and columns.
    #[command(
        after_help = "Example:\n  weir validate pipelines/*.yaml\n\nPrints `file:line:col: message` per mistake; exits 1 if any."
    )]
    Validate(commands::validate::ValidateArgs),
    /// Show the DAG and the physical plan of every load.
    #[command(
        after_help = "Examples:\n  weir explain examples/fan_out_fan_in/pipeline.yaml\n  weir explain examples/orders/pipeline.yaml --var input=/data/orders-*.csv"
    )]
    Explain(commands::validate::ExplainArgs),
    /// Print the JSON Schema of pipeline files (for editors: `# yaml-language-server: $schema=...`).
    Schema {
        /// Print the reference as Markdown instead (`docs/reference.md`).
        #[arg(long, conflicts_with = "tests")]
        markdown: bool,
        /// Print the JSON Schema of test files (`NAME.test.yaml`, for `weir test`) instead.
        #[arg(long)]
        tests: bool,
    },
    /// List the step kinds and connection kinds, and which connection kinds this build has.
    #[command(
        after_help = "A connection kind marked `needs --features X` is known but left out of this build; build weir with that feature to use it."
    )]
    List,
    /// Scaffold a project with a working pipeline and sample data.
    #[command(after_help = "Example:\n  weir init demo && weir run demo/pipeline.yaml")]
    Init(commands::init::InitArgs),
    /// Run history of a pipeline, with per-step metrics.
    #[command(
        after_help = "Examples:\n  weir runs pipeline.yaml\n  weir runs pipeline.yaml --run 0192...  (one run's steps)\n  weir runs pipeline.yaml --json"
    )]
    Runs(commands::inspect::RunsArgs),
    /// Read or change the state values a pipeline keeps between runs.
    #[command(
        subcommand,
        after_help = "Examples:\n  weir state get pipeline.yaml\n  weir state set pipeline.yaml last_sync 2024-01-01T00:00:00Z   (re-read from an earlier point)\n  weir state reset pipeline.yaml                                (back to the declared defaults: a full re-sync)"
    )]
    State(commands::inspect::StateCommand),
    /// Browse the dead-letter store: records set aside with their reasons.
    #[command(
        subcommand,
        after_help = "Examples:\n  weir dlq list pipeline.yaml              id, step, origin (file:line) and reason\n  weir dlq list pipeline.yaml --run ID --json\n  weir dlq show pipeline.yaml 42           the original record, whole\n  weir dlq replay pipeline.yaml            after a fix: send them through again; those that pass are removed\n  weir dlq purge pipeline.yaml --step checked   delete one step's dead letters (--run ID, --id N, --all)"
    )]
    Dlq(commands::inspect::DlqCommand),
    /// Run a pipeline once per value of a date or integer variable over a range, oldest first; state is left alone.
    #[command(
        after_help = "Examples:\n  weir backfill daily.yaml --var day --from 2024-01-01 --to 2024-01-31\n  weir backfill shards.yaml --var shard --from 0 --to 15 --keep-going"
    )]
    Backfill(commands::backfill::BackfillArgs),
    /// Run a directory of pipelines on their triggers (cron, every, after, webhook), with a JSON API and /metrics.
    #[command(
        after_help = "Examples:\n  weir serve pipelines/ --listen 127.0.0.1:8080\n  weir serve pipelines/ --listen 0.0.0.0:8080 --tokens tokens.yaml --tls-cert cert.pem --tls-key key.pem\n  weir serve pipelines/ --hooks-listen 0.0.0.0:8443   (webhooks face the network, the API stays on 127.0.0.1)\n  WEIR_STATE=postgres://weir@db/weir weir serve pipelines/   (on several machines: they share runs, schedules and takeovers)\n  curl -X POST -H 'Content-Type: application/json' -H \"Authorization: Bearer $TOKEN\" 127.0.0.1:8080/api/pipelines/orders/runs\n                                                           (a manual run; ?wait=true answers when it ends)\n  curl -H \"Authorization: Bearer $TOKEN\" 127.0.0.1:8080/api/pipelines   (next and last run of each)\n  curl 127.0.0.1:8080/metrics      (Prometheus: open without tokens or with --open-metrics, else a metrics token)\n\nA call that changes something must be sent as `Content-Type: application/json`; calls from other sites' pages\nare refused."
    )]
    Serve(commands::serve::ServeArgs),
    /// Run pipelines' test cases: given data for extract steps, expected rows, dead letters, state and errors.
    #[command(
        after_help = "Examples:\n  weir test examples/                      every NAME.test.yaml under examples/, in parallel\n  weir test orders.test.yaml --filter dedup    only cases whose name contains `dedup`\n  weir test pipelines/ --junit report.xml      a JUnit report for CI as well\n  weir test pipelines/ --update                write the rows the runs produced over expected rows that differ\n\nA case replaces what extract steps read (`given`: rows, a fixture file, or API responses served on\n127.0.0.1), captures what loads write in memory (unless it names a real connection), and compares.\nSee docs/testing.md. Exit codes: 0 every case passed, 1 some failed, 2 some could not run."
    )]
    Test(testing::TestArgs),
    /// Write a static site documenting pipelines: owner and contacts, sources and destinations, lineage, steps,
    /// checks, schedules with their next fire times, and the dependencies between pipelines.
    #[command(
        after_help = "Examples:\n  weir docs pipelines/ -o site/            then open site/index.html (no server, no network)\n  weir docs pipelines/ --state postgres://weir@db/weir -o site/   with each pipeline's last runs and stored state\n\nConnections appear by name and kind only: URLs and options, which may hold secrets, are never written."
    )]
    Docs(site::DocsArgs),
    /// Make an API token for `weir serve`: prints the secret once, and the tokens-file line that accepts it.
    #[command(
        after_help = "Examples:\n  weir token ci --role operate >> ci.secret      (the file line goes to stderr)\n  weir token grafana --role metrics\n\nRoles: metrics < read < operate < admin; each may do all the ones before it may."
    )]
    Token(commands::serve::TokenArgs),
    /// Start the scheduler of a cluster that runs pipelines' queries (`settings.engine: ballista://host:port`).
    #[command(
        after_help = "Examples:\n  weir scheduler --listen 0.0.0.0:50050 --external-host sched.internal\n  weir executor --scheduler sched.internal:50050 --bind 0.0.0.0 --external-host node1.internal   (on each node)\n  weir run pipeline.yaml --engine ballista://sched.internal:50050\n\nThe cluster is Apache DataFusion Ballista; see docs/scale.md for sizing."
    )]
    Scheduler(commands::cluster::SchedulerArgs),
    /// Start an executor of a cluster, which runs the tasks its scheduler sends.
    #[command(
        after_help = "Examples:\n  weir executor --scheduler 127.0.0.1:50050\n  weir executor --scheduler sched.internal:50050 --bind 0.0.0.0 --external-host node1.internal --work-dir /mnt/scratch\n\nExecutors read the files a pipeline names, and the files a run hands them from its scratch directory:\nboth must be at the same paths on every node (a shared file system) or on object storage."
    )]
    Executor(commands::cluster::ExecutorArgs),
}

impl Global {
    /// The state store given by `--state`, else `state.db` in `state_dir`.
    fn state_location(&self, state_dir: &std::path::Path) -> weir_engine::StateLocation {
        self.state.clone().unwrap_or_else(|| weir_engine::StateLocation::File(state_dir.join("state.db")))
    }

    /// The level `-v` and `-q` move from: `base` 0 is info, 2 errors only.
    fn log_level(&self, base: i16) -> tracing::Level {
        match i16::from(self.verbose) - i16::from(self.quiet) - base {
            i16::MIN..=-2 => tracing::Level::ERROR,
            -1 => tracing::Level::WARN,
            0 => tracing::Level::INFO,
            1 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    }
}

/// `quiet_runs`: for `weir test`, whose runs would log every step: only errors unless `-v` asks for more.
fn init_logging(global: &Global, quiet_runs: bool) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(global.log_level(if quiet_runs { 2 } else { 0 }).into())
        .with_env_var("WEIR_LOG")
        .from_env_lossy()
        .add_directive("datafusion=warn".parse().expect("static directive"))
        // delta-rs and its kernel log, as errors, what they return to Weir, which reports it naming the table and
        // step; some are no error at all (a table a load is about to create, a commit a dry run aborts).
        .add_directive("buoyant_kernel=off".parse().expect("static directive"))
        .add_directive("deltalake_core=warn".parse().expect("static directive"))
        .add_directive("deltalake_core::kernel::transaction=off".parse().expect("static directive"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let runs = weir_engine::RunLogLayer::new(global.run_logs.clone());
    match global.log_format {
        LogFormat::Json => builder.json().flatten_event(true).finish().with(runs).init(),
        LogFormat::Human => builder.with_target(false).compact().finish().with(runs).init(),
    }
}

fn main() -> ExitCode {
    // rustls picks its cryptography by itself only when built with one provider; delta-rs's HTTP client brings
    // aws-lc-rs beside the ring that Weir's TLS uses, so Weir names ring for every TLS connection it makes.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_logging(&cli.global, matches!(cli.command, Command::Test(_)));
    // Planning and executing deep plans recurses; Ballista's own processes run with 32 MiB stacks for it.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(32 << 20).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Run(args) => commands::run::run(g, args).await,
        Command::Validate(args) => commands::validate::validate(g, args).await,
        Command::Explain(args) => commands::validate::explain(g, args).await,
        Command::Schema { tests: true, .. } => {
            println!("{}", serde_json::to_string_pretty(&weir_spec::TestSuite::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { markdown: false, .. } => {
            println!("{}", serde_json::to_string_pretty(&commands::list::schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { markdown: true, .. } => {
            print!("{}", commands::list::reference());
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            print!("{}", commands::list::list());
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => commands::init::init(args),
        Command::Runs(args) => commands::inspect::runs(g, args),
        Command::State(cmd) => commands::inspect::state(g, cmd),
        Command::Dlq(cmd) => commands::inspect::dlq(g, cmd).await,
        Command::Serve(args) => commands::serve::serve(g, args).await,
        Command::Token(args) => commands::serve::token(args),
        Command::Test(args) => testing::test(args).await,
        Command::Docs(args) => site::docs(g, args),
        Command::Backfill(args) => commands::backfill::backfill(g, args).await,
        Command::Scheduler(args) => commands::cluster::run_scheduler(args).await,
        Command::Executor(args) => commands::cluster::run_executor(args).await,
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
