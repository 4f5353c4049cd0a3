//! A `weir` process in the background, for tests that watch its log and stop it mid-run.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Project;

/// A `weir` started in the background, its log read line by line.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    log: String,
}

impl Running {
    pub fn start(p: &Project, env: &[(&str, String)], args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .current_dir(p.path())
            .env_remove("WEIR_STATE_DIR")
            .env("WEIR_LOG_FORMAT", "human")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("weir starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, log: String::new() }
    }

    /// Waits for a log line containing `text`.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.log.push_str(&line);
                    self.log.push('\n');
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!("no log line with `{text}`:\n{}", self.log);
    }

    /// What the process has logged so far, without waiting.
    pub fn log_so_far(&mut self) -> &str {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        &self.log
    }

    /// Waits for the process to end; its exit code and whole log.
    pub fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        self.log.extend(self.lines.iter().map(|l| l + "\n"));
        (status.code(), self.log)
    }
}
