//! The reference hop: an HTTP/1.1 relay with no logic at all, run by this binary as a process of
//! its own (`portcullis-bench --relay-to ADDR`), in front of the same demo as the gateways.
//!
//! It is what one L7 hop costs on this machine and nothing more: each host connection is served on
//! one of `cores` single-threaded runtimes (as the gateway serves its own), and each of its
//! requests is passed to the upstream on one keep-alive connection of that host connection's own,
//! head and body streamed through unread and the answer streamed back the same way. No JSON, no
//! routing, no pooling across hosts, no controls: the gateway's added latency above this relay's
//! is the gateway's own work; below it lies only the machine's cost of a hop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

/// What the relay answers with: the upstream's body, or an empty one when the upstream failed.
type Answer = Response<BoxBody<Bytes, hyper::Error>>;

/// Serves until killed: prints `relay listening on http://ADDR` on stderr once ready.
pub fn serve(upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind the relay")?;
    let addr = listener.local_addr()?;
    run(listener, upstream, || eprintln!("relay listening on http://{addr}"))
}

/// Relays what `listener` accepts to `upstream`, on one thread per core; `ready` is called once
/// connections are being accepted. Returns only if accepting fails.
fn run(listener: std::net::TcpListener, upstream: SocketAddr, ready: impl FnOnce()) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    listener.set_nonblocking(true)?;
    let mut queues = Vec::new();
    for index in 0..cores {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        queues.push(tx);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name(format!("relay-{index}"))
            .spawn(move || runtime.block_on(serve_handed(rx, upstream)))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        ready();
        // Round robin: the bench opens its connections at the start of a slice and keeps them.
        for turn in 0.. {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let Some(queue) = queues.get(turn % queues.len()) else { break };
            queue.send(stream.into_std()?).context("a relay thread has stopped")?;
        }
        Ok(())
    })
}

/// Serves the host connections handed to this thread.
async fn serve_handed(mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>, upstream: SocketAddr) {
    while let Some(stream) = connections.recv().await {
        let Ok(stream) = TcpStream::from_std(stream) else { continue };
        tokio::spawn(async move {
            // The host connection's own upstream connection, opened at its first request.
            let link: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::new(Mutex::new(None));
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let link = Arc::clone(&link);
                async move { Ok::<_, Infallible>(relay(&link, upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Passes one request to the upstream and its answer back (502 if the upstream cannot be reached).
async fn relay(link: &Mutex<Option<SendRequest<Incoming>>>, upstream: SocketAddr, req: Request<Incoming>) -> Answer {
    let mut link = link.lock().await;
    if link.as_ref().is_none_or(SendRequest::is_closed) {
        *link = connect(upstream).await;
    }
    let sent = match link.as_mut() {
        Some(sender) => match sender.ready().await {
            Ok(()) => sender.send_request(req).await.ok(),
            Err(_) => None,
        },
        None => None,
    };
    match sent {
        Some(resp) => resp.map(BodyExt::boxed),
        None => {
            *link = None;
            let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    }
}

async fn connect(upstream: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// An upstream that answers each request with its method, path and body.
    async fn echo_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let head = format!("{} {} ", req.method(), req.uri().path());
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let text = [head.as_bytes(), &body[..]].concat();
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Starts a relay in front of `upstream` on threads of its own.
    fn start(upstream: SocketAddr) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || run(listener, upstream, || ()));
        addr
    }

    /// Sends `bodies` as POSTs to `/mcp` on one keep-alive connection; the answers' status and text.
    async fn post_all(relay: SocketAddr, bodies: &[&str]) -> Vec<(u16, String)> {
        let stream = TcpStream::connect(relay).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        let mut out = Vec::new();
        for body in bodies {
            sender.ready().await.expect("ready");
            let mut req = Request::new(Full::new(Bytes::from(body.to_string())));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = http::Uri::from_static("/mcp");
            req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("127.0.0.1"));
            let resp = sender.send_request(req).await.expect("answer");
            let status = resp.status().as_u16();
            let text = resp.into_body().collect().await.expect("body").to_bytes();
            out.push((status, String::from_utf8_lossy(&text).into_owned()));
        }
        out
    }

    #[tokio::test]
    async fn requests_pass_through_unchanged_on_one_connection() {
        let relay = start(echo_upstream().await);
        let answers = post_all(relay, &["{\"a\":1}", "second"]).await;
        assert_eq!(answers, [(200, "POST /mcp {\"a\":1}".to_owned()), (200, "POST /mcp second".to_owned())]);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502() {
        // A port that was free a moment ago: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let relay = start(closed);
        assert_eq!(post_all(relay, &["x"]).await, [(502, String::new())]);
    }
}
