//! Cross-site request forgery: a page on another site must not be able to change anything, even on a server
//! without tokens on 127.0.0.1. Browsers name the page that sent a request (`Sec-Fetch-Site`, and `Origin` on
//! every POST, PUT and DELETE), and a cross-site page cannot send a body as `Content-Type: application/json`
//! without asking first (CORS), which Weir never allows.

use axum::http::{HeaderMap, Method};

/// Why a state-changing request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrossSite {
    #[error("refused: the request came from another site ({0})")]
    Forged(String),
    #[error("the body of a request that changes something must be sent as `Content-Type: application/json`")]
    NotJson,
}

/// Checks a request that may change something (POST, PUT, PATCH, DELETE; other methods change nothing, and
/// those the API lacks are answered 405 by the router).
pub fn check_same_site(method: &Method, headers: &HeaderMap) -> Result<(), CrossSite> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return Ok(());
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(CrossSite::Forged(format!("Sec-Fetch-Site: {site}")));
    }
    if let Some(origin) = header("origin") {
        let origin_host = origin.split_once("://").map(|(_, host)| host);
        if origin_host.is_none() || origin_host != header("host") {
            return Err(CrossSite::Forged(format!("Origin: {origin}")));
        }
    }
    let has_body = header("transfer-encoding").is_some() || header("content-length").is_some_and(|n| n.trim() != "0");
    let json = header("content-type")
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if json || !has_body { Ok(()) } else { Err(CrossSite::NotJson) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn only_same_site_json_may_change_state() {
        let post = Method::POST;
        let json = ("content-type", "application/json");
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(check_same_site(&Method::GET, &headers(&[])), Ok(()));
        assert_eq!(check_same_site(&post, &headers(&[json, host])), Ok(()), "curl, a script");
        let same = headers(&[json, host, ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(check_same_site(&post, &same), Ok(()), "the dashboard");
        let forged = headers(&[
            ("content-type", "text/plain"),
            host,
            ("origin", "https://evil.example"),
            ("content-length", "2"),
        ]);
        assert!(matches!(check_same_site(&post, &forged), Err(CrossSite::Forged(_))));
        let fetch_meta = headers(&[json, host, ("sec-fetch-site", "cross-site")]);
        assert!(matches!(check_same_site(&post, &fetch_meta), Err(CrossSite::Forged(_))));
        assert!(matches!(
            check_same_site(&post, &headers(&[json, host, ("origin", "null")])),
            Err(CrossSite::Forged(_))
        ));
        let text = ("content-type", "text/plain");
        assert_eq!(check_same_site(&post, &headers(&[text, host, ("content-length", "2")])), Err(CrossSite::NotJson));
        assert_eq!(check_same_site(&Method::DELETE, &headers(&[host])), Ok(()), "no body, no type needed");
        assert_eq!(check_same_site(&Method::TRACE, &headers(&[text, host])), Ok(()), "left to the router");
    }
}
