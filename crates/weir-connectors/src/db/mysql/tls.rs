//! TLS for MySQL/MariaDB connections, with the MySQL client's own option names in the URL, so a URL reads as a
//! `mysql --ssl-mode=… --ssl-ca=…` command line would:
//!
//! | `ssl-mode` | encrypted | server certificate |
//! |---|---|---|
//! | `DISABLED` (default) | no | — |
//! | `REQUIRED` | yes | not checked |
//! | `VERIFY_CA` | yes | signed by `ssl-ca` (or the public web roots) |
//! | `VERIFY_IDENTITY` | yes | as `VERIFY_CA`, and issued for the host |
//!
//! The MySQL client's own default, `PREFERRED` (TLS when the server offers it), has no counterpart in
//! `mysql_async`, which either requires TLS or does not use it. Its own `require_ssl`, `verify_ca` and
//! `verify_identity` parameters work too.

use mysql_async::{Opts, OptsBuilder, SslOpts};

/// The options of a `mysql://` URL, with `ssl-mode` and `ssl-ca` applied.
pub fn opts(url: &str) -> Result<Opts, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut ca) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned();
        match key.replace('_', "-").as_str() {
            "ssl-mode" => mode = Some(value.to_ascii_uppercase()),
            "ssl-ca" => ca = Some(value),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    // The URL parser's messages never contain the URL, which may hold a password.
    let opts = Opts::from_url(&url).map_err(|e| e.to_string())?;
    let ssl = match mode.as_deref() {
        None if ca.is_none() => return Ok(opts),
        None | Some("VERIFY_CA") => SslOpts::default().with_danger_skip_domain_validation(true),
        Some("DISABLED") => return Ok(Opts::from(OptsBuilder::from_opts(opts).ssl_opts(None))),
        Some("REQUIRED") => {
            SslOpts::default().with_danger_accept_invalid_certs(true).with_danger_skip_domain_validation(true)
        }
        Some("VERIFY_IDENTITY") => SslOpts::default(),
        Some(other) => {
            return Err(format!("ssl-mode `{other}` is not one of DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"));
        }
    };
    let ssl = match ca {
        Some(path) => {
            if !std::path::Path::new(&path).is_file() {
                return Err(format!("ssl-ca {path}: no such file"));
            }
            ssl.with_root_certs(vec![std::path::PathBuf::from(path).into()])
        }
        None => ssl,
    };
    Ok(Opts::from(OptsBuilder::from_opts(opts).ssl_opts(ssl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_mode_and_ca_become_ssl_options() {
        assert!(opts("mysql://u@h/db").unwrap().ssl_opts().is_none());
        let required = opts("mysql://u@h/db?ssl-mode=required&prefer_socket=false").unwrap();
        let ssl = required.ssl_opts().expect("TLS on");
        assert!(ssl.accept_invalid_certs() && ssl.skip_domain_validation());
        assert!(!required.prefer_socket(), "other parameters still apply");
        let full = opts("mysql://u@h/db?ssl_mode=VERIFY_IDENTITY").unwrap();
        assert!(!full.ssl_opts().unwrap().accept_invalid_certs() && !full.ssl_opts().unwrap().skip_domain_validation());
        assert!(
            opts("mysql://u@h/db?ssl-mode=VERIFY_CA&ssl-ca=/nonexistent.pem")
                .is_err_and(|e| e.contains("/nonexistent.pem"))
        );
        assert!(opts("mysql://u@h/db?ssl-mode=maybe").is_err_and(|e| e.contains("VERIFY_IDENTITY")));
    }
}
