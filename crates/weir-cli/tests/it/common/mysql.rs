//! A throwaway database on the machine's MariaDB (127.0.0.1:3306, root, no password), dropped when the test ends.

use std::sync::atomic::{AtomicUsize, Ordering};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use tokio::runtime::Runtime;

const SERVER: &str = "mysql://root@127.0.0.1:3306";

pub struct TestMyDb {
    pub name: String,
    rt: Runtime,
    conn: std::cell::RefCell<Option<Conn>>,
}

impl TestMyDb {
    /// Creates a UTF-8 database whose name no other test or run shares.
    pub fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!("weir_test_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let conn = rt.block_on(async {
            let mut admin = Conn::from_url(SERVER).await.expect("MariaDB on 127.0.0.1:3306");
            admin
                .query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"))
                .await
                .expect("create test database");
            admin.disconnect().await.unwrap();
            let mut conn = Conn::from_url(format!("{SERVER}/{name}")).await.unwrap();
            conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
            conn
        });
        Self { name, rt, conn: std::cell::RefCell::new(Some(conn)) }
    }

    pub fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }

    /// Runs statements separated by `;` at line ends.
    pub fn exec(&self, sql: &str) {
        let mut guard = self.conn.borrow_mut();
        let conn = guard.as_mut().unwrap();
        for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            self.rt.block_on(conn.query_drop(statement)).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    /// Every row of `sql` as text, NULL as `NULL`, columns joined by `|`.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let mut guard = self.conn.borrow_mut();
        let conn = guard.as_mut().unwrap();
        let rows: Vec<Row> = self.rt.block_on(conn.query(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.as_ref(i).unwrap() {
                        Value::NULL => "NULL".to_string(),
                        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        other => other.as_sql(true),
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }
}

impl Drop for TestMyDb {
    fn drop(&mut self) {
        let conn = self.conn.borrow_mut().take();
        let name = self.name.clone();
        self.rt.block_on(async move {
            if let Some(c) = conn {
                let _ = c.disconnect().await;
            }
            if let Ok(mut admin) = Conn::from_url(SERVER).await {
                let _ = admin.query_drop(format!("DROP DATABASE IF EXISTS {name}")).await;
                let _ = admin.disconnect().await;
            }
        });
    }
}
