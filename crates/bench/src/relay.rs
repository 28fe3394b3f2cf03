//! The reference hop: an HTTP/1.1 relay with no logic at all, run by this binary as a process of
//! its own (`portcullis-bench --relay-to ADDR`), in front of the same demo as the gateways.
//!
//! It is what one L7 hop costs on this machine and little more: host connections are spread over
//! one single-threaded runtime per core as the gateway spreads its own (the first thread also
//! accepts), and each request is passed to the upstream on one keep-alive connection of that host
//! connection's own, head and body streamed through unread (only hop-by-hop headers dropped) and the
//! answer streamed back the same way. No JSON, no routing, no pooling across hosts, no controls,
//! no audit writer on the first thread: what the gateway adds above this relay is mostly its own
//! work; below it lies the machine's cost of a hop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A connection on its way to a serving thread, with that thread's count of open connections.
type Handoff = (std::net::TcpStream, Arc<AtomicUsize>);

/// Relays what `listener` accepts to `upstream`, laid out as the gateway serves: one
/// single-threaded runtime per core, the first of them (this thread's) also accepting and handing
/// each connection to the thread with the fewest open (the first on a tie); `ready` is called
/// once connections are being accepted. Returns only if a serving thread cannot start.
fn run(listener: std::net::TcpListener, upstream: SocketAddr, ready: impl FnOnce()) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    listener.set_nonblocking(true)?;
    let mut shards = Vec::new();
    let (first, first_rx) = mpsc::unbounded_channel::<Handoff>();
    shards.push((first, Arc::new(AtomicUsize::new(0))));
    for index in 1..cores {
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        shards.push((tx, Arc::new(AtomicUsize::new(0))));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name(format!("relay-{index}"))
            .spawn(move || runtime.block_on(serve_handed(rx, upstream)))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        tokio::spawn(serve_handed(first_rx, upstream));
        ready();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // A connection that went away before it was accepted.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of file descriptors, say: connections closing make room.
                    eprintln!("ERROR relay: cannot accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(stream) = stream.into_std() else { continue };
            let Some((queue, open)) = shards.iter().min_by_key(|(_, open)| open.load(Ordering::Relaxed)) else {
                anyhow::bail!("no relay thread");
            };
            open.fetch_add(1, Ordering::Relaxed);
            queue.send((stream, Arc::clone(open))).map_err(|_| anyhow::anyhow!("a relay thread has stopped"))?;
        }
    })
}

/// Serves the host connections handed to this thread.
async fn serve_handed(mut connections: mpsc::UnboundedReceiver<Handoff>, upstream: SocketAddr) {
    while let Some((stream, open)) = connections.recv().await {
        let Ok(stream) = TcpStream::from_std(stream) else {
            open.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(async move {
            // The host connection's own upstream connection, opened at its first request.
            let link: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::new(Mutex::new(None));
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let link = Arc::clone(&link);
                async move { Ok::<_, Infallible>(relay(&link, upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Passes one request to the upstream and its answer back. A kept-alive upstream connection
/// found closed before the request went out is replaced once; an upstream that cannot be reached
/// (or fails the exchange) is a 502.
async fn relay(
    link: &Mutex<Option<SendRequest<Incoming>>>,
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> Answer {
    strip_hop_by_hop(req.headers_mut());
    let mut link = link.lock().await;
    let mut req = Some(req);
    for _ in 0..2 {
        if link.as_ref().is_none_or(SendRequest::is_closed) {
            *link = connect(upstream).await;
        }
        let (Some(sender), Some(request)) = (link.as_mut(), req.take()) else { break };
        if sender.ready().await.is_err() {
            // Nothing was sent: the request goes out on a new connection.
            *link = None;
            req = Some(request);
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                return resp.map(BodyExt::boxed);
            }
            Err(mut e) => {
                *link = None;
                // Returned unsent: another try; else it may have reached the upstream.
                req = e.take_message();
            }
        }
    }
    *link = None;
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

/// Drops the headers that describe one connection rather than the message (RFC 9110 §7.6.1):
/// each side of the relay keeps its own connection alive, or not.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    for name in named.iter().map(String::as_str).chain([
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ]) {
        headers.remove(name);
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

    /// An upstream that answers each request with its method, path and body, and its
    /// `Mcp-Session-Id` header as a header of the answer.
    async fn echo_upstream(keep_alive: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let head = format!("{} {} ", req.method(), req.uri().path());
                        let session = req.headers().get("mcp-session-id").cloned();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let text = [head.as_bytes(), &body[..]].concat();
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        if let Some(session) = session {
                            resp.headers_mut().insert("mcp-session-id", session);
                        }
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
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

    /// Sends `bodies` as POSTs to `/mcp` on one keep-alive connection, each with an `Mcp-Session-Id`;
    /// the answers' status, `Mcp-Session-Id` and text. Fails rather than hangs.
    async fn post_all(relay: SocketAddr, bodies: &[&str]) -> Vec<(u16, Option<String>, String)> {
        tokio::time::timeout(std::time::Duration::from_secs(10), exchange(relay, bodies))
            .await
            .expect("the relay answers")
    }

    async fn exchange(relay: SocketAddr, bodies: &[&str]) -> Vec<(u16, Option<String>, String)> {
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
            req.headers_mut().insert("mcp-session-id", http::HeaderValue::from_static("s-1"));
            let resp = sender.send_request(req).await.expect("answer");
            let status = resp.status().as_u16();
            let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let text = resp.into_body().collect().await.expect("body").to_bytes();
            out.push((status, session, String::from_utf8_lossy(&text).into_owned()));
        }
        out
    }

    #[tokio::test]
    async fn requests_pass_through_unchanged_on_one_connection() {
        let relay = start(echo_upstream(true).await);
        let answers = post_all(relay, &["{\"a\":1}", "second"]).await;
        let session = Some("s-1".to_owned());
        assert_eq!(
            answers,
            [(200, session.clone(), "POST /mcp {\"a\":1}".to_owned()), (200, session, "POST /mcp second".to_owned())]
        );
    }

    #[tokio::test]
    async fn an_upstream_connection_closed_after_each_answer_is_replaced() {
        let relay = start(echo_upstream(false).await);
        let answers = post_all(relay, &["1", "2", "3"]).await;
        let texts: Vec<_> = answers.iter().map(|(status, _, text)| (*status, text.as_str())).collect();
        assert_eq!(texts, [(200, "POST /mcp 1"), (200, "POST /mcp 2"), (200, "POST /mcp 3")]);
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_502() {
        // A port that was free a moment ago: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let relay = start(closed);
        assert_eq!(post_all(relay, &["x"]).await, [(502, None, String::new())]);
    }
}
