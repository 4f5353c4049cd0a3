//! Dashboard sessions: a sign-in with a token opens one, kept in this process's memory, named by a random id
//! that the browser holds in an HttpOnly cookie. A restart signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{Caller, tokens};

/// How long a session lasts from sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Default)]
pub struct Sessions {
    /// By the SHA-256 of their id, so the map holds nothing a cookie could be made from.
    open: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
}

impl Sessions {
    /// Opens a session for `caller`; returns its id for the cookie.
    pub fn open(&self, caller: Caller) -> String {
        let id = tokens::generate();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, (_, until)| *until > Instant::now());
        open.insert(key(&id), (caller, Instant::now() + LIFETIME));
        id
    }

    /// Who holds the session `id`, while it lasts.
    pub fn find(&self, id: &str) -> Option<Caller> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&key(id)).filter(|(_, until)| *until > Instant::now()).map(|(caller, _)| caller.clone())
    }

    pub fn close(&self, id: &str) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&key(id));
    }
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}
