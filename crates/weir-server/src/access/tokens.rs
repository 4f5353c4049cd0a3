//! API tokens: each has a name (what logs and the audit log show), a role, and a secret that is kept only as its
//! SHA-256. Tokens are random and long, so a plain hash is enough: there is no dictionary to try against it.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scrape `/metrics`, nothing else.
    Metrics,
    /// See pipelines, runs, their logs and state, and `/metrics`.
    Read,
    /// Also start and cancel runs, and see and replay dead letters.
    Operate,
    /// Also purge dead letters, set and reset state values, and read the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Metrics, Role::Read, Role::Operate, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, TokenError> {
        Role::ALL.into_iter().find(|r| r.name() == text).ok_or_else(|| TokenError::Role(text.to_string()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why tokens could not be read. No variant holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("`{0}` is not a role; roles are metrics, read, operate and admin")]
    Role(String),
    #[error("entry {0} of WEIR_API_TOKENS is not `name:role:secret`")]
    Entry(usize),
    #[error("the secret of token `{0}` is shorter than {MIN_SECRET} characters; make one with `weir token`")]
    Short(String),
    #[error("two tokens are named `{0}`")]
    Duplicate(String),
    #[error("cannot read the tokens file {path}: {message}")]
    File { path: String, message: String },
    #[error("token `{0}` in the tokens file: `sha256` must be 64 hex digits")]
    Hash(String),
}

/// Secrets shorter than this are refused: a short secret could be guessed.
const MIN_SECRET: usize = 16;

struct Token {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The tokens `weir serve` accepts.
#[derive(Default)]
pub struct Tokens(Vec<Token>);

/// Names and roles only.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.iter().map(|t| (&t.name, t.role))).finish()
    }
}

/// One entry of a tokens file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    role: Role,
    sha256: String,
}

impl Tokens {
    /// Tokens from `WEIR_API_TOKENS`: `name:role:secret` entries separated by commas.
    pub fn from_list(text: &str) -> Result<Self, TokenError> {
        let mut tokens = Self::default();
        for (i, entry) in text.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(TokenError::Entry(i + 1));
            };
            if secret.len() < MIN_SECRET {
                return Err(TokenError::Short(name.to_string()));
            }
            tokens.add(name, role.parse()?, digest(secret))?;
        }
        Ok(tokens)
    }

    /// Tokens from a YAML file of `{ name, role, sha256 }` entries, as `weir token` prints them.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let file_error = |message: String| TokenError::File { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let entries: Vec<FileEntry> = serde_saphyr::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        let mut tokens = Self::default();
        for entry in entries {
            let hash = hex::decode(&entry.sha256)
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| TokenError::Hash(entry.name.clone()))?;
            tokens.add(&entry.name, entry.role, hash)?;
        }
        Ok(tokens)
    }

    /// Both sets; a name in both is refused.
    pub fn merge(mut self, other: Tokens) -> Result<Self, TokenError> {
        for token in other.0 {
            self.add(&token.name, token.role, token.hash)?;
        }
        Ok(self)
    }

    fn add(&mut self, name: &str, role: Role, hash: [u8; 32]) -> Result<(), TokenError> {
        if self.0.iter().any(|t| t.name == name) {
            return Err(TokenError::Duplicate(name.to_string()));
        }
        self.0.push(Token { name: name.to_string(), role, hash });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The name and role of the token whose secret is `secret`. Every token is compared, in constant time, so
    /// the answer's timing says nothing about which one matched or how much of a guess was right.
    pub fn verify(&self, secret: &str) -> Option<(&str, Role)> {
        let given = digest(secret);
        let mut found = None;
        for token in &self.0 {
            if bool::from(token.hash.ct_eq(&given)) {
                found = Some((token.name.as_str(), token.role));
            }
        }
        found
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret: 32 bytes from the operating system, hex, after a `weir_` prefix that secret scanners
/// can look for.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system gives random bytes");
    format!("weir_{}", hex::encode(bytes))
}

/// The tokens-file entry for a secret.
pub fn file_entry(name: &str, role: Role, secret: &str) -> String {
    format!("- {{ name: {name}, role: {role}, sha256: {} }}", hex::encode(digest(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_and_a_file_give_the_same_tokens() {
        let secret = generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(&path, file_entry("ci", Role::Operate, &secret) + "\n").unwrap();
        let from_file = Tokens::from_file(&path).unwrap();
        let from_list = Tokens::from_list(&format!("ci:operate:{secret}")).unwrap();
        for tokens in [from_file, from_list] {
            assert_eq!(tokens.verify(&secret), Some(("ci", Role::Operate)));
            assert_eq!(tokens.verify(&format!("{secret}x")), None);
        }
    }

    #[test]
    fn mistakes_are_named_without_the_secret() {
        let short = Tokens::from_list("a:read:tiny").err().unwrap().to_string();
        assert!(short.contains("`a`") && !short.contains("tiny"), "{short}");
        let entry = Tokens::from_list("a:read:0123456789abcdef,broken-entry-secret").err().unwrap().to_string();
        assert_eq!(entry, "entry 2 of WEIR_API_TOKENS is not `name:role:secret`");
        assert!(Tokens::from_list("a:root:0123456789abcdef").err().unwrap().to_string().contains("not a role"));
        let twice = Tokens::from_list("a:read:0123456789abcdef,a:admin:fedcba9876543210").err().unwrap();
        assert_eq!(twice.to_string(), "two tokens are named `a`");
    }
}
