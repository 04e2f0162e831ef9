//! An operator's probe endpoints: `/metrics` (Prometheus, from a `prometheus-client` registry)
//! and `/readyz` (from the caches' health), served over HTTP/1 with hyper, and a small client
//! to scrape them.
//!
//! hyper rather than a framework: kube-client already builds on hyper 1, so two routes cost
//! no new dependency, and the handler stays a plain function of the request.

use std::{convert::Infallible, fmt::Write as _, net::SocketAddr, sync::Arc};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use kache_store::Health;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::BoxError;

/// The `Content-Type` of `/metrics`: the `OpenMetrics` text format that
/// `prometheus_client::encoding::text` writes, which Prometheus reads.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A function that reads one cache's health, such as `move || store.health()`.
pub type HealthCheck = Box<dyn Fn() -> Health + Send + Sync>;

/// What the endpoints read: the registry to encode, and the caches whose health makes
/// readiness.
pub struct Probes {
    /// Encoded on each `GET /metrics`.
    pub registry: Registry,
    /// `/readyz` answers 200 when every cache [`is_ready`](Health::is_ready), else 503; its
    /// body has one line of health per cache either way.
    pub health: Vec<HealthCheck>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("caches", &self.health.len())
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// The answer to one request.
    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (method, path) {
            (&Method::GET, "/metrics") => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => (StatusCode::OK, METRICS_CONTENT_TYPE, text),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain; charset=utf-8",
                        "encoding failed\n".to_owned(),
                    ),
                }
            }
            (&Method::GET, "/readyz") => {
                let healths: Vec<Health> = self.health.iter().map(|check| check()).collect();
                let ready = healths.iter().all(Health::is_ready);
                let mut body = String::from(if ready { "ready\n" } else { "not ready\n" });
                for health in &healths {
                    let _ = writeln!(body, "{health}");
                }
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, "text/plain; charset=utf-8", body)
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "try /metrics or /readyz\n".to_owned(),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        response
    }
}

/// A running probe server; dropping it stops accepting connections.
#[derive(Debug)]
pub struct ProbeServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProbeServer {
    /// Serves `probes` on `listener`, one task per connection.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn start(listener: TcpListener, probes: Probes) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let probes = Arc::new(probes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let probes = Arc::clone(&probes);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = probes.answer(request.method(), request.uri().path());
                        async move { Ok::<_, Infallible>(response) }
                    });
                    // A client that goes away mid-request is its own business.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A scraped answer.
#[derive(Clone, Debug)]
pub struct Scraped {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, empty without one.
    pub content_type: String,
    /// The body, as text.
    pub body: String,
}

/// `GET http://{addr}{path}` on a connection of its own, as a scraper or a kubelet would.
///
/// # Errors
/// When the connection or the request fails, or the body is not UTF-8.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Scraped, BoxError> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    connection.abort();
    Ok(Scraped {
        status,
        content_type,
        body: String::from_utf8(body.to_vec())?,
    })
}
