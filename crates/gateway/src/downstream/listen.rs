//! Route events turned into host notifications: a legacy session's listening
//! stream, and a modern host's `subscriptions/listen` stream.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use portcullis_wire::envelope::notification_bytes;
use portcullis_wire::object::raw;
use portcullis_wire::{RawObject, RequestId, meta};
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};

use crate::gateway::{Gateway, Host};
use crate::route::{ListKind, RouteEvent};
use crate::session::Session;

/// Feeds a legacy session's listening stream until the session closes, then ends
/// the session's resource subscriptions.
pub async fn feed_session(gateway: Arc<Gateway>, session: Arc<Session>) {
    let mut events = session.route.events.subscribe();
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = session.closed.cancelled() => break,
        };
        let bytes = match event {
            Ok(RouteEvent::ListChanged(kind)) => notification_bytes(kind.notification(), None),
            Ok(RouteEvent::ResourceUpdated { uri, params }) => {
                if !session.is_subscribed(&uri) {
                    continue;
                }
                notification_bytes("notifications/resources/updated", Some(&raw(params.to_string())))
            }
            Ok(RouteEvent::Log(bytes)) => bytes.to_vec(),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        session.push_listen(Bytes::from(bytes));
    }
    let host = Host {
        route: Arc::clone(&session.route),
        version: session.version,
        session: Some(Arc::clone(&session)),
        capabilities: None,
        principal: Arc::clone(&session.principal),
        credential: None,
        trace: None,
    };
    for uri in session.take_subscriptions() {
        gateway.unsubscribe_resource(&host, &uri).await;
    }
}

/// A modern host's subscription filter (`params.notifications`).
#[derive(Debug, Default)]
pub struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: HashSet<String>,
}

impl Filter {
    /// Reads `params.notifications`; `None` if it is missing or not an object.
    pub fn parse(params: Option<&RawValue>) -> Option<Self> {
        let n = params.and_then(RawObject::parse)?.get_object("notifications")?;
        let flag = |k: &str| n.get(k).is_some_and(|v| v.get() == "true");
        let uris: Vec<String> =
            n.get("resourceSubscriptions").and_then(|v| serde_json::from_str(v.get()).ok()).unwrap_or_default();
        Some(Self {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris: uris.into_iter().collect(),
        })
    }

    /// The honoured subset, as the acknowledgement reports it.
    fn acknowledged(&self) -> serde_json::Value {
        let mut n = serde_json::Map::new();
        if self.tools {
            n.insert("toolsListChanged".into(), true.into());
        }
        if self.prompts {
            n.insert("promptsListChanged".into(), true.into());
        }
        if self.resources {
            n.insert("resourcesListChanged".into(), true.into());
        }
        if !self.uris.is_empty() {
            let mut uris: Vec<&String> = self.uris.iter().collect();
            uris.sort();
            n.insert("resourceSubscriptions".into(), serde_json::json!(uris));
        }
        serde_json::Value::Object(n)
    }

    fn wants(&self, event: &RouteEvent) -> bool {
        match event {
            RouteEvent::ListChanged(ListKind::Tools) => self.tools,
            RouteEvent::ListChanged(ListKind::Prompts) => self.prompts,
            RouteEvent::ListChanged(ListKind::Resources | ListKind::ResourceTemplates) => self.resources,
            RouteEvent::ResourceUpdated { uri, .. } => self.uris.iter().any(|u| uri.starts_with(u.as_str())),
            RouteEvent::Log(_) => false,
        }
    }
}

/// Runs a `subscriptions/listen` stream: the acknowledgement, then matching notifications,
/// each carrying the listen request's id; ends when the host goes away. Resource
/// subscriptions are held upstream for as long as the stream lives.
pub async fn run_subscription(
    gateway: Arc<Gateway>,
    host: Host,
    id: RequestId,
    filter: Filter,
    out: mpsc::Sender<Bytes>,
) {
    let mut events = host.route.events.subscribe();
    let mut held = Vec::new();
    for uri in &filter.uris {
        match gateway.subscribe_resource(&host, uri).await {
            Ok(()) => held.push(uri.clone()),
            Err(e) => tracing::debug!(uri, error = %e, "resource subscription not honoured"),
        }
    }
    let mut filter = filter;
    filter.uris.retain(|u| held.contains(u));
    stream_subscription(&id, &filter, &mut events, &out).await;
    for uri in held {
        gateway.unsubscribe_resource(&host, &uri).await;
    }
}

async fn stream_subscription(
    id: &RequestId,
    filter: &Filter,
    events: &mut broadcast::Receiver<RouteEvent>,
    out: &mpsc::Sender<Bytes>,
) {
    let sub_meta = |extra: &mut RawObject| {
        let mut m = RawObject::default();
        m.insert_raw(meta::SUBSCRIPTION_ID, raw(id.as_json().to_owned()));
        extra.insert_object("_meta", &m);
    };
    let mut ack = RawObject::default();
    sub_meta(&mut ack);
    ack.insert("notifications", &filter.acknowledged());
    let bytes = notification_bytes("notifications/subscriptions/acknowledged", Some(&ack.to_raw()));
    if out.send(Bytes::from(bytes)).await.is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            () = out.closed() => return,
        };
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !filter.wants(&event) {
            continue;
        }
        let bytes = match &event {
            RouteEvent::ListChanged(kind) => {
                let mut p = RawObject::default();
                sub_meta(&mut p);
                notification_bytes(kind.notification(), Some(&p.to_raw()))
            }
            RouteEvent::ResourceUpdated { params, .. } => {
                let mut p = RawObject::parse_str(params).unwrap_or_default();
                sub_meta(&mut p);
                notification_bytes("notifications/resources/updated", Some(&p.to_raw()))
            }
            RouteEvent::Log(_) => continue,
        };
        if out.send(Bytes::from(bytes)).await.is_err() {
            return;
        }
    }
}
