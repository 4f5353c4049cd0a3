//! File steps on SFTP against a real OpenSSH server (Debian's `openssh-server`, which `scripts/test.sh` installs),
//! started by each test on a free port of 127.0.0.1 with its own host key, and stopped by PID.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Project;

/// `sshd` serving SFTP for the current user with a key made for the test; killed when dropped.
struct Sshd {
    process: Child,
    port: u16,
    /// The server's files and the test's keys.
    dir: tempfile::TempDir,
    user: String,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (scripts/test.sh installs openssh-server)");
    assert!(status.success());
}

impl Sshd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all(d.join("files")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let process = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd runs (scripts/test.sh installs openssh-server)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "sshd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let user =
            String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
        Self { process, port, dir, user }
    }

    /// A known_hosts file that vouches for this server's key.
    fn known_hosts(&self) -> PathBuf {
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let path = self.dir.path().join("known_hosts");
        std::fs::write(&path, format!("[127.0.0.1]:{} {key}", self.port)).unwrap();
        path
    }

    /// Where the server keeps the files the tests write, as a local path and as an `sftp://` URL.
    fn root(&self) -> (PathBuf, String) {
        let root = self.dir.path().join("files");
        let url = format!("sftp://{}@127.0.0.1:{}{}", self.user, self.port, root.display());
        (root, url)
    }

    /// A connection named `box` that logs in with the test's key.
    fn connection(&self, known_hosts: &Path) -> String {
        format!(
            "connections:\n  box: {{ kind: sftp, options: {{ private_key_path: \"{}\", known_hosts: \"{}\" }} }}\n",
            self.dir.path().join("client_key").display(),
            known_hosts.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Every file under `dir`, relative, sorted: what the server holds.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => stack.push(path),
                false => found.push(path.strip_prefix(dir).unwrap().display().to_string()),
            }
        }
    }
    found.sort();
    found
}

#[test]
fn files_are_written_to_and_read_from_sftp_with_partitions_and_globs() {
    let sshd = Sshd::start();
    let (root, url) = sshd.root();
    let conn = sshd.connection(&sshd.known_hosts());
    let p = Project::new();
    p.file("data/orders.csv", "id,region,amount\n1,eu,10\n2,us,20\n3,eu,30\n");
    p.file(
        "up.yaml",
        &format!(
            "name: up\n{conn}steps:\n  orders:\n    read_csv: {{ path: data/orders.csv }}\n  \
             by_region:\n    write_csv: {{ input: orders, path: \"{url}/lake/orders/\", connection: box, partition_by: [region] }}\n  \
             whole:\n    write_parquet: {{ input: orders, path: \"{url}/lake/orders.parquet\", connection: box }}\n"
        ),
    );
    p.ok(&["run", "up.yaml"]);
    let written = files(&root);
    assert!(written.contains(&"lake/orders.parquet".to_string()), "{written:?}");
    assert!(written.iter().any(|f| f.starts_with("lake/orders/region=eu/")), "{written:?}");
    assert!(!written.iter().any(|f| f.contains(".tmp")), "no temporary file is left behind: {written:?}");

    p.file(
        "down.yaml",
        &format!(
            "name: down\n{conn}steps:\n  parts:\n    read_csv: {{ path: \"{url}/lake/orders/\", connection: box, hive_partitioning: true }}\n  \
             whole:\n    read_parquet: {{ path: \"{url}/lake/orders.parquet\", connection: box }}\n  \
             both:\n    sql: {{ query: \"SELECT p.id, p.region, w.amount FROM parts p JOIN whole w ON w.id = p.id ORDER BY p.id\" }}\n  \
             out:\n    write_csv: {{ input: both, path: out/both.csv }}\n"
        ),
    );
    p.ok(&["run", "down.yaml"]);
    assert_eq!(p.read("out/both.csv"), "id,region,amount\n1,eu,10\n2,us,20\n3,eu,30\n");

    // Overwriting replaces the file in place.
    p.file("data/orders.csv", "id,region,amount\n4,eu,40\n");
    p.ok(&["run", "up.yaml"]);
    p.ok(&["run", "down.yaml"]);
    assert_eq!(p.read("out/both.csv"), "id,region,amount\n4,eu,40\n");
}

#[test]
fn large_files_copy_both_ways_whole_and_new_files_are_picked_up() {
    let sshd = Sshd::start();
    let (root, url) = sshd.root();
    let conn = sshd.connection(&sshd.known_hosts());
    let p = Project::new();
    // 20 MB: above the 8 MiB part size, so the upload goes in parts and the download in many pipelined reads.
    let mut big = String::from("id,payload\n");
    let mut n = 0;
    while big.len() < 20_000_000 {
        big.push_str(&format!("{n},{}\n", "x".repeat(90)));
        n += 1;
    }
    p.file("staging/big.csv", &big).file("staging/small/a.csv", "id,payload\n1,a\n");
    p.file(
        "push.yaml",
        &format!(
            "name: push\n{conn}steps:\n  staged:\n    list_files: {{ path: \"staging/**/*.csv\" }}\n  \
             upload:\n    copy_files: {{ input: staged, to: \"{url}/inbox/\", connection: box }}\n"
        ),
    );
    p.ok(&["run", "push.yaml"]);
    assert_eq!(files(&root), ["inbox/big.csv", "inbox/small/a.csv"]);
    assert!(
        std::fs::read(root.join("inbox/big.csv")).unwrap() == big.as_bytes(),
        "the large file arrives byte for byte"
    );

    p.file(
        "pull.yaml",
        &format!(
            "name: pull\nstate:\n  last_pickup: {{ type: timestamp, default: \"1970-01-01T00:00:00Z\", update: {{ max: new_files.last_modified }} }}\n\
             {conn}steps:\n  new_files:\n    list_files: {{ path: \"{url}/inbox/\", connection: box, since: \"{{{{ state.last_pickup }}}}\" }}\n  \
             download:\n    copy_files: {{ input: new_files, from_connection: box, to: landing/ }}\n"
        ),
    );
    let log = p.ok_log(&["run", "pull.yaml"]);
    assert!(log.contains("Listed 2 files"), "{log}");
    assert!(p.read("landing/big.csv") == big, "the large file comes back byte for byte");

    // SFTP keeps whole seconds: a file written a second later is newer than the cursor. Files at the cursor's own
    // second are listed again (the cursor is inclusive, so one written later in that second is not missed).
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(root.join("inbox/c.csv"), "id,payload\n3,c\n").unwrap();
    p.ok(&["run", "pull.yaml"]);
    assert_eq!(p.read("landing/c.csv"), "id,payload\n3,c\n");
    let log = p.ok_log(&["run", "pull.yaml"]);
    assert!(log.contains("Listed 1 files"), "older files are not picked up again: {log}");

    p.file(
        "count.yaml",
        &format!(
            "name: count\n{conn}steps:\n  rows:\n    read_csv: {{ path: \"{url}/inbox/big.csv\", connection: box }}\n  \
             n:\n    sql: {{ query: \"SELECT count(*) AS n, max(id) AS last FROM rows\" }}\n  out:\n    write_csv: {{ input: n, path: out/n.csv }}\n"
        ),
    );
    p.ok(&["run", "count.yaml"]);
    assert_eq!(p.read("out/n.csv"), format!("n,last\n{n},{}\n", n - 1));
}

#[test]
fn an_unknown_host_key_or_a_wrong_login_is_refused_with_the_reason() {
    let sshd = Sshd::start();
    let (root, url) = sshd.root();
    let empty = sshd.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let p = Project::new();
    p.file("data/x.csv", "id\n1\n");
    let pipeline = |conn: &str| {
        format!(
            "name: guarded\n{conn}steps:\n  x:\n    read_csv: {{ path: data/x.csv }}\n  out:\n    write_csv: {{ input: x, path: \"{url}/x.csv\", connection: box }}\n"
        )
    };
    p.file("p.yaml", &pipeline(&sshd.connection(&empty)));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(
        err.contains("host key") && err.contains("SHA256:") && err.contains("ssh-keyscan"),
        "names the unknown key and the fix:\n{err}"
    );

    let fingerprint = String::from_utf8(
        Command::new("ssh-keygen").arg("-lf").arg(sshd.dir.path().join("host_key.pub")).output().unwrap().stdout,
    )
    .unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    let pinned = format!(
        "connections:\n  box: {{ kind: sftp, options: {{ private_key_path: \"{}\", host_key_fingerprint: \"{fingerprint}\" }} }}\n",
        sshd.dir.path().join("client_key").display()
    );
    p.file("p.yaml", &pipeline(&pinned));
    p.ok(&["run", "p.yaml"]);
    assert_eq!(std::fs::read_to_string(root.join("x.csv")).unwrap(), "id\n1\n");

    // A key the server does not know.
    keygen(&sshd.dir.path().join("stranger"));
    let stranger = pinned.replace("client_key", "stranger");
    p.file("p.yaml", &pipeline(&stranger));
    let err = p.fails(&["run", "p.yaml"], 2);
    assert!(err.contains(&format!("refused user `{}`", sshd.user)), "{err}");
}
