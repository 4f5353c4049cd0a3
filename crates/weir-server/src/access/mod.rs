//! Who may call `weir serve`'s API: tokens with roles, given as `Authorization: Bearer …` or through a dashboard
//! session; repeated failures from one address are refused for a while; cross-site requests never change state.

mod csrf;
mod sessions;
mod tokens;

use std::net::IpAddr;
use std::time::Duration;

use axum::http::HeaderMap;

pub use csrf::{CrossSite, check_same_site};
pub use sessions::LIFETIME as SESSION_LIFETIME;
pub use tokens::{Role, TokenError, Tokens, file_entry, generate};

use crate::limit::{Allowance, Windows};

/// The cookie holding a dashboard session's id.
pub const SESSION_COOKIE: &str = "weir_session";

/// Wrong credentials an address may present per minute before it is refused for the rest of that minute.
const FAILURES: Allowance = Allowance { events: 10, per: Duration::from_secs(60) };

/// Who made a request: a token's name and role, or, on a server without tokens, `anonymous` with every role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// Why a request was refused before it reached its route.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("sign in: give a token as `Authorization: Bearer …`, or sign in on the dashboard")]
    Missing,
    #[error("the token or session is not valid")]
    Wrong,
    #[error("too many failed sign-ins from this address; try again in {} s", .0.as_secs().max(1))]
    TooMany(Duration),
    #[error("token `{name}` has role {has}; this needs {needs}")]
    Insufficient { name: String, has: Role, needs: Role },
}

/// How `weir serve` decides who is calling.
pub struct Access {
    tokens: Tokens,
    sessions: sessions::Sessions,
    failures: Windows<IpAddr>,
    /// Whether `/metrics` answers without a token.
    pub open_metrics: bool,
    /// Whether the session cookie is marked `Secure` (the API is served over TLS).
    pub secure_cookies: bool,
}

impl Access {
    pub fn new(tokens: Tokens, open_metrics: bool, secure_cookies: bool) -> Self {
        Self { tokens, sessions: Default::default(), failures: Default::default(), open_metrics, secure_cookies }
    }

    /// Whether any token is configured; without one, every caller may do everything.
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Who sent a request with these headers from `peer`, if they may do what `needs` allows.
    pub fn authorize(&self, headers: &HeaderMap, peer: IpAddr, needs: Role) -> Result<Caller, Denied> {
        let caller = self.identify(headers, peer)?;
        if caller.role < needs {
            return Err(Denied::Insufficient { name: caller.name, has: caller.role, needs });
        }
        Ok(caller)
    }

    fn identify(&self, headers: &HeaderMap, peer: IpAddr) -> Result<Caller, Denied> {
        if !self.requires_tokens() {
            return Ok(Caller { name: "anonymous".into(), role: Role::Admin });
        }
        if let Some(secret) = bearer(headers) {
            return self.check_token(&secret, peer);
        }
        match session_id(headers) {
            Some(id) => self.sessions.find(&id).ok_or(Denied::Wrong),
            None => Err(Denied::Missing),
        }
    }

    /// The caller a token belongs to. A wrong token counts against `peer`, and an address with too many
    /// failures is refused before its token is even looked at, so guessing gains nothing from the answers.
    fn check_token(&self, secret: &str, peer: IpAddr) -> Result<Caller, Denied> {
        if let Some(wait) = self.failures.blocked(&peer, FAILURES) {
            return Err(Denied::TooMany(wait));
        }
        match self.tokens.verify(secret) {
            Some((name, role)) => Ok(Caller { name: name.to_string(), role }),
            None => {
                self.failures.count(peer, FAILURES);
                Err(Denied::Wrong)
            }
        }
    }

    /// Signs in with a token: the caller and the `Set-Cookie` value of their new session.
    pub fn sign_in(&self, secret: &str, peer: IpAddr) -> Result<(Caller, String), Denied> {
        let caller = if self.requires_tokens() {
            self.check_token(secret, peer)?
        } else {
            self.identify(&HeaderMap::new(), peer)?
        };
        let id = self.sessions.open(caller.clone());
        Ok((caller, self.cookie(&id, SESSION_LIFETIME)))
    }

    /// Ends the request's session, if it has one: the `Set-Cookie` value that clears it in the browser.
    pub fn sign_out(&self, headers: &HeaderMap) -> String {
        if let Some(id) = session_id(headers) {
            self.sessions.close(&id);
        }
        self.cookie("", Duration::ZERO)
    }

    fn cookie(&self, value: &str, lasts: Duration) -> String {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", lasts.as_secs())
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ")?.trim().to_string())
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('=').map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn roles_and_sessions_decide_and_failures_are_limited() {
        let (reader, operator) = (generate(), generate());
        let tokens = Tokens::from_list(&format!("dash:read:{reader},ci:operate:{operator}")).unwrap();
        let access = Access::new(tokens, false, true);
        let bearer = |secret: &str| headers(&[("authorization", &format!("Bearer {secret}"))]);
        assert_eq!(access.authorize(&bearer(&operator), PEER, Role::Operate).unwrap().name, "ci");
        assert_eq!(
            access.authorize(&bearer(&reader), PEER, Role::Operate),
            Err(Denied::Insufficient { name: "dash".into(), has: Role::Read, needs: Role::Operate })
        );
        assert_eq!(access.authorize(&HeaderMap::new(), PEER, Role::Read), Err(Denied::Missing));

        let (caller, cookie) = access.sign_in(&reader, PEER).unwrap();
        assert_eq!(caller.name, "dash");
        assert!(cookie.contains("HttpOnly; SameSite=Strict") && cookie.ends_with("Secure"), "{cookie}");
        let id = cookie.split(';').next().unwrap().to_string();
        let with_cookie = headers(&[("cookie", &format!("theme=dark; {id}"))]);
        assert_eq!(access.authorize(&with_cookie, PEER, Role::Read).unwrap().name, "dash");
        access.sign_out(&with_cookie);
        assert_eq!(access.authorize(&with_cookie, PEER, Role::Read), Err(Denied::Wrong));

        for _ in 0..FAILURES.events {
            assert_eq!(access.authorize(&bearer("wrong"), PEER, Role::Read), Err(Denied::Wrong));
        }
        assert!(matches!(access.authorize(&bearer(&operator), PEER, Role::Read), Err(Denied::TooMany(_))));
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert!(access.authorize(&bearer(&operator), elsewhere, Role::Read).is_ok(), "other addresses are let in");
    }
}
