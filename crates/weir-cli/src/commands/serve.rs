//! `weir serve`: run a directory of pipelines on their triggers, with the HTTP API and `/metrics`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use weir_engine::CancellationToken;
use weir_server::{Role, TlsFiles, Tokens};

use crate::Global;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The directory of pipeline files (`*.yaml`).
    #[arg(default_value = ".")]
    pub project: PathBuf,
    /// Address of the HTTP API, the dashboard, `/metrics`, and the webhooks unless `--hooks-listen` is given. An
    /// address other than loopback needs API tokens (or `--insecure-no-auth`).
    #[arg(long, default_value = "127.0.0.1:8080", env = "WEIR_LISTEN")]
    pub listen: SocketAddr,
    /// Serve the webhooks (`POST /hooks/NAME`) on their own address, e.g. `0.0.0.0:8443`, so senders on the
    /// network reach them while the API stays on loopback. Hooks keep their own token or HMAC.
    #[arg(long, env = "WEIR_HOOKS_LISTEN")]
    pub hooks_listen: Option<SocketAddr>,
    /// A file of API tokens, as `weir token` prints them: `- { name: ci, role: operate, sha256: … }`. Tokens can
    /// also come from the environment: WEIR_API_TOKENS=name:role:secret,… (roles: metrics, read, operate, admin).
    #[arg(long, env = "WEIR_TOKENS_FILE")]
    pub tokens: Option<PathBuf>,
    /// `/metrics` answers without a token (for a scraper on a trusted network).
    #[arg(long)]
    pub open_metrics: bool,
    /// Serve the API on an address other than loopback without tokens: anyone who reaches it may do anything.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// A PEM certificate chain: serve both listeners over HTTPS. Reloaded when the file changes.
    #[arg(long, env = "WEIR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "WEIR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Runs at once across all pipelines; each pipeline also has its own limit (`settings.concurrency`, default 1).
    #[arg(long, default_value_t = 4)]
    pub max_runs: usize,
    /// How often pipeline files are checked for changes, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub reload_secs: f64,
    /// With a shared store (`--state postgres://…`): seconds an instance may miss its heartbeat (written every
    /// second) before another instance takes its runs over and resumes them from their last checkpoint.
    #[arg(long, default_value_t = 15.0)]
    pub lease_secs: f64,
}

pub async fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let from_env = match std::env::var("WEIR_API_TOKENS") {
        Ok(list) => Tokens::from_list(&list)?,
        Err(_) => Tokens::default(),
    };
    let tokens = match &args.tokens {
        Some(file) => from_env.merge(Tokens::from_file(file)?)?,
        None => from_env,
    };
    let state_dir = global.state_dir.clone().unwrap_or_else(|| args.project.join(".weir"));
    let config = weir_server::Config {
        state: global.state_location(&state_dir),
        state_dir,
        lease: Duration::from_secs_f64(args.lease_secs.max(3.0)),
        project: args.project,
        listen: args.listen,
        hooks_listen: args.hooks_listen,
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles { cert, key }),
        tokens,
        insecure_no_auth: args.insecure_no_auth,
        open_metrics: args.open_metrics,
        max_runs: args.max_runs.max(1),
        reload_every: Duration::from_secs_f64(args.reload_secs.max(0.1)),
        run_logs: global.run_logs.clone(),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        crate::commands::run::stop_signal().await;
        eprintln!("stopping: running runs roll back their open batch");
        stop.cancel();
    });
    weir_server::serve(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The token's name: what the logs and the audit log show for its calls.
    pub name: String,
    /// What it may do: metrics (scrape `/metrics`), read (see pipelines, runs, logs), operate (also start, cancel
    /// and replay), admin (also purge dead letters, set state, read the audit log).
    #[arg(long, default_value = "read", value_parser = parse_role)]
    pub role: Role,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse().map_err(|e: weir_server::TokenError| e.to_string())
}

/// `weir token NAME --role ROLE`: a new random token, and the line of the tokens file that accepts it. The
/// secret is printed once; the file keeps only its hash.
pub fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let secret = weir_server::generate_token();
    eprintln!("Token `{}` (role {}); it is shown once, keep it secret:", args.name, args.role);
    println!("{secret}");
    eprintln!("Add this line to the tokens file (weir serve --tokens FILE):");
    eprintln!("{}", weir_server::token_file_entry(&args.name, args.role, &secret));
    Ok(ExitCode::SUCCESS)
}
