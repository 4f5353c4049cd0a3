//! `settings.dead_letters: { connection, table }`: dead letters in a table of a PostgreSQL, MySQL/MariaDB or SQLite
//! connection, created when missing. The statements are written once (`CAST`, `$n` parameters; for MySQL the
//! parameters become `?` and the casts its own); the engine calls these synchronously from inside a run, so
//! PostgreSQL and MySQL work runs on the runtime's blocking section.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::error::{DataFusionError, Result};
use weir_engine::state_store::{Arg, DeadLetter, DeadLetterFilter, NewDeadLetter};
use weir_engine::{DeadLetters, DlqResult, ResolvedConnection, Secret};

const COLUMNS: &str = "id, pipeline, run_id, step, record, error, origin, created_at, retry_count";

/// The store for `connection`'s `table`.
pub fn open(connection: ResolvedConnection, table: &str, base_dir: &Path) -> Result<Arc<dyn DeadLetters>> {
    if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(DataFusionError::Plan(format!("`{table}` is not a table name (letters, digits, `_`, `.`)")));
    }
    let quoted = table.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".");
    match connection.kind.as_str() {
        "postgres" => Ok(Arc::new(Table { at: Place::Postgres(connection.url), table: quoted, created: AtomicBool::new(false) })),
        "mysql" => {
            let quoted = table.split('.').map(|p| format!("`{p}`")).collect::<Vec<_>>().join(".");
            Ok(Arc::new(Table { at: Place::Mysql(connection.url), table: quoted, created: AtomicBool::new(false) }))
        }
        "sqlite" => {
            let path = super::files::database_file(connection.url.expose(), "sqlite", base_dir);
            Ok(Arc::new(Table { at: Place::Sqlite(path), table: quoted, created: AtomicBool::new(false) }))
        }
        other => Err(DataFusionError::Plan(format!(
            "connection `{}` is {other}; dead letters go to a PostgreSQL, MySQL or SQLite table, or to NDJSON files (`path`)",
            connection.name
        ))),
    }
}

enum Place {
    Postgres(Secret),
    Mysql(Secret),
    Sqlite(PathBuf),
}

struct Table {
    at: Place,
    table: String,
    /// Set once the table is known to exist, so later operations skip the check.
    created: AtomicBool,
}

impl Table {
    fn create(&self) -> String {
        let id = match self.at {
            Place::Postgres(_) => "bigserial PRIMARY KEY",
            Place::Mysql(_) => "BIGINT AUTO_INCREMENT PRIMARY KEY",
            Place::Sqlite(_) => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} (id {id}, pipeline TEXT NOT NULL, run_id TEXT NOT NULL, step TEXT NOT NULL, \
             record TEXT NOT NULL, error TEXT NOT NULL, origin TEXT, created_at TEXT NOT NULL, retry_count INTEGER NOT NULL DEFAULT 0)",
            self.table
        )
    }

    /// Runs statements in order, in one transaction, after making sure the table exists; returns the rows of the
    /// last query and the rows the others affected.
    fn run(&self, statements: &[(String, Vec<Arg>)]) -> DlqResult<(Vec<DeadLetter>, u64)> {
        match &self.at {
            Place::Sqlite(path) => {
                let mut db = rusqlite::Connection::open(path)?;
                db.busy_timeout(std::time::Duration::from_secs(30))?;
                if !self.created.load(Ordering::Relaxed) {
                    db.execute_batch(&self.create())?;
                    self.created.store(true, Ordering::Relaxed);
                }
                let tx = db.transaction()?;
                let mut rows = Vec::new();
                let mut affected = 0;
                for (sql, params) in statements {
                    let mut stmt = tx.prepare(sql)?;
                    if stmt.column_count() == 0 {
                        affected += stmt.execute(rusqlite::params_from_iter(params))? as u64;
                    } else {
                        rows = stmt
                            .query_map(rusqlite::params_from_iter(params), |r| {
                                Ok(letter(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
                            })?
                            .collect::<Result<_, _>>()?;
                    }
                }
                tx.commit()?;
                Ok((rows, affected))
            }
            Place::Postgres(url) => {
                let target = weir_engine::postgres_tls::connect(url.expose())?;
                let work = async move {
                    let (mut client, connection) = tokio_postgres::connect(&target.url, target.tls).await?;
                    tokio::spawn(connection);
                    if !self.created.load(Ordering::Relaxed) {
                        // Looked up first: `IF NOT EXISTS` on an existing table earns a notice in the log.
                        let exists: Option<String> = client.query_one("SELECT to_regclass($1)::text", &[&self.table]).await?.get(0);
                        if exists.is_none() {
                            client.batch_execute(&self.create()).await?;
                        }
                        self.created.store(true, Ordering::Relaxed);
                    }
                    let tx = client.transaction().await?;
                    let mut rows = Vec::new();
                    let mut affected = 0;
                    for (sql, params) in statements {
                        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(Arg::as_postgres).collect();
                        if sql.starts_with("SELECT") {
                            rows = tx
                                .query(sql.as_str(), &refs)
                                .await?
                                .iter()
                                .map(|r| letter(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get::<_, i32>(8) as i64))
                                .collect();
                        } else {
                            affected += tx.execute(sql.as_str(), &refs).await?;
                        }
                    }
                    tx.commit().await?;
                    Ok::<_, tokio_postgres::Error>((rows, affected))
                };
                let handle = tokio::runtime::Handle::current();
                Ok(tokio::task::block_in_place(|| handle.block_on(work))?)
            }
            Place::Mysql(url) => {
                let handle = tokio::runtime::Handle::current();
                tokio::task::block_in_place(|| handle.block_on(self.run_mysql(url, statements)))
            }
        }
    }

    async fn run_mysql(&self, url: &Secret, statements: &[(String, Vec<Arg>)]) -> DlqResult<(Vec<DeadLetter>, u64)> {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(crate::mysql::opts(url.expose())?).await?;
        if !self.created.load(Ordering::Relaxed) {
            conn.query_drop(self.create()).await?;
            self.created.store(true, Ordering::Relaxed);
        }
        let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
        let mut rows = Vec::new();
        let mut affected = 0;
        for (sql, params) in statements {
            let (sql, order) = mysql_statement(sql);
            let values: Vec<mysql_async::Value> = order
                .iter()
                .map(|i| match &params[*i] {
                    Arg::Text(t) => t.clone().map_or(mysql_async::Value::NULL, |t| mysql_async::Value::Bytes(t.into_bytes())),
                    Arg::Int(n) => n.map_or(mysql_async::Value::NULL, mysql_async::Value::Int),
                })
                .collect();
            if sql.starts_with("SELECT") {
                type Columns = (i64, String, String, String, String, String, Option<String>, String, i64);
                let found: Vec<Columns> = tx.exec(sql, values).await?;
                rows = found.into_iter().map(|(a, b, c, d, e, f, g, h, i)| letter(a, b, c, d, e, f, g, h, i)).collect();
            } else {
                tx.exec_drop(sql, values).await?;
                affected += tx.affected_rows();
            }
        }
        tx.commit().await?;
        conn.disconnect().await?;
        Ok((rows, affected))
    }
}

/// A statement in MySQL's terms: `$n` parameters become `?` (returned: which parameter each one is, as a `$n` may
/// repeat), and casts name MySQL's types.
fn mysql_statement(sql: &str) -> (String, Vec<usize>) {
    let sql = sql.replace(" AS TEXT)", " AS CHAR)").replace(" AS BIGINT)", " AS SIGNED)");
    let mut out = String::with_capacity(sql.len());
    let mut order = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            out.push('?');
            order.push(n - 1);
        } else {
            out.push(c);
        }
    }
    (out, order)
}


#[allow(clippy::too_many_arguments)]
fn letter(
    id: i64,
    pipeline: String,
    run_id: String,
    step: String,
    record: String,
    error: String,
    origin: Option<String>,
    created_at: String,
    retry_count: i64,
) -> DeadLetter {
    let record = serde_json::from_str(&record).unwrap_or(serde_json::Value::String(record));
    DeadLetter { id, pipeline, run_id, step, record, error, origin, created_at, retry_count }
}

impl DeadLetters for Table {
    fn add(&self, pipeline: &str, run_id: &str, letters: &[NewDeadLetter]) -> DlqResult<()> {
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let sql = format!("INSERT INTO {} (pipeline, run_id, step, record, error, origin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)", self.table);
        let statements: Vec<(String, Vec<Arg>)> = letters
            .iter()
            .map(|l| {
                let params = vec![
                    Arg::from(pipeline),
                    Arg::from(run_id),
                    Arg::from(&l.step),
                    Arg::from(l.record.to_string()),
                    Arg::from(&l.error),
                    Arg::from(l.origin.as_ref()),
                    Arg::from(&created),
                ];
                (sql.clone(), params)
            })
            .collect();
        self.run(&statements).map(drop)
    }

    fn matching(&self, pipeline: &str, filter: &DeadLetterFilter) -> DlqResult<Vec<DeadLetter>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE pipeline = $1 AND (CAST($2 AS TEXT) IS NULL OR run_id = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR step = $3) AND (CAST($4 AS BIGINT) IS NULL OR id = $4) ORDER BY id",
            self.table
        );
        let params = vec![
            Arg::from(pipeline),
            Arg::from(filter.run_id.as_ref()),
            Arg::from(filter.step.as_ref()),
            Arg::from(filter.id),
        ];
        Ok(self.run(&[(sql, params)])?.0)
    }

    fn remove(&self, pipeline: &str, ids: &[i64]) -> DlqResult<usize> {
        let sql = format!("DELETE FROM {} WHERE pipeline = $1 AND id = $2", self.table);
        let statements: Vec<_> = ids.iter().map(|id| (sql.clone(), vec![Arg::from(pipeline), Arg::from(*id)])).collect();
        Ok(self.run(&statements)?.1 as usize)
    }

    fn retried(&self, pipeline: &str, id: i64, error: Option<&str>) -> DlqResult<()> {
        let sql = format!(
            "UPDATE {} SET retry_count = retry_count + 1, error = coalesce(CAST($3 AS TEXT), error) WHERE pipeline = $1 AND id = $2",
            self.table
        );
        let params = vec![Arg::from(pipeline), Arg::from(id), Arg::from(error)];
        self.run(&[(sql, params)]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mysql_statements_repeat_their_parameters() {
        let (sql, order) = super::mysql_statement("SELECT 1 WHERE a = $1 AND (CAST($2 AS TEXT) IS NULL OR b = $2) AND (CAST($3 AS BIGINT) IS NULL)");
        assert_eq!(sql, "SELECT 1 WHERE a = ? AND (CAST(? AS CHAR) IS NULL OR b = ?) AND (CAST(? AS SIGNED) IS NULL)");
        assert_eq!(order, [0, 1, 1, 2]);
    }
}
