//! Authentication of an `http` connection, chosen by which options it sets:
//!
//! | options | sends |
//! |---|---|
//! | `bearer_token` | `Authorization: Bearer …` |
//! | `username`, `password` | HTTP basic |
//! | `api_key` with `api_key_header` (default `X-API-Key`) or `api_key_query` | the key as a header or query parameter |
//! | `token_url`, `client_id`, `client_secret`, optional `scope` | OAuth2 client credentials: a token fetched once, reused until it expires or a request gets 401 |

use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result};
use reqwest::RequestBuilder;
use tokio::sync::Mutex;
use weir_engine::{ResolvedConnection, Secret};

use super::kind::AUTH_OPTIONS;

#[derive(Debug)]
pub enum Auth {
    None,
    Bearer(Secret),
    Basic { username: Secret, password: Secret },
    ApiKeyHeader { header: String, key: Secret },
    ApiKeyQuery { param: String, key: Secret },
    OAuth2(OAuth2),
}

#[derive(Debug)]
pub struct OAuth2 {
    token_url: Secret,
    client_id: Secret,
    client_secret: Secret,
    scope: Option<Secret>,
    token: Mutex<Option<Token>>,
}

#[derive(Debug, Clone)]
struct Token {
    value: Secret,
    /// When to fetch a new one: a little before the server says it expires.
    renew_at: Option<Instant>,
}

impl Auth {
    pub fn from_connection(conn: &ResolvedConnection) -> Result<Self> {
        let option = |key: &str| conn.options.get(key).cloned();
        if let Some(unknown) = conn.options.keys().find(|k| !AUTH_OPTIONS.iter().any(|o| o.is_named(k))) {
            let known: Vec<&str> = AUTH_OPTIONS.iter().map(|o| o.name).collect();
            return Err(DataFusionError::Plan(format!(
                "connection `{}`: API steps take no option `{unknown}`; their options are {}",
                conn.name,
                known.join(", ")
            )));
        }
        let chosen: Vec<&str> =
            [("bearer_token", "bearer"), ("username", "basic"), ("api_key", "api_key"), ("token_url", "oauth2")]
                .into_iter()
                .filter(|(key, _)| conn.options.contains_key(*key))
                .map(|(_, name)| name)
                .collect();
        if chosen.len() > 1 {
            return Err(DataFusionError::Plan(format!(
                "connection `{}` sets options of several auth methods ({}); keep one",
                conn.name,
                chosen.join(", ")
            )));
        }
        let missing = |key: &str| DataFusionError::Plan(format!("connection `{}` needs option `{key}`", conn.name));
        Ok(match chosen.first() {
            None => Auth::None,
            Some(&"bearer") => Auth::Bearer(option("bearer_token").expect("chosen by it")),
            Some(&"basic") => Auth::Basic {
                username: option("username").expect("chosen by it"),
                password: option("password").ok_or_else(|| missing("password"))?,
            },
            Some(&"api_key") => {
                let key = option("api_key").expect("chosen by it");
                match (option("api_key_query"), option("api_key_header")) {
                    (Some(_), Some(_)) => {
                        return Err(DataFusionError::Plan(format!(
                            "connection `{}`: set `api_key_header` or `api_key_query`, not both",
                            conn.name
                        )));
                    }
                    (Some(param), None) => Auth::ApiKeyQuery { param: param.expose().to_string(), key },
                    (None, header) => Auth::ApiKeyHeader {
                        header: header.map_or_else(|| "X-API-Key".to_string(), |h| h.expose().to_string()),
                        key,
                    },
                }
            }
            Some(_) => Auth::client_credentials(
                option("token_url").expect("chosen by it"),
                option("client_id").ok_or_else(|| missing("client_id"))?,
                option("client_secret").ok_or_else(|| missing("client_secret"))?,
                option("scope"),
            ),
        })
    }

    /// OAuth2 client credentials, for connections that name their options otherwise (SharePoint).
    pub fn client_credentials(
        token_url: Secret,
        client_id: Secret,
        client_secret: Secret,
        scope: Option<Secret>,
    ) -> Self {
        Auth::OAuth2(OAuth2 { token_url, client_id, client_secret, scope, token: Mutex::new(None) })
    }

    pub async fn apply(&self, http: &reqwest::Client, request: RequestBuilder) -> Result<RequestBuilder> {
        Ok(match self {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::Basic { username, password } => request.basic_auth(username.expose(), Some(password.expose())),
            Auth::ApiKeyHeader { header, key } => request.header(header, key.expose()),
            Auth::ApiKeyQuery { param, key } => request.query(&[(param, key.expose())]),
            Auth::OAuth2(oauth) => request.bearer_auth(oauth.token(http).await?.expose()),
        })
    }

    /// A 401 may mean the token expired early: forget it so the next attempt fetches a new one. Returns whether a
    /// fresh attempt can help.
    pub async fn on_unauthorized(&self) -> bool {
        match self {
            Auth::OAuth2(oauth) => oauth.token.lock().await.take().is_some(),
            _ => false,
        }
    }
}

impl OAuth2 {
    async fn token(&self, http: &reqwest::Client) -> Result<Secret> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(token.value.clone());
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.expose()),
            ("client_secret", self.client_secret.expose()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.expose()));
        }
        let failed = |why: String| DataFusionError::Execution(format!("OAuth2 token request failed: {why}"));
        let response = http
            .post(self.token_url.expose())
            .form(&form)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failed(e.without_url().to_string()))?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("HTTP {status}, and the body is not JSON: {e}")))?;
        if !status.is_success() {
            let reason = body.get("error").and_then(|e| e.as_str()).unwrap_or("no `error` field");
            return Err(failed(format!("HTTP {status}: {reason}")));
        }
        let value = body
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| failed("the response has no `access_token`".into()))?;
        let renew_at = body
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .map(|secs| Instant::now() + Duration::from_secs(secs).saturating_sub(Duration::from_secs(30)));
        let token = Token { value: Secret::new(value.to_string()), renew_at };
        *cached = Some(token.clone());
        Ok(token.value)
    }
}
