//! A scripted HTTP responder that speaks the Kubernetes list/watch wire format.
//!
//! For what a real v1.20 API server cannot show: streaming lists, malformed and truncated
//! streams, precise fault timing. Each request gets the next scripted reply, in order; once the
//! script is empty, requests get a watch stream that stays open and silent.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list};
//! use kube_client::Api;
//!
//! # async fn run() {
//! let server = Scripted::start([
//!     list(vec![cm("a", "1")], Some("5"), None),
//!     Reply::Stream(vec![event("ADDED", cm("b", "6")), bookmark("9", false)], End::Close),
//! ])
//! .await;
//! let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
//! // ... run the code under test against `api`, then check `server.requests()` ...
//! # }
//! ```

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A whole response with this status and JSON body.
    Json(u16, Value),
    /// A chunked watch stream of these lines (each one event), then the given end.
    Stream(Vec<String>, End),
}

/// How a scripted watch stream ends.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// The server closes the stream cleanly, as at a watch timeout.
    Close,
    /// The connection is cut in the middle of a chunk.
    Truncate,
    /// The stream stays open and silent.
    Hang,
}

/// A request the responder received.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request path.
    pub path: String,
    /// The decoded query parameters.
    pub query: HashMap<String, String>,
}

impl Request {
    /// Whether this is a WATCH (`watch=true`).
    #[must_use]
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|v| v == "true")
    }

    /// One query parameter.
    #[must_use]
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Request>>,
    request_seen: Notify,
}

/// The responder; it stops when dropped.
#[derive(Debug)]
pub struct Scripted {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    /// Starts answering on a loopback port with `script`, one reply per request.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start(script: impl IntoIterator<Item = Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().extend(script);
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                // Silent streams are parked here so that their sockets stay open.
                let mut parked = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    if let Some(socket) = serve(socket, &shared).await {
                        parked.push(socket);
                    }
                }
            }
        });
        Self { addr, shared, task }
    }

    /// Adds replies to the end of the script.
    ///
    /// # Panics
    /// If a holder of the lock panicked.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// A client for this responder.
    ///
    /// # Panics
    /// Never in practice: the URL is well formed.
    #[must_use]
    pub fn client(&self) -> kube_client::Client {
        kube_client::Client::try_from(self.config()).expect("client")
    }

    /// A client configuration for this responder, for clients built another way (such as
    /// [`RequestLog::client`](crate::RequestLog::client)).
    ///
    /// # Panics
    /// Never in practice: the URL is well formed.
    #[must_use]
    pub fn config(&self) -> kube_client::Config {
        kube_client::Config::new(format!("http://{}", self.addr).parse().expect("url"))
    }

    /// The requests received so far.
    ///
    /// # Panics
    /// If a holder of the lock panicked.
    #[must_use]
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests have arrived.
    ///
    /// # Panics
    /// When they do not arrive within 10 s.
    pub async fn wait_for_requests(&self, n: usize) -> Vec<Request> {
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                let seen = self.shared.request_seen.notified();
                let requests = self.requests();
                if requests.len() >= n {
                    return requests;
                }
                seen.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} requests, got {:?}", self.requests()))
    }
}

async fn serve(mut socket: TcpStream, shared: &Shared) -> Option<TcpStream> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.lines().next()?.split(' ').nth(1)?.to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = crate::requests::query_params(query).collect();
    shared.requests.lock().unwrap().push(Request {
        path: path.to_owned(),
        query,
    });
    shared.request_seen.notify_waiters();
    let reply = shared.script.lock().unwrap().pop_front();
    match reply {
        Some(Reply::Json(status, body)) => {
            let body = body.to_string();
            let head = format!(
                "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            socket.write_all(head.as_bytes()).await.ok()?;
            socket.write_all(body.as_bytes()).await.ok()?;
            socket.shutdown().await.ok()?;
            None
        }
        Some(Reply::Stream(lines, end)) => stream(socket, &lines, end).await,
        None => stream(socket, &[], End::Hang).await,
    }
}

async fn stream(mut socket: TcpStream, lines: &[String], end: End) -> Option<TcpStream> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    socket.write_all(head.as_bytes()).await.ok()?;
    for line in lines {
        let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
        socket.write_all(chunk.as_bytes()).await.ok()?;
    }
    socket.flush().await.ok()?;
    match end {
        End::Close => {
            socket.write_all(b"0\r\n\r\n").await.ok()?;
            socket.shutdown().await.ok()?;
            None
        }
        End::Truncate => {
            // A chunk header promising more bytes than ever arrive.
            socket.write_all(b"40\r\n{\"type\":\"ADD").await.ok()?;
            socket.flush().await.ok()?;
            None
        }
        End::Hang => Some(socket),
    }
}

/// A `ConfigMap` in namespace `ns`.
#[must_use]
pub fn cm(name: &str, rv: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": format!("uid-{name}")},
        "data": {"key": "value"}
    })
}

/// A `ConfigMap` list page.
#[must_use]
pub fn list(items: Vec<Value>, rv: Option<&str>, continue_token: Option<&str>) -> Reply {
    let mut metadata = json!({});
    if let Some(rv) = rv {
        metadata["resourceVersion"] = json!(rv);
    }
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    Reply::Json(
        200,
        json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": metadata, "items": Value::Array(items)}),
    )
}

/// One watch event line.
#[must_use]
#[allow(clippy::needless_pass_by_value)] // call sites read better passing a fresh value
pub fn event(kind: &str, object: Value) -> String {
    json!({"type": kind, "object": object}).to_string()
}

/// A BOOKMARK line; `initial_end` adds the `k8s.io/initial-events-end` annotation.
#[must_use]
pub fn bookmark(rv: &str, initial_end: bool) -> String {
    let mut metadata = json!({"resourceVersion": rv});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event(
        "BOOKMARK",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}),
    )
}

/// A Status object, as in an error response or an ERROR event.
#[must_use]
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}
