//! The server's connection loop (edge): accepts TCP connections, optionally
//! terminates TLS (rustls, with client certificates for mutual TLS), and serves
//! HTTP/2 on each with hyper, as tonic's own server does, plus the bounds a
//! server on an open network needs:
//!
//! - at most `max_connections` at once (more wait in the kernel's backlog);
//! - a connection that sends nothing (no TLS hello, no HTTP/2 preface) within
//!   `handshake_timeout` is closed;
//! - HTTP/2 keep-alive pings close connections whose peer stopped answering;
//! - accept errors (such as running out of file descriptors) back off instead
//!   of spinning;
//! - shutdown stops accepting, asks every connection to finish its calls
//!   (HTTP/2 GOAWAY) and closes whatever is still open after `shutdown_grace`.
//!
//! Side: edge (files, network or terminal: turns outside input into core types and back).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tonic::body::Body;

/// Connection settings.
#[derive(Clone)]
pub struct ConnConfig {
    /// TLS, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Time from accept to the first bytes of TLS and of HTTP/2.
    pub handshake_timeout: Duration,
    /// HTTP/2 ping interval on a connection, and how long an unanswered ping may wait.
    pub keepalive: (Duration, Duration),
    /// Connections served at once.
    pub max_connections: usize,
    /// Streams (calls) at once on one connection.
    pub max_concurrent_streams: u32,
    /// How long shutdown waits for calls in flight before closing connections.
    pub shutdown_grace: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            keepalive: (Duration::from_secs(30), Duration::from_secs(20)),
            max_connections: 10_000,
            max_concurrent_streams: 256,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A TLS or mutual-TLS setup problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TlsSetupError {
    file: String,
    message: String,
}

/// A TLS acceptor from PEM files: the server's certificate chain and key, and,
/// for mutual TLS, the CA whose certificates clients must present.
pub fn tls_acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<tokio_rustls::TlsAcceptor, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let err = |file: &Path, message: String| TlsSetupError { file: file.display().to_string(), message };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert, "no PEM certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, format!("no PEM private key ({e})")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| err(ca, e.to_string()))? {
                roots.add(c.map_err(|e| err(ca, e.to_string()))?).map_err(|e| err(ca, e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err(ca, "no PEM certificate in the file".into()));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| err(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, private).map_err(|e| err(key, e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serve `svc` on `listener` until `shutdown` resolves, then drain within the grace period.
pub async fn run<S>(listener: TcpListener, cfg: ConnConfig, svc: S, shutdown: impl Future<Output = ()>) -> io::Result<()>
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    let cfg = Arc::new(cfg);
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (tcp, _peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: the condition lasts, so back off instead of spinning.
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "accepting a connection failed; backing off");
                    last_accept_error = Some(Instant::now());
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        while conns.try_join_next().is_some() {}
        conns.spawn(connection(tcp, cfg.clone(), svc.clone(), stop_rx.clone(), permit));
    }
    // No new connections from here on.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(cfg.shutdown_grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            grace_s = cfg.shutdown_grace.as_secs_f64(),
            "closing connections still open after the shutdown grace"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

async fn connection<S>(
    tcp: tokio::net::TcpStream,
    cfg: Arc<ConnConfig>,
    svc: S,
    stop: tokio::sync::watch::Receiver<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let deadline = Instant::now() + cfg.handshake_timeout;
    let io = FirstBytes::new(tcp, deadline);
    match &cfg.tls {
        None => serve_h2(io, &cfg, svc, stop).await,
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
            Ok(Ok(tls)) => serve_h2(FirstBytes::new(tls, deadline), &cfg, svc, stop).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        },
    }
}

async fn serve_h2<IO, S>(io: IO, cfg: &ConnConfig, svc: S, mut stop: tokio::sync::watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(cfg.keepalive.0))
        .keep_alive_timeout(cfg.keepalive.1)
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(64 << 10)
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256));
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    let mut conn = pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A stream that fails reading when no byte arrived by its deadline; after
/// the first byte it is the inner stream unchanged.
struct FirstBytes<T> {
    inner: T,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FirstBytes<T> {
    fn new(inner: T, deadline: Instant) -> FirstBytes<T> {
        FirstBytes { inner, deadline: Some(Box::pin(tokio::time::sleep_until(deadline))) }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytes<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.deadline = None,
            Poll::Pending => {
                if let Some(d) = self.deadline.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "nothing received before the handshake deadline")));
                    }
                }
            }
            _ => {}
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytes<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
