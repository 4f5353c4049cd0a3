//! TLS for every PostgreSQL connection Weir makes (sources, sinks, dead-letter tables, the shared state store),
//! with libpq's `sslmode` and `sslrootcert` in the connection URL, so a URL that works with `psql` works here:
//!
//! | `sslmode` | encrypted | server certificate |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default, as libpq), `allow` | if the server offers it | not checked |
//! | `require` | yes | not checked; checked as `verify-ca` when `sslrootcert` is given (as libpq) |
//! | `verify-ca` | yes | signed by `sslrootcert` (or the system's roots) |
//! | `verify-full` | yes | as `verify-ca`, and issued for the host name |
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require`, and refuses other parameters, so the TLS
//! parameters are taken out of the URL here and become the rustls configuration.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A connection URL without its TLS parameters, and the TLS connector they asked for.
pub struct PostgresConnect {
    pub url: String,
    pub tls: MakeRustlsConnect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// Reads `sslmode` and `sslrootcert` from a `postgres://…?…` URL or a `key=value …` string.
pub fn connect(url: &str) -> Result<PostgresConnect, String> {
    let (rest, params) = split_params(url);
    let mut mode = "prefer".to_string();
    let mut root = None;
    let mut kept = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => mode = value,
            "sslrootcert" => root = Some(value),
            _ => kept.push((key, value)),
        }
    }
    let (wire, check) = match (mode.as_str(), &root) {
        ("disable", _) => ("disable", Check::Nothing),
        ("allow" | "prefer", _) => ("prefer", Check::Nothing),
        ("require", None) => ("require", Check::Nothing),
        ("require" | "verify-ca", _) => ("require", Check::Chain),
        ("verify-full", _) => ("require", Check::ChainAndName),
        (other, _) => {
            return Err(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    kept.push(("sslmode".into(), wire.into()));
    let tls = MakeRustlsConnect::new(client_config(check, root.as_deref())?);
    Ok(PostgresConnect { url: join_params(url, rest, &kept), tls })
}

/// The part before the parameters and the parameters, percent-decoded for URLs.
fn split_params(url: &str) -> (&str, Vec<(String, String)>) {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    if is_url(url) {
        return match url.split_once('?') {
            Some((base, query)) => {
                let params = query.split('&').filter(|p| !p.is_empty()).map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                });
                (base, params.collect())
            }
            None => (url, Vec::new()),
        };
    }
    let params = url.split_whitespace().map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k.to_string(), v.trim_matches('\'').to_string())
    });
    ("", params.collect())
}

fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn join_params(url: &str, base: &str, params: &[(String, String)]) -> String {
    const VALUE: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, VALUE).to_string();
    if is_url(url) {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
        return format!("{base}?{}", query.join("&"));
    }
    let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}='{}'", v.replace('\'', "\\'"))).collect();
    pairs.join(" ")
}

fn client_config(check: Check, root: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    if check == Check::Nothing {
        let verifier = Arc::new(Unchecked(provider));
        return Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
            for cert in certs {
                roots
                    .add(cert.map_err(|e| format!("sslrootcert {path}: {e}"))?)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::ChainAndName => webpki,
        _ => Arc::new(ChainOnly(webpki)),
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

/// `prefer` and `require` without a root certificate: encrypted, but any certificate is taken (libpq's behaviour;
/// the handshake's signatures are still verified).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the certificate must chain to a trusted root; the name in it is not compared with the host.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_key_value_strings() {
        let c = connect("postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=weir");
        assert!(c.is_err_and(|e| e.contains("/etc/ca.pem")), "the root file is read (and named when missing)");
        let c = connect("postgres://u@h/db?sslmode=require&connect_timeout=5").unwrap();
        assert_eq!(c.url, "postgres://u@h/db?connect_timeout=5&sslmode=require");
        let c = connect("postgres://u@h/db").unwrap();
        assert_eq!(c.url, "postgres://u@h/db?sslmode=prefer");
        let c = connect("host=h dbname=db sslmode=verify-ca").unwrap();
        assert_eq!(c.url, "host='h' dbname='db' sslmode='require'");
        assert!(connect("postgres://h/db?sslmode=strict").is_err_and(|e| e.contains("verify-full")));
    }
}
