//! The stdio transport: newline-delimited JSON-RPC, one connection per process.
//!
//! Calls that may take time (`tools/call`, `subscriptions/listen`) run as their own tasks so a
//! later `notifications/cancelled` can reach them; everything else is answered in order.
//! One writer task owns the output, so responses and notifications never interleave mid-line.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorKind;
use crate::jsonrpc::{Message, Request, encode_error};
use crate::notifier::{OUTBOX_CAPACITY, Outbox};
use crate::server::{Server, is_long_running};
use crate::session::Session;

/// Serves one client over `input`/`output` until `input` ends and the calls in flight have answered.
pub async fn serve<R, W>(input: R, output: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let server = Arc::new(Server::new());
    let session = Arc::new(Session::new());
    let (outbox, pending) = mpsc::channel(OUTBOX_CAPACITY);
    let writer = tokio::spawn(write_lines(output, pending));
    let mut input = BufReader::new(input);
    let mut tasks = JoinSet::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let message = line.trim_ascii();
        if message.is_empty() {
            continue;
        }
        match Message::parse(message) {
            Err(rejected) => {
                let _ = outbox.send(encode_error(rejected.id.as_deref(), &rejected.error)).await;
            }
            Ok(Message::Notification(notification)) => server.notify(&session, &notification),
            Ok(Message::Response) => {}
            Ok(Message::Request(request)) if is_long_running(&request.method) => {
                // Registered before the task runs, so a cancellation that overtakes it still lands.
                let inflight = session.track(&request.id);
                let (server, session, outbox) = (server.clone(), session.clone(), outbox.clone());
                tasks.spawn(async move {
                    respond(&server, &session, &request, Some(inflight.token()), &outbox).await;
                });
            }
            Ok(Message::Request(request)) => respond(&server, &session, &request, None, &outbox).await,
        }
    }
    // Closing stdin is how a stdio client shuts the server down: end subscriptions, but let calls
    // in flight answer, so `… | portcullis-demo` scripts see every response.
    session.close();
    while tasks.join_next().await.is_some() {}
    drop(outbox);
    writer.await.map_err(io::Error::other)?
}

async fn respond(
    server: &Server,
    session: &Session,
    request: &Request,
    cancel: Option<&CancellationToken>,
    outbox: &Outbox,
) {
    let reply = match server.handle(session, request, Some(outbox), cancel).await {
        Ok(bytes) => bytes,
        // A cancelled request gets no response.
        Err(e) if e.kind == ErrorKind::Cancelled => return,
        Err(e) => encode_error(Some(&request.id), &e),
    };
    // A closed outbox means stdout is gone; nothing is left to tell.
    let _ = outbox.send(reply).await;
}

/// Writes each message as one line, flushing whenever no more are waiting.
async fn write_lines<W: AsyncWrite + Unpin>(output: W, mut pending: mpsc::Receiver<Vec<u8>>) -> io::Result<()> {
    let mut output = BufWriter::new(output);
    while let Some(message) = pending.recv().await {
        output.write_all(&message).await?;
        output.write_all(b"\n").await?;
        while let Ok(message) = pending.try_recv() {
            output.write_all(&message).await?;
            output.write_all(b"\n").await?;
        }
        output.flush().await?;
    }
    output.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::time::Duration;
    use tokio::io::{DuplexStream, Lines};

    struct Client {
        to_server: DuplexStream,
        from_server: Lines<BufReader<DuplexStream>>,
        served: tokio::task::JoinHandle<io::Result<()>>,
    }

    impl Client {
        fn start() -> Client {
            let (to_server, server_in) = tokio::io::duplex(64 * 1024);
            let (server_out, from_server) = tokio::io::duplex(64 * 1024);
            let served = tokio::spawn(serve(server_in, server_out));
            Client { to_server, from_server: BufReader::new(from_server).lines(), served }
        }

        async fn send(&mut self, message: Value) {
            let mut line = message.to_string();
            line.push('\n');
            self.to_server.write_all(line.as_bytes()).await.expect("write");
        }

        async fn recv(&mut self) -> Value {
            let line = self.from_server.next_line().await.expect("read").expect("a line");
            serde_json::from_str(&line).expect("server writes json")
        }

        async fn call(&mut self, message: Value) -> Value {
            self.send(message).await;
            self.recv().await
        }
    }

    #[tokio::test]
    async fn legacy_session_initializes_then_calls_echo() {
        let mut c = Client::start();
        let init = c
            .call(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}))
            .await;
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
        c.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).await;
        let echo = c
            .call(json!({"jsonrpc":"2.0","id":"e","method":"tools/call",
                "params":{"name":"echo","arguments":{"text":"héllo \"x\""}}}))
            .await;
        assert_eq!(echo["id"], "e");
        assert_eq!(echo["result"]["content"][0]["text"], "héllo \"x\"");
        assert!(echo["result"].get("resultType").is_none());
    }

    #[tokio::test]
    async fn garbage_lines_get_parse_errors_and_blank_lines_are_skipped() {
        let mut c = Client::start();
        c.to_server.write_all(b"\n{oops\n").await.expect("write");
        let err = c.recv().await;
        assert_eq!(err["error"]["code"], -32700);
        assert_eq!(err["id"], Value::Null);
    }

    #[tokio::test]
    async fn slow_call_reports_progress_then_completes() {
        let mut c = Client::start();
        c.send(json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{
            "_meta":{"progressToken":"tok"},"name":"slow","arguments":{"ms":30,"steps":3}}}))
            .await;
        for step in 1..=3 {
            let progress = c.recv().await;
            assert_eq!(progress["method"], "notifications/progress");
            assert_eq!(progress["params"]["progressToken"], "tok");
            assert_eq!(progress["params"]["progress"], step);
        }
        let done = c.recv().await;
        assert_eq!(done["id"], 5);
        assert_eq!(done["result"]["content"][0]["text"], "Slept 30 ms in 3 steps");
    }

    #[tokio::test]
    async fn cancelled_slow_call_gets_no_response() {
        let mut c = Client::start();
        c.send(json!({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{
            "name":"slow","arguments":{"ms":400,"steps":1}}}))
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.send(json!({"jsonrpc":"2.0","method":"notifications/cancelled",
            "params":{"requestId":"long","reason":"test"}}))
            .await;
        // Uncancelled, the call would answer at 400 ms.
        let silence = tokio::time::timeout(Duration::from_millis(800), c.recv()).await;
        assert!(silence.is_err(), "the cancelled call must not answer: {silence:?}");
        let next = c.call(json!({"jsonrpc":"2.0","id":"after","method":"ping"})).await;
        assert_eq!(next["id"], "after");
    }

    #[tokio::test]
    async fn modern_listen_is_acknowledged_and_ends_silently_on_cancel() {
        let mut c = Client::start();
        c.send(json!({"jsonrpc":"2.0","id":9,"method":"subscriptions/listen","params":{
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                     "io.modelcontextprotocol/clientCapabilities":{}},
            "notifications":{"toolsListChanged":true}}}))
            .await;
        let ack = c.recv().await;
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 9);
        assert_eq!(ack["params"]["notifications"], json!({}));
        c.send(json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}})).await;
        let next = c.call(json!({"jsonrpc":"2.0","id":10,"method":"ping"})).await;
        assert_eq!(next["id"], 10);
    }

    #[tokio::test]
    async fn closing_stdin_lets_calls_in_flight_answer() {
        let mut c = Client::start();
        c.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
            "name":"slow","arguments":{"ms":50}}}))
            .await;
        c.to_server.shutdown().await.expect("close stdin");
        let done = c.recv().await;
        assert_eq!(done["result"]["content"][0]["text"], "Slept 50 ms in 1 steps");
    }

    #[tokio::test]
    async fn closing_stdin_ends_open_subscriptions_and_the_server() {
        let mut c = Client::start();
        c.send(json!({"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                     "io.modelcontextprotocol/clientCapabilities":{}},
            "notifications":{}}}))
            .await;
        let _ack = c.recv().await;
        drop(c.to_server);
        tokio::time::timeout(Duration::from_secs(5), c.served).await.expect("server stops").expect("task").expect("io");
    }
}
