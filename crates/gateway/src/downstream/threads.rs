//! Serving threads: host connections spread over threads that each run a single-threaded runtime.
//!
//! A work-stealing runtime moves a request's tasks between its threads: the host connection's
//! task, the upstream connection's driver, and the answer may each run on a different thread, with
//! a wake-up (and often a sleeping thread woken to look for work) at every hand-off. Here one
//! acceptor hands each new connection to the serving thread with the fewest open, and everything
//! of that connection stays there: its requests, their upstream exchanges (the pool keeps idle
//! connections per thread, see [`portcullis_transport::shard`]) and their answers. Work started
//! elsewhere (the audit writer, stdio upstreams, the admin API) stays on the calling runtime.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::downstream::http::serve_from;

/// A connection on its way to a serving thread.
type Handoff = (std::net::TcpStream, SocketAddr, Arc<AtomicUsize>);

/// One serving thread as the acceptor sees it.
struct Shard {
    connections: mpsc::UnboundedSender<Handoff>,
    /// Its connections still open.
    open: Arc<AtomicUsize>,
}

/// Serves the listener on `threads` threads until `stop` is cancelled: the calling task's runtime
/// (which should be single-threaded: work it runs for other threads' connections is what crosses
/// between threads) and `threads - 1` more. Returns once every thread has stopped serving.
pub async fn serve_on_threads(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    threads: usize,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let mut shards = Vec::new();
    let mut others = Vec::new();
    let (first, first_rx) = mpsc::unbounded_channel();
    shards.push(Shard { connections: first, open: Arc::new(AtomicUsize::new(0)) });
    for index in 1..threads.max(1) {
        let (connections, rx) = mpsc::unbounded_channel();
        shards.push(Shard { connections, open: Arc::new(AtomicUsize::new(0)) });
        let built = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let (app, halt) = (app.clone(), stop.clone());
        let thread = built.and_then(|runtime| {
            std::thread::Builder::new().name(format!("portcullis-serve-{index}")).spawn(move || {
                portcullis_transport::shard::enter(index);
                runtime.block_on(serve_from(Handed { connections: rx, local }, app, halt))
            })
        });
        match thread {
            Ok(thread) => others.push(thread),
            Err(e) => {
                // Threads already serving stop with this one's failure; nothing has been accepted.
                stop.cancel();
                for thread in others {
                    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                }
                return Err(e);
            }
        }
    }
    let acceptor = tokio::spawn(accept(listener, shards, stop.clone()));
    let mut outcome = serve_from(Handed { connections: first_rx, local }, app, stop.clone()).await;
    stop.cancel();
    let _ = acceptor.await;
    for thread in others {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        let result = match joined {
            Ok(Ok(result)) => result,
            _ => Err(io::Error::other("a serving thread panicked")),
        };
        if outcome.is_ok() {
            outcome = result;
        }
    }
    outcome
}

/// Accepts connections and hands each to the serving thread with the fewest open (the first of
/// them on a tie), until `stop` is cancelled. A thread that has stopped is passed over from then
/// on; when none is left, the gateway stops.
async fn accept(listener: TcpListener, mut shards: Vec<Shard>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, say: waiting lets connections close first.
                tracing::error!(error = %e, "cannot accept a host connection");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Without TCP_NODELAY a streamed response's small writes wait on the host's delayed ACK.
        let _ = stream.set_nodelay(true);
        // Leaving this runtime's reactor: the serving thread registers it with its own.
        let Ok(mut stream) = stream.into_std() else { continue };
        loop {
            // Ties go to the first thread: at one host, the audit writer's thread is the host's.
            let Some(index) = (0..shards.len()).min_by_key(|&i| shards[i].open.load(Ordering::Relaxed)) else {
                // Every serving thread has stopped: so does the gateway.
                tracing::error!("no serving thread is left");
                stop.cancel();
                return;
            };
            let shard = &shards[index];
            shard.open.fetch_add(1, Ordering::Relaxed);
            match shard.connections.send((stream, peer, Arc::clone(&shard.open))) {
                Ok(()) => break,
                Err(mpsc::error::SendError((back, _, open))) => {
                    // That thread has stopped serving (it failed): the others take its share.
                    open.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!(thread = index, "a serving thread has stopped; its share goes to the others");
                    shards.remove(index);
                    stream = back;
                }
            }
        }
    }
}

/// Errors of one connection that went away before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The connections the acceptor hands to one serving thread.
struct Handed {
    connections: mpsc::UnboundedReceiver<Handoff>,
    local: SocketAddr,
}

impl axum::serve::Listener for Handed {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, peer, open)) = self.connections.recv().await else {
                // The acceptor has stopped: so has serving, which ends this listener's use.
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => return (Counted { stream, open }, peer),
                Err(e) => {
                    open.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot serve a host connection");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A host connection that leaves its serving thread's count of open connections when dropped.
struct Counted {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Asks on an open connection which thread serves it.
    async fn served_by(conn: &mut TcpStream) -> String {
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("write");
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen);
            if let Some((_, body)) = text.split_once("\r\n\r\n")
                && body.ends_with('.')
            {
                return body.trim_end_matches('.').to_owned();
            }
        }
    }

    #[tokio::test]
    async fn a_thread_that_stopped_is_passed_over_and_the_gateway_stops_with_the_last() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Thread 0 has stopped (its receiver is gone) and would win on count; thread 1 is busier.
        let (dead, gone) = mpsc::unbounded_channel();
        drop(gone);
        let (alive, mut serving) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicUsize::new(5));
        let shards = vec![
            Shard { connections: dead, open: Arc::new(AtomicUsize::new(0)) },
            Shard { connections: alive, open: Arc::clone(&busy) },
        ];
        let stop = CancellationToken::new();
        let acceptor = tokio::spawn(accept(listener, shards, stop.clone()));
        let first = TcpStream::connect(addr).await.expect("connect");
        let handed = tokio::time::timeout(Duration::from_secs(5), serving.recv()).await;
        let Ok(Some((stream, peer, _))) = handed else { panic!("the connection was not handed to the live thread") };
        assert_eq!(peer, first.local_addr().expect("local"));
        assert_eq!(busy.load(Ordering::Relaxed), 6);
        drop(stream);
        // With no thread left, the next connection stops the gateway.
        drop(serving);
        let _second = TcpStream::connect(addr).await.expect("connect");
        tokio::time::timeout(Duration::from_secs(5), stop.cancelled()).await.expect("the gateway should stop");
        tokio::time::timeout(Duration::from_secs(5), acceptor).await.expect("acceptor ends").expect("no panic");
    }

    #[tokio::test]
    async fn connections_go_to_the_thread_with_the_fewest_open_and_stay_there() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async {
                format!(
                    "{}/{}.",
                    std::thread::current().name().unwrap_or("unnamed"),
                    portcullis_transport::shard::current()
                )
            }),
        );
        let stop = CancellationToken::new();
        let serving = tokio::spawn(serve_on_threads(listener, app, stop.clone(), 3));
        let here = format!("{}/0", std::thread::current().name().unwrap_or("unnamed"));
        let mut conns = Vec::new();
        let mut names = Vec::new();
        for _ in 0..6 {
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            names.push(served_by(&mut conn).await);
            conns.push(conn);
        }
        let expected = [here.as_str(), "portcullis-serve-1/1", "portcullis-serve-2/2"];
        for name in expected {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 2, "{names:?}");
        }
        // A connection keeps its thread for every request.
        for (conn, name) in conns.iter_mut().zip(&names) {
            assert_eq!(&served_by(conn).await, name);
        }
        // Once one of thread 2's connections closes, the next goes there.
        let gone = names.iter().position(|n| n == "portcullis-serve-2/2").expect("one on thread 2");
        drop(conns.remove(gone));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut next = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(served_by(&mut next).await, "portcullis-serve-2/2");
        // Stopping ends every thread (idle connections are closed) and reports success.
        stop.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), serving).await;
        assert!(matches!(outcome, Ok(Ok(Ok(())))), "{outcome:?}");
        let mut buf = [0u8; 16];
        assert_eq!(next.read(&mut buf).await.ok(), Some(0));
    }
}
