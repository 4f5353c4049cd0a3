//! The shared store: the same tables in schema `weir` of a PostgreSQL database, so several `weir serve`
//! instances (and `weir run`s) on several machines see one set of runs, state, schedules and dead letters.
//!
//! The synchronous `postgres` client must not be used, created or dropped inside the async runtime, and the store's
//! API is synchronous, like SQLite's. So one thread per store owns the connection and serves requests over a
//! channel; between requests it writes the instance's heartbeat, which tells other instances this one is alive.

use std::collections::HashMap;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, Statement};

use super::db::{Arg, Dialect, Row, Sql, Val};
use super::{Result, StateError, ago, hostname, now};

/// How often an instance writes its heartbeat. Another instance takes a run over once the heartbeat of the
/// instance running it is older than its lease, which is kept several times this.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

enum Op {
    Begin,
    Commit,
    Rollback,
    Execute(String, Vec<Arg>),
    Query(String, Vec<Arg>),
}

enum Reply {
    Count(u64),
    Rows(Vec<Row>),
}

struct Request {
    op: Op,
    reply: mpsc::Sender<Result<Reply>>,
}

pub(crate) struct Postgres {
    /// Held for a whole transaction, so one caller's statements are not interleaved with another's.
    requests: Mutex<mpsc::Sender<Request>>,
}

impl Postgres {
    /// Connects, creates the tables when missing and registers `instance`, whose heartbeat starts now.
    pub(crate) fn connect(url: &str, instance: &str) -> Result<Self> {
        let (requests, inbox) = mpsc::channel();
        let (ready, started) = mpsc::channel();
        let (url, instance) = (url.to_string(), instance.to_string());
        std::thread::Builder::new()
            .name("weir-state".into())
            .spawn(move || Worker::start(url, instance, ready, inbox))
            .map_err(|e| StateError::Postgres(format!("cannot start the state store's thread: {e}")))?;
        started.recv().map_err(|_| StateError::Gone)??;
        Ok(Self { requests: Mutex::new(requests) })
    }

    pub(crate) fn transaction<R>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<R>) -> Result<R> {
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = PgTx(&requests);
        tx.call(Op::Begin)?;
        match f(&mut tx) {
            Ok(out) => {
                tx.call(Op::Commit)?;
                Ok(out)
            }
            Err(e) => {
                let _ = tx.call(Op::Rollback);
                Err(e)
            }
        }
    }
}

struct PgTx<'a>(&'a mpsc::Sender<Request>);

impl PgTx<'_> {
    fn call(&mut self, op: Op) -> Result<Reply> {
        let (reply, answer) = mpsc::channel();
        self.0.send(Request { op, reply }).map_err(|_| StateError::Gone)?;
        answer.recv().map_err(|_| StateError::Gone)?
    }
}

impl Sql for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        match self.call(Op::Execute(sql.to_string(), args.to_vec()))? {
            Reply::Count(n) => Ok(n),
            Reply::Rows(rows) => Ok(rows.len() as u64),
        }
    }

    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        match self.call(Op::Query(sql.to_string(), args.to_vec()))? {
            Reply::Rows(rows) => Ok(rows),
            Reply::Count(_) => Ok(Vec::new()),
        }
    }
}

/// The thread that owns the connection.
struct Worker {
    url: String,
    instance: String,
    client: Client,
    in_transaction: bool,
    /// Statements prepared on this connection, by their SQL: the store runs the same few over and over.
    prepared: HashMap<String, Statement>,
}

impl Worker {
    fn start(url: String, instance: String, ready: mpsc::Sender<Result<()>>, inbox: mpsc::Receiver<Request>) {
        let client = match connect(&url).and_then(|mut c| prepare(&mut c, &instance).map(|()| c)) {
            Ok(client) => client,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut worker = Self { url, instance, client, in_transaction: false, prepared: HashMap::new() };
        let mut last_beat = Instant::now();
        loop {
            match inbox.recv_timeout(HEARTBEAT) {
                Ok(Request { op, reply }) => {
                    let _ = reply.send(worker.serve(op));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The store is closed: this instance is done, and any run it left running is abandoned.
                    let _ = worker.client.execute("DELETE FROM instances WHERE id = $1", &[&worker.instance]);
                    return;
                }
            }
            if !worker.in_transaction && last_beat.elapsed() >= HEARTBEAT {
                last_beat = Instant::now();
                if let Err(e) = worker.beat() {
                    tracing::warn!("cannot write this instance's heartbeat to the state store: {e}");
                }
            }
        }
    }

    fn serve(&mut self, op: Op) -> Result<Reply> {
        if !self.in_transaction && self.client.is_closed() {
            self.reconnect()?;
        }
        match op {
            Op::Begin => {
                self.client.batch_execute("BEGIN").map_err(pg)?;
                self.in_transaction = true;
                Ok(Reply::Count(0))
            }
            Op::Commit | Op::Rollback => {
                self.in_transaction = false;
                let sql = if matches!(op, Op::Commit) { "COMMIT" } else { "ROLLBACK" };
                self.client.batch_execute(sql).map_err(pg)?;
                Ok(Reply::Count(0))
            }
            Op::Execute(sql, args) => {
                let statement = self.statement(&sql)?;
                Ok(Reply::Count(self.client.execute(&statement, &bind(&args)).map_err(pg)?))
            }
            Op::Query(sql, args) => {
                let statement = self.statement(&sql)?;
                let rows = self.client.query(&statement, &bind(&args)).map_err(pg)?;
                Ok(Reply::Rows(rows.iter().map(row).collect::<Result<_>>()?))
            }
        }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&placeholders(sql)).map_err(pg)?;
        self.prepared.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn reconnect(&mut self) -> Result<()> {
        self.client = connect(&self.url)?;
        self.client.batch_execute("SET search_path TO weir").map_err(pg)?;
        self.prepared.clear();
        Ok(())
    }

    fn beat(&mut self) -> Result<()> {
        if self.client.is_closed() {
            self.reconnect()?;
        }
        self.client
            .execute("UPDATE instances SET heartbeat_at = $2 WHERE id = $1", &[&self.instance, &now()])
            .map_err(pg)?;
        Ok(())
    }
}

fn connect(url: &str) -> Result<Client> {
    let failed = |e: String| StateError::Postgres(format!("cannot connect to state store {}: {e}", redact(url)));
    let target = crate::postgres_tls::connect(url).map_err(failed)?;
    Client::connect(&target.url, target.tls).map_err(|e| failed(e.to_string()))
}

/// Columns later versions keep, for a store an earlier version made.
const ADDED_COLUMNS: &str = "ALTER TABLE step_metrics ADD COLUMN IF NOT EXISTS inserted BIGINT, \
    ADD COLUMN IF NOT EXISTS updated BIGINT, ADD COLUMN IF NOT EXISTS deleted BIGINT, \
    ADD COLUMN IF NOT EXISTS rows_skipped BIGINT NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS model_requests BIGINT, \
    ADD COLUMN IF NOT EXISTS model_cached BIGINT, ADD COLUMN IF NOT EXISTS input_tokens BIGINT, \
    ADD COLUMN IF NOT EXISTS output_tokens BIGINT, ADD COLUMN IF NOT EXISTS cost_micros BIGINT";

/// Creates the tables (one instance at a time: concurrent `CREATE … IF NOT EXISTS` can collide) and registers
/// this instance.
fn prepare(client: &mut Client, instance: &str) -> Result<()> {
    // `CREATE … IF NOT EXISTS` notices on every start are noise.
    client
        .batch_execute("SET client_min_messages TO warning; SELECT pg_advisory_lock(hashtext('weir state schema'))")
        .map_err(pg)?;
    let created = client.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS weir; SET search_path TO weir; {}; {ADDED_COLUMNS}",
        Dialect::Postgres.schema()
    ));
    client.batch_execute("SELECT pg_advisory_unlock(hashtext('weir state schema'))").map_err(pg)?;
    created.map_err(pg)?;
    let host = hostname();
    let at = now();
    let day_ago = ago(Duration::from_secs(24 * 3600));
    client
        .execute(
            "DELETE FROM instances WHERE heartbeat_at < $1
                 AND id NOT IN (SELECT instance FROM runs WHERE status = 'running' AND instance IS NOT NULL)",
            &[&day_ago],
        )
        .map_err(pg)?;
    client
        .execute(
            "INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)",
            &[&instance, &host, &i64::from(std::process::id()), &at],
        )
        .map_err(pg)?;
    Ok(())
}

fn pg(e: ::postgres::Error) -> StateError {
    StateError::Postgres(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    })
}

/// `?1` → `$1`: the store's statements are written in SQLite's placeholder style.
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

fn bind(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(Arg::as_postgres).collect()
}

fn row(r: &::postgres::Row) -> Result<Row> {
    let values = r
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let value = match *column.type_() {
                Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::Int)),
                Type::INT4 => r.try_get::<_, Option<i32>>(i).map(|v| v.map(|n| Val::Int(n.into()))),
                Type::BOOL => r.try_get::<_, Option<bool>>(i).map(|v| v.map(|b| Val::Int(b.into()))),
                _ => r.try_get::<_, Option<String>>(i).map(|v| v.map(Val::Text)),
            };
            value.map(|v| v.unwrap_or(Val::Null)).map_err(pg)
        })
        .collect::<Result<_>>()?;
    Ok(Row(values))
}

/// A connection URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            format!("{scheme}://{}:***@{host}", credentials.split(':').next().unwrap_or_default())
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_passwords() {
        assert_eq!(
            placeholders("a = ?1 AND (CAST(?2 AS TEXT) IS NULL OR b = ?2)"),
            "a = $1 AND (CAST($2 AS TEXT) IS NULL OR b = $2)"
        );
        assert_eq!(redact("postgres://weir:s3cret@db:5432/state"), "postgres://weir:***@db:5432/state");
        assert_eq!(redact("postgres://weir@127.0.0.1/state"), "postgres://weir@127.0.0.1/state");
    }
}
