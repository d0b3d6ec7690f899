//! Dashboard sessions: random ids in a `Secure`, `HttpOnly`,
//! `SameSite=Strict` cookie, held in memory (a restart logs everyone
//! out), ended after a quiet spell; and one-time login codes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "wijkradar_sessie";

/// A signed-in organisation.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The organisation's name in the access file.
    pub organisation: String,
    /// Sent back with every form that changes something.
    pub csrf: String,
    last_seen: Instant,
}

#[derive(Debug)]
pub(crate) struct Sessions {
    idle: Duration,
    open: Mutex<HashMap<String, Session>>,
    /// One-time login codes and the organisation each signs in as.
    codes: Mutex<HashMap<String, String>>,
}

/// 32 random bytes, hex.
fn token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    hex::encode(bytes)
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            open: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
        }
    }

    /// A new one-time login code for `organisation`.
    pub(crate) fn one_time_login(&self, organisation: &str) -> String {
        let code = token();
        self.codes
            .lock()
            .expect("not poisoned")
            .insert(code.clone(), organisation.to_owned());
        code
    }

    /// Spends a login code: a new session id, or `None` for a code that is
    /// unknown or was used.
    pub(crate) fn log_in(&self, code: &str) -> Option<String> {
        let organisation = self.codes.lock().expect("not poisoned").remove(code)?;
        Some(self.open(organisation))
    }

    /// Opens a session for `organisation`; returns its id.
    pub(crate) fn open(&self, organisation: String) -> String {
        let id = token();
        let session = Session {
            organisation,
            csrf: token(),
            last_seen: Instant::now(),
        };
        let mut open = self.open.lock().expect("not poisoned");
        let idle = self.idle;
        open.retain(|_, s| s.last_seen.elapsed() < idle);
        open.insert(id.clone(), session);
        id
    }

    /// The session of `id`, if open; a page view keeps it open.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut open = self.open.lock().expect("not poisoned");
        let session = open.get_mut(id)?;
        if session.last_seen.elapsed() >= self.idle {
            open.remove(id);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    pub(crate) fn close(&self, id: &str) {
        self.open.lock().expect("not poisoned").remove(id);
    }

    /// The `Set-Cookie` value for session `id`.
    pub(crate) fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            self.idle.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_code_works_once_and_a_quiet_session_ends() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let code = sessions.one_time_login("gemeente");
        let id = sessions.log_in(&code).expect("first use");
        assert!(sessions.log_in(&code).is_none(), "second use");
        assert_eq!(sessions.get(&id).unwrap().organisation, "gemeente");
        std::thread::sleep(Duration::from_millis(80));
        assert!(sessions.get(&id).is_none(), "ended after the quiet spell");
        assert!(sessions.get("made-up").is_none());
    }
}
