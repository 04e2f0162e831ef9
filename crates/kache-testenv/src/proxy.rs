use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
};

use kube_client::Client;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{Error, Result};

/// A loopback TCP proxy in front of the API server that can cut every connection and refuse
/// new ones, as a network partition would, while the server itself keeps running.
///
/// Clients made with [`Proxy::client`] reach the server through it; other clients (such as
/// [`TestEnv::client`](crate::TestEnv::client)) keep working during a cut, so a test can
/// change the world while a watcher is cut off from it.
///
/// ```no_run
/// use kache_testenv::{Proxy, TestEnv};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let env = TestEnv::shared().await?;
/// let proxy = Proxy::start(env.server_url()).await?;
/// let cut_off = proxy.client(env.config())?; // give this one to the code under test
/// proxy.cut(); // its connections drop, new ones are refused
/// // ... change objects through env.client() ...
/// proxy.restore(); // it reconnects and must catch up
/// # Ok(()) }
/// ```
///
/// In front of several servers ([`Proxy::balance`]) it is a load balancer that sends each new
/// connection to the server chosen with [`route_to`](Proxy::route_to).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// The server new connections go to, an index into the targets.
    route: Arc<AtomicUsize>,
    targets: usize,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    /// Bytes the server has sent through the proxy (TLS records included).
    from_server: Arc<AtomicU64>,
    /// Holds back what the servers send while paused.
    gate: Arc<Gate>,
}

/// Whether the bytes from the servers flow, and the connections waiting for them to.
#[derive(Debug, Default)]
struct Gate {
    paused: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
}

impl Gate {
    fn poll_open(&self, cx: &Context<'_>) -> Poll<()> {
        if !self.paused.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(cx.waker().clone());
        // Resumed between the check and the push: the waker may have been missed.
        if self.paused.load(Ordering::SeqCst) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(PoisonError::into_inner));
            for waker in waiting {
                waker.wake();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.abort_connections();
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port to the server at `server_url`
    /// (`https://127.0.0.1:PORT`, as [`TestEnv::server_url`](crate::TestEnv::server_url)).
    ///
    /// # Errors
    /// [`Error::Proxy`] if the URL is not `scheme://ip:port` or no port can be bound.
    pub async fn start(server_url: &str) -> Result<Self> {
        Self::balance(&[server_url]).await
    }

    /// Starts a load balancer on a free loopback port in front of the servers at
    /// `server_urls` (API servers of one etcd, as [`TestEnv::server_urls`](crate::TestEnv::server_urls)
    /// gives them): each new connection goes to the server [`route_to`](Self::route_to) chose
    /// last, the first at the start; open connections stay where they are until
    /// [`cut`](Self::cut).
    ///
    /// # Errors
    /// [`Error::Proxy`] if there is no URL, one is not `scheme://ip:port`, or no port can be
    /// bound.
    pub async fn balance(server_urls: &[&str]) -> Result<Self> {
        let targets = server_urls
            .iter()
            .map(|url| {
                url.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse::<SocketAddr>()
                    .map_err(|e| Error::Proxy {
                        step: format!("target {url} is not scheme://ip:port: {e}"),
                        source: None,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        if targets.is_empty() {
            return Err(Error::Proxy {
                step: "a proxy needs at least one server".to_owned(),
                source: None,
            });
        }
        let route = Arc::new(AtomicUsize::new(0));
        let io_error = |step: &str| {
            let step = step.to_owned();
            move |source| Error::Proxy {
                step,
                source: Some(source),
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io_error("bind a loopback port"))?;
        let addr = listener
            .local_addr()
            .map_err(io_error("read its address"))?;
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let from_server = Arc::new(AtomicU64::new(0));
        let count = targets.len();
        let gate = Arc::new(Gate::default());
        let accept = tokio::spawn({
            let gate = gate.clone();
            let open = open.clone();
            let connections = connections.clone();
            let from_server = from_server.clone();
            let route = route.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    // SeqCst: a connection accepted after `cut` returns must see the cut.
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropping the socket refuses the connection
                    }
                    let from_server = from_server.clone();
                    let target = targets[route.load(Ordering::SeqCst) % targets.len()];
                    let gate = gate.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(outbound) = TcpStream::connect(target).await {
                            let mut outbound = Counted {
                                stream: outbound,
                                read: from_server,
                                gate,
                            };
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut connections =
                        connections.lock().unwrap_or_else(PoisonError::into_inner);
                    connections.retain(|c| !c.is_finished());
                    connections.push(task);
                }
            }
        });
        Ok(Self {
            addr,
            open,
            route,
            targets: count,
            connections,
            accept,
            from_server,
            gate,
        })
    }

    /// Bytes the API server has sent to clients through this proxy so far, as they crossed
    /// the wire (TLS records and HTTP framing included): what a watcher cost the server.
    #[must_use]
    pub fn bytes_from_server(&self) -> u64 {
        self.from_server.load(Ordering::Relaxed)
    }

    /// The proxy's URL, `https://127.0.0.1:PORT`: put it in a client configuration's
    /// `cluster_url` to reach the server through the proxy.
    #[must_use]
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A client that reaches the server through this proxy, built from `config` (such as
    /// [`TestEnv::config`](crate::TestEnv::config)).
    ///
    /// # Errors
    /// [`Error::Client`] if kube-client cannot build it.
    ///
    /// # Panics
    /// Never: a socket address always makes a valid URL.
    pub fn client(&self, config: &kube_client::Config) -> Result<Client> {
        Client::try_from(self.config(config)).map_err(|source| Error::Client { source })
    }

    /// `config` (such as [`TestEnv::config`](crate::TestEnv::config)) with its cluster URL
    /// pointing at this proxy, for clients built another way, such as
    /// [`RequestLog::client`](crate::RequestLog::client):
    ///
    /// ```no_run
    /// use kache_testenv::{Proxy, RequestLog, TestEnv};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let env = TestEnv::shared().await?;
    /// let proxy = Proxy::start(env.server_url()).await?;
    /// let log = RequestLog::new();
    /// let cut_off = log.client(&proxy.config(env.config()))?; // recorded, and cut off by `cut()`
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// Never: a socket address always makes a valid URL.
    #[must_use]
    pub fn config(&self, config: &kube_client::Config) -> kube_client::Config {
        let mut config = config.clone();
        config.cluster_url = self
            .url()
            .parse()
            .expect("a socket address makes a valid URL");
        config
    }

    /// Sends new connections to the `index`-th server given to [`balance`](Self::balance)
    /// (modulo their number); open ones stay until [`cut`](Self::cut).
    pub fn route_to(&self, index: usize) {
        self.route.store(index % self.targets, Ordering::SeqCst);
    }

    /// The proxy's address, `127.0.0.1:PORT`, for clients of other schemes than HTTPS (an
    /// etcd client: `http://` and this).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection, and accepts new ones (which go to the server routed to):
    /// clients reconnect, as after a load balancer's connection reset.
    pub fn reset(&self) {
        self.abort_connections();
    }

    /// Holds back every byte the servers send, on every connection, until
    /// [`resume`](Self::resume): the connections stay open and requests still reach the
    /// servers, but their answers (and a watch's events) wait, as on a stalled link. In front
    /// of etcd, this makes an API server's watch cache fall behind while it keeps serving.
    pub fn pause(&self) {
        self.gate.set(true);
    }

    /// Lets the held-back bytes through again.
    pub fn resume(&self) {
        self.gate.set(false);
    }

    /// Cuts every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.abort_connections();
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    fn abort_connections(&self) {
        let mut connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for connection in connections.drain(..) {
            connection.abort();
        }
    }
}

/// A connection to the server that counts the bytes read from it.
struct Counted {
    stream: TcpStream,
    // Relaxed: a running total read on its own.
    read: Arc<AtomicU64>,
    gate: Arc<Gate>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.gate.poll_open(cx).is_pending() {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.read.fetch_add(read, Ordering::Relaxed);
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
