//! Per-connection state (a stdio process, a legacy HTTP session, or one modern HTTP request):
//! the legacy log level and the in-flight requests a client may cancel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::meta::LogLevel;

/// State scoped to one connection or legacy session.
#[derive(Debug, Default)]
pub struct Session {
    log_level: Mutex<Option<LogLevel>>,
    inflight: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next_ticket: AtomicU64,
    closed: CancellationToken,
}

/// A cancellable request, registered by its transport before it runs; deregisters itself when dropped.
#[derive(Debug)]
pub struct InFlight {
    session: Arc<Session>,
    key: String,
    ticket: u64,
    token: CancellationToken,
}

impl Session {
    /// A fresh session with nothing negotiated.
    pub fn new() -> Session {
        Session::default()
    }

    /// Sets the legacy session-wide log level (`logging/setLevel`).
    pub fn set_log_level(&self, level: LogLevel) {
        *lock(&self.log_level) = Some(level);
    }

    /// The legacy session-wide log level; `None` until the client sets one.
    pub fn log_level(&self) -> Option<LogLevel> {
        *lock(&self.log_level)
    }

    /// Registers a request the client may cancel by id.
    pub fn track(self: &Arc<Session>, id: &RawValue) -> InFlight {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        let key = id.get().to_owned();
        lock(&self.inflight).insert(key.clone(), (ticket, token.clone()));
        InFlight { session: self.clone(), key, ticket, token }
    }

    /// Cancels the in-flight request with this id; `false` when none is (any more).
    pub fn cancel(&self, id: &RawValue) -> bool {
        match lock(&self.inflight).get(id.get()) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Cancels every in-flight request (the client ended the session).
    pub fn cancel_all(&self) {
        for (_, token) in lock(&self.inflight).values() {
            token.cancel();
        }
    }

    /// Marks the connection as closing: open subscriptions end, calls in flight may finish.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Ends the session: cancels its calls and subscriptions.
    pub fn end(&self) {
        self.cancel_all();
        self.close();
    }

    /// Resolves once the connection is closing.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }
}

impl InFlight {
    /// Fires when the client cancels this request.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inflight = lock(&self.session.inflight);
        // A reused id may have replaced this entry; only remove our own.
        if inflight.get(&self.key).is_some_and(|(ticket, _)| *ticket == self.ticket) {
            inflight.remove(&self.key);
        }
    }
}

/// How many legacy HTTP sessions are kept; past this the oldest is ended (its client gets 404 and
/// re-initializes, as the spec tells it to), so clients that never DELETE cannot exhaust memory.
pub const MAX_SESSIONS: usize = 10_000;

/// The legacy HTTP sessions, by `Mcp-Session-Id`.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, (u64, Arc<Session>)>>,
    next_seq: AtomicU64,
}

impl Sessions {
    /// Stores a session under a fresh random id and returns the id.
    pub fn insert(&self, session: Arc<Session>) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut by_id = lock(&self.by_id);
        if by_id.len() >= MAX_SESSIONS {
            let oldest = by_id.iter().min_by_key(|(_, (seq, _))| *seq).map(|(id, _)| id.clone());
            if let Some((_, evicted)) = oldest.and_then(|id| by_id.remove(&id)) {
                evicted.end();
            }
        }
        by_id.insert(id.clone(), (seq, session));
        id
    }

    /// The session with this id, if it exists.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.by_id).get(id).map(|(_, session)| session.clone())
    }

    /// Ends a session, cancelling its in-flight requests; `false` if it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        let removed = lock(&self.by_id).remove(id);
        if let Some((_, session)) = &removed {
            session.end();
        }
        removed.is_some()
    }
}

/// The maps hold no invariants a panicking holder could break, so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).expect("json")
    }

    #[tokio::test]
    async fn cancel_wakes_the_tracked_request_and_drop_deregisters_it() {
        let session = Arc::new(Session::new());
        let id = raw("7");
        let inflight = session.track(&id);
        assert!(session.cancel(&id));
        inflight.token().cancelled().await;
        drop(inflight);
        assert!(!session.cancel(&id), "a finished request is no longer cancellable");
    }

    #[test]
    fn dropping_an_older_request_keeps_a_newer_one_with_the_same_id() {
        let session = Arc::new(Session::new());
        let id = raw("\"dup\"");
        let older = session.track(&id);
        let newer = session.track(&id);
        drop(older);
        assert!(session.cancel(&id));
        assert!(newer.token.is_cancelled());
    }

    #[test]
    fn sessions_get_random_hex_ids_and_end_on_remove() {
        let sessions = Sessions::default();
        let a = sessions.insert(Arc::new(Session::new()));
        let b = sessions.insert(Arc::new(Session::new()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(sessions.get(&a).is_some());
        assert!(sessions.remove(&a));
        assert!(sessions.get(&a).is_none());
        assert!(!sessions.remove(&a));
    }

    #[test]
    fn the_oldest_session_is_ended_when_the_table_is_full() {
        let sessions = Sessions::default();
        let oldest = Arc::new(Session::new());
        let oldest_id = sessions.insert(oldest.clone());
        for _ in 0..MAX_SESSIONS {
            sessions.insert(Arc::new(Session::new()));
        }
        assert!(sessions.get(&oldest_id).is_none());
        assert!(oldest.closed.is_cancelled());
        assert_eq!(lock(&sessions.by_id).len(), MAX_SESSIONS);
    }

    #[test]
    fn remembers_the_legacy_log_level() {
        let session = Session::new();
        assert_eq!(session.log_level(), None);
        session.set_log_level(LogLevel::Debug);
        assert_eq!(session.log_level(), Some(LogLevel::Debug));
    }
}
