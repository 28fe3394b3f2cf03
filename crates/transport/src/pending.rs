//! The table of calls awaiting an upstream's response, keyed by the id the
//! gateway minted for them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_wire::{Message, MessageKind, RawObject, RequestId};
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::link::LinkEvent;
use tokio::sync::{mpsc, oneshot};

use crate::error::UpstreamError;

/// Where a call's related messages (progress, server requests) go.
pub type Related = mpsc::Sender<Message>;

struct Entry {
    done: oneshot::Sender<Result<Message, UpstreamError>>,
    related: Option<Related>,
}

/// Calls in flight on one link.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    calls: Mutex<HashMap<u64, Entry>>,
}

/// A registered call: its id and where its response will arrive.
pub struct Ticket {
    pub id: u64,
    pub response: oneshot::Receiver<Result<Message, UpstreamError>>,
}

impl Pending {
    /// Mints an id and registers a call under it.
    pub fn register(&self, related: Option<Related>) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (done, response) = oneshot::channel();
        self.lock().insert(id, Entry { done, related });
        Ticket { id, response }
    }

    /// Completes a call; returns false if no call had that id.
    pub fn complete(&self, id: u64, outcome: Result<Message, UpstreamError>) -> bool {
        match self.lock().remove(&id) {
            Some(entry) => {
                let _ = entry.done.send(outcome);
                true
            }
            None => false,
        }
    }

    /// Forgets a call (its caller gave up).
    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The related-message sink of a call in flight.
    pub fn related(&self, id: u64) -> Option<Related> {
        self.lock().get(&id).and_then(|e| e.related.clone())
    }

    /// Whether a call with this id is in flight.
    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    /// The related sinks of all calls in flight (for messages that name no call).
    pub fn all_related(&self) -> Vec<Related> {
        self.lock().values().filter_map(|e| e.related.clone()).collect()
    }

    /// Fails every call in flight, e.g. when the process died.
    pub fn fail_all(&self, error: &UpstreamError) {
        let drained: Vec<Entry> = self.lock().drain().map(|(_, e)| e).collect();
        for entry in drained {
            let _ = entry.done.send(Err(error.clone()));
        }
    }

    /// Routes a message read from a shared stream (stdio, legacy SSE): a response completes
    /// its call, progress goes to the call that named its token, a server request goes to
    /// the only call in flight if there is exactly one, and anything else is unsolicited.
    pub fn deliver(&self, message: Message, events: &broadcast::Sender<LinkEvent>, server: &str) {
        match &message.kind {
            MessageKind::Response { id, .. } => match id.as_ref().and_then(RequestId::as_u64) {
                Some(n) if self.contains(n) => {
                    self.complete(n, Ok(message));
                }
                _ => {
                    tracing::debug!(server, id = ?id, "response to no call in flight (late or unknown)")
                }
            },
            MessageKind::Notification { method, params } => {
                if let Some(related) = progress_call(method, params.as_deref()).and_then(|n| self.related(n)) {
                    let _ = related.try_send(message);
                } else {
                    let _ = events.send(LinkEvent::Message(message));
                }
            }
            MessageKind::Request { .. } => {
                let all = self.all_related();
                if all.len() == 1 {
                    let _ = all[0].try_send(message);
                } else {
                    let _ = events.send(LinkEvent::Message(message));
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent, so poisoning is ignored.
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The gateway call a progress notification belongs to: the gateway sets each call's
/// progress token to the call's own id.
fn progress_call(method: &str, params: Option<&RawValue>) -> Option<u64> {
    if method != "notifications/progress" {
        return None;
    }
    RawObject::parse(params?)?.get("progressToken")?.get().parse().ok()
}
