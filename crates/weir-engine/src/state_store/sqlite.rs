//! The embedded store: one SQLite file (`.weir/state.db` beside the pipeline by default). No server is needed;
//! WAL mode lets `weir runs` read while a run writes.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, Transaction, types::ValueRef};

use super::db::{Arg, Dialect, Row, Sql, Val};
use super::{Result, StateError};

pub(crate) struct Sqlite(Mutex<Connection>);

impl Sqlite {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| StateError::Directory { path: dir.display().to_string(), source })?;
        }
        let conn =
            Connection::open(path).map_err(|source| StateError::Open { path: path.display().to_string(), source })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Self::prepared(conn)
    }

    pub(crate) fn in_memory() -> Result<Self> {
        Self::prepared(Connection::open_in_memory()?)
    }

    fn prepared(conn: Connection) -> Result<Self> {
        conn.execute_batch(&Dialect::Sqlite.schema())?;
        migrate(&conn)?;
        Ok(Self(Mutex::new(conn)))
    }

    pub(crate) fn transaction<R>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<R>) -> Result<R> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic), so poison is ignorable.
        let mut conn = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut tx = SqliteTx(conn.transaction()?);
        let out = f(&mut tx)?;
        tx.0.commit()?;
        Ok(out)
    }
}

/// Adds what later versions keep to a store an earlier version made.
fn migrate(conn: &Connection) -> Result<()> {
    let added = [
        ("runs", "pid", "INTEGER"),
        ("runs", "instance", "TEXT"),
        ("step_metrics", "retries", "INTEGER NOT NULL DEFAULT 0"),
        ("step_metrics", "position", "INTEGER NOT NULL DEFAULT 0"),
        ("step_metrics", "inserted", "INTEGER"),
        ("step_metrics", "updated", "INTEGER"),
        ("step_metrics", "deleted", "INTEGER"),
        ("step_metrics", "rows_skipped", "INTEGER NOT NULL DEFAULT 0"),
        ("step_metrics", "model_requests", "INTEGER"),
        ("step_metrics", "model_cached", "INTEGER"),
        ("step_metrics", "input_tokens", "INTEGER"),
        ("step_metrics", "output_tokens", "INTEGER"),
        ("step_metrics", "cost_micros", "INTEGER"),
    ];
    for (table, column, decl) in added {
        let present =
            conn.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"))?.exists([])?;
        if !present {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    Ok(())
}

struct SqliteTx<'c>(Transaction<'c>);

impl Sql for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..width)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(n) => Val::Int(n),
                        ValueRef::Real(f) => Val::Int(f as i64),
                        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    })
                })
                .collect::<Result<_>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }
}
