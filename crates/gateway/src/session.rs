//! Legacy (2025-03-26 … 2025-11-25) host sessions: what `initialize`
//! negotiated, the streams whose events can be replayed with `Last-Event-ID`,
//! calls in flight (for `notifications/cancelled`), and requests the gateway
//! sent the host on an upstream's behalf.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_wire::{Message, ProtocolVersion, RawObject, RequestId};
use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use portcullis_identity::Principal;

use crate::route::Route;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An append-only log of one SSE stream's events, kept so a host can resume it.
pub struct StreamLog {
    inner: Mutex<LogInner>,
    notify: Notify,
    cap: usize,
}

struct LogInner {
    /// The sequence number of `events[0]`.
    base: u64,
    events: VecDeque<Bytes>,
    done: bool,
}

impl StreamLog {
    /// A log keeping at most `cap` events.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(LogInner { base: 1, events: VecDeque::new(), done: false }),
            notify: Notify::new(),
            cap,
        })
    }

    /// Appends a message; returns its sequence number.
    pub fn push(&self, message: Bytes) -> u64 {
        let seq = {
            let mut inner = lock(&self.inner);
            inner.events.push_back(message);
            if inner.events.len() > self.cap {
                inner.events.pop_front();
                inner.base += 1;
            }
            inner.base + inner.events.len() as u64 - 1
        };
        self.notify.notify_waiters();
        seq
    }

    /// Marks the stream complete.
    pub fn finish(&self) {
        lock(&self.inner).done = true;
        self.notify.notify_waiters();
    }

    /// Waits for events from `from` on: returns them with their sequence numbers, or `None`
    /// when the stream is complete and everything was read.
    pub async fn read(&self, from: u64) -> Option<Vec<(u64, Bytes)>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = lock(&self.inner);
                let start = from.max(inner.base);
                let end = inner.base + inner.events.len() as u64;
                if start < end {
                    let skip = usize::try_from(start - inner.base).unwrap_or(usize::MAX);
                    return Some(
                        inner
                            .events
                            .iter()
                            .skip(skip)
                            .enumerate()
                            .map(|(i, b)| (start + i as u64, b.clone()))
                            .collect(),
                    );
                }
                if inner.done {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// One legacy host session.
pub struct Session {
    pub id: String,
    pub route: Arc<Route>,
    pub version: ProtocolVersion,
    /// The host's declared capabilities, raw.
    pub capabilities: Box<RawValue>,
    /// Who opened the session; only that principal may use it.
    pub principal: Arc<Principal>,
    last_seen: Mutex<Instant>,
    next_stream: AtomicU64,
    streams: Mutex<HashMap<u64, Arc<StreamLog>>>,
    /// Bumped by each new GET stream so that only the newest one delivers.
    listener_generation: AtomicU64,
    listen_delivered: AtomicU64,
    in_flight: Mutex<HashMap<RequestId, CancellationToken>>,
    outgoing: Mutex<HashMap<String, oneshot::Sender<Message>>>,
    next_outgoing: AtomicU64,
    subscriptions: Mutex<HashSet<String>>,
    /// The level set by `logging/setLevel`, if any.
    log_level: Mutex<Option<String>>,
    /// Tool calls the controls let through on this session (policies read it as `sessionCalls`).
    calls: AtomicU64,
    /// The host's `clientInfo` from `initialize`, for the audit trail: set through
    /// [`Session::set_client_info`], so it is JSON that reads back (records quote it verbatim).
    pub client_info: std::sync::OnceLock<Box<RawValue>>,
    pub closed: CancellationToken,
}

/// JSON as parsed and written again, or `None` when a parser refuses it.
fn readable(raw: &RawValue) -> Option<Box<RawValue>> {
    let value = serde_json::from_str::<serde_json::Value>(raw.get()).ok()?;
    serde_json::value::to_raw_value(&value).ok()
}

/// The stream id of the GET (listening) stream.
pub const LISTEN_STREAM: u64 = 0;

impl Session {
    /// Keeps the host's `clientInfo` for the audit trail, as parsed and written again: the
    /// envelope's scan admits JSON a parser refuses (a number out of range, a lone surrogate
    /// escape, nesting too deep), which quoted verbatim would leave every call record of the
    /// session unreadable. What does not parse is not kept.
    pub fn set_client_info(&self, client: &RawValue) {
        if let Some(client) = readable(client) {
            let _ = self.client_info.set(client);
        }
    }

    /// A session outside the HTTP table (a stdio host: the process is the session).
    pub fn standalone(
        route: Arc<Route>,
        version: ProtocolVersion,
        capabilities: Box<RawValue>,
        principal: Arc<Principal>,
    ) -> Arc<Self> {
        Arc::new(Self::new("stdio".to_owned(), route, version, capabilities, principal))
    }

    /// Tool calls let through so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts one more tool call let through.
    pub fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn new(
        id: String,
        route: Arc<Route>,
        version: ProtocolVersion,
        capabilities: Box<RawValue>,
        principal: Arc<Principal>,
    ) -> Self {
        let mut streams = HashMap::new();
        streams.insert(LISTEN_STREAM, StreamLog::new(256));
        Self {
            id,
            route,
            version,
            capabilities,
            principal,
            calls: AtomicU64::new(0),
            client_info: std::sync::OnceLock::new(),
            last_seen: Mutex::new(Instant::now()),
            next_stream: AtomicU64::new(1),
            streams: Mutex::new(streams),
            listener_generation: AtomicU64::new(0),
            listen_delivered: AtomicU64::new(0),
            in_flight: Mutex::new(HashMap::new()),
            outgoing: Mutex::new(HashMap::new()),
            next_outgoing: AtomicU64::new(1),
            subscriptions: Mutex::new(HashSet::new()),
            log_level: Mutex::new(None),
            closed: CancellationToken::new(),
        }
    }

    /// Notes activity (idle sessions expire).
    pub fn touch(&self) {
        *lock(&self.last_seen) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_seen).elapsed()
    }

    /// Whether the host declared a capability in `initialize`.
    pub fn has_capability(&self, name: &str) -> bool {
        RawObject::parse(&self.capabilities).is_some_and(|c| c.contains(name))
    }

    /// Opens a new POST response stream; returns its id and log.
    pub fn open_stream(&self) -> (u64, Arc<StreamLog>) {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let log = StreamLog::new(4096);
        let mut streams = lock(&self.streams);
        // Keep a bounded number of finished streams for resumption.
        if streams.len() > 64 {
            let oldest = streams.keys().copied().filter(|k| *k != LISTEN_STREAM).min();
            if let Some(k) = oldest {
                streams.remove(&k);
            }
        }
        streams.insert(id, Arc::clone(&log));
        (id, log)
    }

    /// A stream's log by id.
    pub fn stream(&self, id: u64) -> Option<Arc<StreamLog>> {
        lock(&self.streams).get(&id).cloned()
    }

    /// Delivers a message on the listening stream.
    pub fn push_listen(&self, message: Bytes) {
        if let Some(log) = self.stream(LISTEN_STREAM) {
            log.push(message);
        }
    }

    /// Starts a new GET listener; returns its generation.
    pub fn new_listener(&self) -> u64 {
        self.listener_generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether a GET listener is still the newest.
    pub fn is_current_listener(&self, generation: u64) -> bool {
        self.listener_generation.load(Ordering::Acquire) == generation
    }

    /// Adds a resource subscription; false if the session already had it.
    pub fn add_subscription(&self, uri: &str) -> bool {
        lock(&self.subscriptions).insert(uri.to_owned())
    }

    /// Removes a resource subscription; false if the session did not have it.
    pub fn remove_subscription(&self, uri: &str) -> bool {
        lock(&self.subscriptions).remove(uri)
    }

    /// Whether the session is subscribed to a URI.
    pub fn is_subscribed(&self, uri: &str) -> bool {
        lock(&self.subscriptions).contains(uri)
    }

    /// Takes every subscription (when the session ends).
    pub fn take_subscriptions(&self) -> Vec<String> {
        lock(&self.subscriptions).drain().collect()
    }

    /// Records the level set by `logging/setLevel`.
    pub fn set_log_level(&self, level: String) {
        *lock(&self.log_level) = Some(level);
    }

    /// The session's log level: as set, or `debug` (a legacy server that was never given a level
    /// sends what it likes; a modern upstream must be told, so it is told to send everything).
    pub fn log_level(&self) -> String {
        lock(&self.log_level).clone().unwrap_or_else(|| "debug".to_owned())
    }

    /// Records the last listening-stream event a GET delivered.
    pub fn mark_listen_delivered(&self, seq: u64) {
        self.listen_delivered.fetch_max(seq, Ordering::AcqRel);
    }

    /// The last listening-stream event delivered.
    pub fn listen_delivered(&self) -> u64 {
        self.listen_delivered.load(Ordering::Acquire)
    }

    /// Registers a host request in flight; the token cancels it.
    pub fn start_call(&self, id: &RequestId) -> CancellationToken {
        let token = self.closed.child_token();
        lock(&self.in_flight).insert(id.clone(), token.clone());
        token
    }

    /// Forgets a finished host request.
    pub fn end_call(&self, id: &RequestId) {
        lock(&self.in_flight).remove(id);
    }

    /// Cancels a host request in flight (`notifications/cancelled`).
    pub fn cancel_call(&self, id: &RequestId) -> bool {
        lock(&self.in_flight).remove(id).map(|t| t.cancel()).is_some()
    }

    /// Registers a request the gateway sends the host; returns its id and the answer's receiver.
    pub fn expect_answer(&self) -> (RequestId, oneshot::Receiver<Message>) {
        let n = self.next_outgoing.fetch_add(1, Ordering::Relaxed);
        let key = format!("pc-{n}");
        let (tx, rx) = oneshot::channel();
        lock(&self.outgoing).insert(key.clone(), tx);
        (RequestId::string(&key), rx)
    }

    /// Delivers the host's answer to a request the gateway sent; false if none was waiting.
    pub fn answer(&self, message: Message) -> bool {
        let Some(key) = message.id().and_then(|id| serde_json::from_str::<String>(id.as_json()).ok()) else {
            return false;
        };
        match lock(&self.outgoing).remove(&key) {
            Some(tx) => tx.send(message).is_ok(),
            None => false,
        }
    }
}

/// All legacy sessions of the HTTP listener.
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    idle_timeout: Duration,
    max: usize,
}

impl Sessions {
    /// An empty table.
    pub fn new(idle_timeout: Duration, max: usize) -> Self {
        Self { map: RwLock::new(HashMap::new()), idle_timeout, max }
    }

    /// Creates a session with a fresh unguessable id.
    pub fn create(
        &self,
        route: Arc<Route>,
        version: ProtocolVersion,
        capabilities: Box<RawValue>,
        principal: Arc<Principal>,
    ) -> Arc<Session> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let session = Arc::new(Session::new(id.clone(), route, version, capabilities, principal));
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max {
            let oldest = map.values().max_by_key(|s| s.idle_for()).map(|s| s.id.clone());
            if let Some(old) = oldest.and_then(|k| map.remove(&k)) {
                old.closed.cancel();
            }
        }
        map.insert(id, Arc::clone(&session));
        session
    }

    /// A live session by id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.map.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned()?;
        session.touch();
        Some(session)
    }

    /// Ends a session; false if it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        let removed = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        removed.map(|s| s.closed.cancel()).is_some()
    }

    /// Ends sessions idle longer than the timeout.
    pub fn expire_idle(&self) {
        let mut map = self.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, s| {
            let keep = s.idle_for() < self.idle_timeout;
            if !keep {
                s.closed.cancel();
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_info_is_kept_only_as_json_that_reads_back() -> Result<(), serde_json::Error> {
        let kept = readable(&RawValue::from_string(r#"{ "name" : "host", "version": "1.0" }"#.to_owned())?);
        assert_eq!(kept.as_deref().map(RawValue::get), Some(r#"{"name":"host","version":"1.0"}"#));
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for bad in [r#"{"name":"x","v":1e400}"#, r#"{"name":"\ud800"}"#, deep.as_str()] {
            // A raw value admits these (its scan checks syntax only); a record must read back.
            let raw = RawValue::from_string(bad.to_owned())?;
            assert!(readable(&raw).is_none(), "kept {bad}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn stream_log_replays_from_any_point_and_ends() {
        let log = StreamLog::new(10);
        log.push(Bytes::from_static(b"a"));
        log.push(Bytes::from_static(b"b"));
        let got = log.read(2).await.expect("events");
        assert_eq!(got, vec![(2, Bytes::from_static(b"b"))]);
        log.finish();
        assert!(log.read(3).await.is_none());
    }

    #[tokio::test]
    async fn stream_log_drops_oldest_beyond_capacity() {
        let log = StreamLog::new(2);
        for b in [b"1", b"2", b"3"] {
            log.push(Bytes::copy_from_slice(b));
        }
        let got = log.read(1).await.expect("events");
        assert_eq!(got.first().map(|e| e.0), Some(2));
    }
}
