//! Support for kache's end-to-end and fault tests: seeding objects, bounded waits, and a
//! loopback proxy that can cut the watcher off from the API server.
//!
//! The tests themselves live in `tests/`; each runs against a real control plane from
//! `kache-testenv`.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_client::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};
use tokio::{net::TcpListener, task::JoinHandle};

/// How long any single condition in a test may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(60);

/// Sends test logs to the test harness's captured output; `RUST_LOG` sets the filter.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Waits for `future` for at most [`BOUND`], failing the test with `what` if it takes longer.
///
/// # Panics
/// When the bound passes.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {BOUND:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it returns `true`, for at most [`BOUND`].
///
/// # Panics
/// When the bound passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A `ConfigMap` named `name` with `labels` and about 512 bytes of data.
#[must_use]
pub fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("payload".to_owned(), "x".repeat(512))])),
        ..ConfigMap::default()
    }
}

/// Creates `count` `ConfigMap`s named `<prefix>-<i>`, 32 requests in flight.
///
/// # Panics
/// When the server refuses a create.
pub async fn create_configmaps(
    api: &Api<ConfigMap>,
    prefix: &str,
    count: usize,
    labels: &[(&str, &str)],
) {
    futures::stream::iter(0..count)
        .map(|i| {
            let cm = configmap(&format!("{prefix}-{i}"), labels);
            async move { api.create(&PostParams::default(), &cm).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("create configmaps");
}

/// Deletes the named objects.
///
/// # Panics
/// When the server refuses a delete.
pub async fn delete_configmaps(api: &Api<ConfigMap>, names: impl IntoIterator<Item = String>) {
    futures::stream::iter(names)
        .map(|name| async move { api.delete(&name, &DeleteParams::default()).await })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("delete configmaps");
}

/// `(namespace/name, resourceVersion)` of every object a fresh, unpaginated LIST returns.
///
/// # Panics
/// When the LIST fails.
pub async fn listed_versions(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    let list = api.list(&ListParams::default()).await.expect("list");
    list.items
        .iter()
        .map(|cm| (key_of(cm), version_of(cm)))
        .collect()
}

/// `namespace/name` of an object.
#[must_use]
pub fn key_of(cm: &ConfigMap) -> String {
    format!(
        "{}/{}",
        cm.metadata.namespace.as_deref().unwrap_or_default(),
        cm.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The resourceVersion of an object.
#[must_use]
pub fn version_of(cm: &ConfigMap) -> String {
    cm.metadata.resource_version.clone().unwrap_or_default()
}

/// A loopback TCP proxy in front of the API server that can cut every connection and refuse
/// new ones, as a network partition would, while the server itself keeps running.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Proxy {
    /// Starts a proxy to the server at `server_url` (`https://127.0.0.1:PORT`).
    ///
    /// # Panics
    /// When the URL has no loopback address or the port cannot be bound.
    pub async fn start(server_url: &str) -> Self {
        let target: SocketAddr = server_url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("server url is host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let open = open.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropping the socket refuses the connection
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            }
        });
        Self {
            addr,
            open,
            connections,
            accept,
        }
    }

    /// A client that reaches the server through this proxy, built from `config`.
    ///
    /// # Panics
    /// When the client cannot be built.
    #[must_use]
    pub fn client(&self, config: &kube_client::Config) -> Client {
        let mut config = config.clone();
        config.cluster_url = format!("https://{}", self.addr).parse().expect("proxy url");
        Client::try_from(config).expect("client through proxy")
    }

    /// Cuts every open connection and refuses new ones until [`restore`](Self::restore).
    ///
    /// # Panics
    /// If a connection task panicked while holding the list of connections.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}
