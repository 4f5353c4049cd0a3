//! Dead letters in a table of a SQLite file.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use weir_engine::DlqResult;
use weir_engine::state_store::{Arg, DeadLetter};

use crate::db::dead_letter_table::{LetterSession, letter, mark_created, needs_create};

pub struct SqliteLetters(pub PathBuf);

impl LetterSession for SqliteLetters {
    const ID_COLUMN: &'static str = "INTEGER PRIMARY KEY AUTOINCREMENT";

    fn quote(name: &str) -> String {
        format!("\"{name}\"")
    }

    fn run(
        &self,
        _table: &str,
        create: &str,
        created: &AtomicBool,
        statements: &[(String, Vec<Arg>)],
    ) -> DlqResult<(Vec<DeadLetter>, u64)> {
        let mut db = rusqlite::Connection::open(&self.0)?;
        db.busy_timeout(std::time::Duration::from_secs(30))?;
        if needs_create(created) {
            db.execute_batch(create)?;
            mark_created(created);
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
                        Ok(letter(
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                        ))
                    })?
                    .collect::<Result<_, _>>()?;
            }
        }
        tx.commit()?;
        Ok((rows, affected))
    }
}
