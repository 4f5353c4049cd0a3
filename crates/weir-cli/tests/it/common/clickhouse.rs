//! A ClickHouse server of the test's own (Debian's `clickhouse-server`, which `scripts/test.sh` installs), on free
//! ports of 127.0.0.1 with its data in a temp dir, stopped by PID when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestClickHouse {
    process: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The user Weir connects as, with a password (so the tests see that it is never printed).
pub const USER: &str = "weir";
pub const PASSWORD: &str = "ch-s3cret-pw";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestClickHouse {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let (port, tcp_port) = (free_port(), free_port());
        let user = |name: &str, password: &str| {
            format!(
                "<{name}><password>{password}</password><networks><ip>127.0.0.1</ip></networks>\
                 <profile>default</profile><quota>default</quota></{name}>"
            )
        };
        let config = format!(
            "<?xml version=\"1.0\"?><yandex><logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>\
             <listen_host>127.0.0.1</listen_host><http_port>{port}</http_port><tcp_port>{tcp_port}</tcp_port>\
             <path>{d}/data/</path><tmp_path>{d}/tmp/</tmp_path><mark_cache_size>5368709</mark_cache_size>\
             <users>{}{}</users><profiles><default></default></profiles><quotas><default></default></quotas></yandex>",
            user("default", ""),
            user(USER, PASSWORD)
        );
        std::fs::write(dir.path().join("config.xml"), config).unwrap();
        let process = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={d}/config.xml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server runs (scripts/test.sh installs it)");
        let server = Self { process, port, dir };
        let started = Instant::now();
        while server.try_query("SELECT 1").is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "clickhouse-server did not start: {}", server.log());
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// The URL of database `db` as user `weir`.
    pub fn url(&self, db: &str) -> String {
        format!("clickhouse://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs statements separated by `;` at line ends as the default user.
    pub fn exec(&self, sql: &str) {
        for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            self.try_query(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }

    /// The result of `sql` in TabSeparated, one string per row.
    pub fn rows(&self, sql: &str) -> Vec<String> {
        let out = self.try_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        out.lines().map(str::to_string).collect()
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", "--data-binary", "@-"])
            .arg(format!("http://127.0.0.1:{}/", self.port))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(sql.as_bytes())?;
                child.wait_with_output()
            })
            .map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for TestClickHouse {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
