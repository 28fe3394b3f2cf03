//! Request-scoped notifications (`notifications/progress`, `notifications/message`) and where they go.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::jsonrpc::encode_notification;
use crate::meta::{LogLevel, SUBSCRIPTION_ID};

/// Where encoded messages for the client go: stdout's writer, or one request's SSE stream.
pub type Outbox = mpsc::Sender<Vec<u8>>;

/// How many encoded messages may wait for a slow reader before senders wait.
pub const OUTBOX_CAPACITY: usize = 256;

/// Sends the notifications one request opted in to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier<'a> {
    outbox: Option<&'a Outbox>,
    progress_token: Option<&'a RawValue>,
    log_level: Option<LogLevel>,
}

impl<'a> Notifier<'a> {
    /// A notifier for one request; without an outbox every notification is dropped.
    pub fn new(
        outbox: Option<&'a Outbox>,
        progress_token: Option<&'a RawValue>,
        log_level: Option<LogLevel>,
    ) -> Notifier<'a> {
        Notifier { outbox, progress_token, log_level }
    }

    /// Reports progress when the request carried a progress token.
    pub async fn progress(&self, progress: u64, total: u64, message: &str) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Progress<'p> {
            progress_token: &'p RawValue,
            progress: u64,
            total: u64,
            message: &'p str,
        }
        if let (Some(outbox), Some(token)) = (self.outbox, self.progress_token) {
            let params = Progress { progress_token: token, progress, total, message };
            // A closed outbox means the client went away; the request is then cancelled or moot.
            let _ = outbox.send(encode_notification("notifications/progress", &params)).await;
        }
    }

    /// Acknowledges a `subscriptions/listen`, honouring none of the requested notification types.
    pub async fn acknowledge_subscription(&self, subscription_id: &RawValue) {
        if let Some(outbox) = self.outbox {
            let params = serde_json::json!({
                "_meta": { SUBSCRIPTION_ID: subscription_id },
                "notifications": {},
            });
            let _ = outbox.send(encode_notification("notifications/subscriptions/acknowledged", &params)).await;
        }
    }

    /// Sends a log message when the request's (or legacy session's) log level lets it through.
    pub async fn log(&self, level: LogLevel, data: Value) {
        #[derive(Serialize)]
        struct Message {
            level: LogLevel,
            logger: &'static str,
            data: Value,
        }
        let enabled = self.log_level.is_some_and(|threshold| level >= threshold);
        if let (Some(outbox), true) = (self.outbox, enabled) {
            let params = Message { level, logger: "portcullis-demo", data };
            let _ = outbox.send(encode_notification("notifications/message", &params)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sends_progress_only_with_a_token() {
        let (tx, mut rx) = mpsc::channel(4);
        Notifier::new(Some(&tx), None, None).progress(1, 2, "half").await;
        assert!(rx.try_recv().is_err());
        let token = RawValue::from_string("\"tok\"".to_owned()).expect("json");
        Notifier::new(Some(&tx), Some(&token), None).progress(1, 2, "half").await;
        let sent: Value = serde_json::from_slice(&rx.try_recv().expect("sent")).expect("json");
        assert_eq!(sent["method"], "notifications/progress");
        assert_eq!(sent["params"]["progressToken"], "tok");
        assert_eq!(sent["params"]["total"], 2);
    }

    #[tokio::test]
    async fn logs_only_at_or_above_the_threshold() {
        let (tx, mut rx) = mpsc::channel(4);
        Notifier::new(Some(&tx), None, None).log(LogLevel::Emergency, Value::Null).await;
        assert!(rx.try_recv().is_err(), "no level set means no log messages");
        let notifier = Notifier::new(Some(&tx), None, Some(LogLevel::Warning));
        notifier.log(LogLevel::Info, Value::Null).await;
        assert!(rx.try_recv().is_err());
        notifier.log(LogLevel::Error, "boom".into()).await;
        let sent: Value = serde_json::from_slice(&rx.try_recv().expect("sent")).expect("json");
        assert_eq!(sent["params"]["level"], "error");
    }
}
