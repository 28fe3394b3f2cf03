//! Upstream calls parked while a modern host supplies input.
//!
//! A legacy upstream asks for input with a server-to-client request in the middle
//! of a call; a 2026-07-28 host can only be asked through an `input_required`
//! result and answers by retrying the request. Between the two, the upstream call
//! stays open here, under a single-use, unguessable `requestState` token bound to
//! the route, method and name it was issued for. Expired calls are dropped, which
//! cancels them upstream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use portcullis_transport::UpstreamError;
use portcullis_wire::{Message, RequestId};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::route::Upstream;

/// An upstream call in flight, owned (so it can outlive the host request that started it).
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Message, UpstreamError>> + Send>>;

/// The prefix of every `requestState` the gateway issues.
pub const STATE_PREFIX: &str = "portcullis.parked.";

/// What a token was issued for; a retry must match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub route: String,
    pub method: String,
    pub name: Option<String>,
}

/// A [`Binding`] borrowed from the call it names: made owned only when the call is parked, so
/// a call that is not parked (nearly every one) copies nothing for it.
#[derive(Debug, Clone, Copy)]
pub struct BindingRef<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub name: Option<&'a str>,
}

impl BindingRef<'_> {
    pub fn to_binding(self) -> Binding {
        Binding { route: self.route.to_owned(), method: self.method.to_owned(), name: self.name.map(str::to_owned) }
    }
}

impl Binding {
    pub fn as_ref(&self) -> BindingRef<'_> {
        BindingRef { route: &self.route, method: &self.method, name: self.name.as_deref() }
    }
}

/// A server-to-client request the host has been asked to answer.
pub struct Question {
    /// The key in `inputRequests` / `inputResponses`.
    pub key: String,
    /// The upstream's id for its request, to answer it.
    pub upstream_id: RequestId,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// A parked call.
pub struct Parked {
    pub binding: Binding,
    pub upstream: Arc<Upstream>,
    pub call: CallFuture,
    pub related: mpsc::Receiver<Message>,
    pub questions: Vec<Question>,
    pub deadline: Instant,
}

/// The parked calls of the gateway.
#[derive(Default)]
pub struct ParkedCalls {
    calls: Mutex<HashMap<String, Parked>>,
}

impl ParkedCalls {
    /// Parks a call; returns the token to hand the host as `requestState`.
    pub fn park(&self, parked: Parked) -> String {
        let token = format!("{STATE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        self.lock().insert(token.clone(), parked);
        token
    }

    /// Takes a parked call out (a token is good for one retry).
    pub fn take(&self, token: &str) -> Option<Parked> {
        self.lock().remove(token)
    }

    /// Drops the calls whose deadline passed (cancelling them upstream); returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let expired: Vec<Parked> = {
            let mut calls = self.lock();
            let keys: Vec<String> = calls.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k.clone()).collect();
            keys.iter().filter_map(|k| calls.remove(k)).collect()
        };
        expired.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The capability a host must have declared to be asked this method.
pub fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}
