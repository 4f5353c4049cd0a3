//! Dead letters in a PostgreSQL table.

use std::sync::atomic::AtomicBool;

use weir_engine::state_store::{Arg, DeadLetter};
use weir_engine::{DlqResult, Secret};

use crate::db::dead_letter_table::{LetterSession, letter, mark_created, needs_create};

pub struct PostgresLetters(pub Secret);

impl LetterSession for PostgresLetters {
    const ID_COLUMN: &'static str = "bigserial PRIMARY KEY";

    fn quote(name: &str) -> String {
        format!("\"{name}\"")
    }

    fn run(
        &self,
        table: &str,
        create: &str,
        created: &AtomicBool,
        statements: &[(String, Vec<Arg>)],
    ) -> DlqResult<(Vec<DeadLetter>, u64)> {
        let target = weir_engine::postgres_tls::connect(self.0.expose())?;
        let work = async move {
            let (mut client, connection) = tokio_postgres::connect(&target.url, target.tls).await?;
            tokio::spawn(connection);
            if needs_create(created) {
                // Looked up first: `IF NOT EXISTS` on an existing table earns a notice in the log.
                let exists: Option<String> = client.query_one("SELECT to_regclass($1)::text", &[&table]).await?.get(0);
                if exists.is_none() {
                    client.batch_execute(create).await?;
                }
                mark_created(created);
            }
            let tx = client.transaction().await?;
            let mut rows = Vec::new();
            let mut affected = 0;
            for (sql, params) in statements {
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    params.iter().map(Arg::as_postgres).collect();
                if sql.starts_with("SELECT") {
                    rows = tx
                        .query(sql.as_str(), &refs)
                        .await?
                        .iter()
                        .map(|r| {
                            letter(
                                r.get(0),
                                r.get(1),
                                r.get(2),
                                r.get(3),
                                r.get(4),
                                r.get(5),
                                r.get(6),
                                r.get(7),
                                r.get::<_, i32>(8) as i64,
                            )
                        })
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
}
