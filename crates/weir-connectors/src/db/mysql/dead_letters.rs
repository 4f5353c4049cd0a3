//! Dead letters in a MySQL or MariaDB table: the shared statements with `?` parameters and MySQL's casts.

use std::sync::atomic::AtomicBool;

use mysql_async::prelude::Queryable;
use weir_engine::state_store::{Arg, DeadLetter};
use weir_engine::{DlqResult, Secret};

use crate::db::dead_letter_table::{LetterSession, letter, mark_created, needs_create};

pub struct MysqlLetters(pub Secret);

impl LetterSession for MysqlLetters {
    const ID_COLUMN: &'static str = "BIGINT AUTO_INCREMENT PRIMARY KEY";

    fn quote(name: &str) -> String {
        format!("`{name}`")
    }

    fn run(
        &self,
        _table: &str,
        create: &str,
        created: &AtomicBool,
        statements: &[(String, Vec<Arg>)],
    ) -> DlqResult<(Vec<DeadLetter>, u64)> {
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(self.run_async(create, created, statements)))
    }
}

impl MysqlLetters {
    async fn run_async(
        &self,
        create: &str,
        created: &AtomicBool,
        statements: &[(String, Vec<Arg>)],
    ) -> DlqResult<(Vec<DeadLetter>, u64)> {
        let mut conn = mysql_async::Conn::new(super::opts(self.0.expose())?).await?;
        if needs_create(created) {
            conn.query_drop(create).await?;
            mark_created(created);
        }
        let mut tx = conn.start_transaction(mysql_async::TxOpts::default()).await?;
        let mut rows = Vec::new();
        let mut affected = 0;
        for (sql, params) in statements {
            let (sql, order) = mysql_statement(sql);
            let values: Vec<mysql_async::Value> = order
                .iter()
                .map(|i| match &params[*i] {
                    Arg::Text(t) => {
                        t.clone().map_or(mysql_async::Value::NULL, |t| mysql_async::Value::Bytes(t.into_bytes()))
                    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn mysql_statements_repeat_their_parameters() {
        let (sql, order) = super::mysql_statement(
            "SELECT 1 WHERE a = $1 AND (CAST($2 AS TEXT) IS NULL OR b = $2) AND (CAST($3 AS BIGINT) IS NULL)",
        );
        assert_eq!(sql, "SELECT 1 WHERE a = ? AND (CAST(? AS CHAR) IS NULL OR b = ?) AND (CAST(? AS SIGNED) IS NULL)");
        assert_eq!(order, [0, 1, 1, 2]);
    }
}
