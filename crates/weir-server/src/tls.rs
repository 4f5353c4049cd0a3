//! TLS for `weir serve`'s listeners: a certificate chain and key in PEM files, swapped in place, without a
//! restart, when either file changes (as a certificate renewer rewrites them).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};
use weir_engine::CancellationToken;

/// Where the certificate chain and its private key are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How often the files are looked at for changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

impl TlsFiles {
    /// The listeners' configuration from the files as they are now.
    pub fn load(&self) -> anyhow::Result<RustlsConfig> {
        Ok(RustlsConfig::from_config(self.server_config()?))
    }

    fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let read = |path: &Path| format!("cannot read {}", path.display());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect())
            .map_err(|e| anyhow::anyhow!("{}: {e}", read(&self.cert)))?;
        anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", self.cert.display());
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| anyhow::anyhow!("{}: {e}", read(&self.key)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                anyhow::anyhow!("{} and {} do not go together: {e}", self.cert.display(), self.key.display())
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((time(&self.cert)?, time(&self.key)?))
    }

    /// Reloads `config` whenever the files change, until `shutdown`. A change that does not load (a key written
    /// before its certificate, say) is logged and the certificate in use stays until the next change loads.
    pub async fn watch(self, config: RustlsConfig, shutdown: CancellationToken) {
        let mut seen = self.modified();
        loop {
            tokio::select! {
                () = tokio::time::sleep(WATCH_EVERY) => {}
                () = shutdown.cancelled() => return,
            }
            let now = self.modified();
            if now == seen {
                continue;
            }
            seen = now;
            match self.server_config() {
                Ok(fresh) => {
                    config.reload_from_config(fresh);
                    info!("Reloaded the TLS certificate from {}", self.cert.display());
                }
                Err(e) => warn!("Keeping the TLS certificate in use: {e:#}"),
            }
        }
    }
}
