//! A throwaway database on the machine's PostgreSQL (127.0.0.1:5432, trust auth), dropped when the test ends.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const SERVER: &str = "postgres://postgres@127.0.0.1:5432";

pub struct TestDb {
    pub name: String,
    rt: Runtime,
    client: Client,
}

impl TestDb {
    /// Creates a database whose name no other test or run shares.
    pub fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!("weir_test_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let admin = rt.block_on(connect(&format!("{SERVER}/postgres")));
        rt.block_on(admin.batch_execute(&format!("CREATE DATABASE {name}"))).expect("create test database");
        let client = rt.block_on(connect(&format!("{SERVER}/{name}")));
        Self { name, rt, client }
    }

    pub fn url(&self) -> String {
        format!("{SERVER}/{}", self.name)
    }

    /// The same database as an ODBC connection string, through unixODBC's PostgreSQL driver.
    #[cfg(feature = "odbc")]
    pub fn odbc_url(&self) -> String {
        format!("Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port=5432;Database={};Uid=postgres;", self.name)
    }

    pub fn exec(&self, sql: &str) {
        self.rt.block_on(self.client.batch_execute(sql)).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Every row of `sql` as text, NULL as `NULL`, columns joined by `|`.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let messages = self.rt.block_on(self.client.simple_query(sql)).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()).collect::<Vec<_>>().join("|"))
                }
                _ => None,
            })
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.rt.block_on(connect(&format!("{SERVER}/postgres")));
        let _ = self.rt.block_on(admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)));
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("{url}: {e:?}"));
    tokio::spawn(connection);
    client
}
