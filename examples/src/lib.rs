//! Shared set-up for kache's examples: each starts a local control plane (or uses an existing
//! cluster with `KACHE_USE_EXISTING_CLUSTER=1` and `KUBECONFIG`), does its work, and exits.
//!
//! Run one with `cargo run -p kache-examples --example <name>`.
//!
//! [`probes`] serves an operator's `/metrics` and `/readyz` and scrapes them, and
//! [`exposition`] reads a scrape; the end-to-end tests use both. [`one_child`] holds the objects of
//! the one-child operator (its example, test and benchmark).

pub mod exposition;
pub mod one_child;
pub mod probes;

use std::{future::Future, io::IsTerminal, time::Duration};

use kache_testenv::TestEnv;

/// A boxed error, enough for examples.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Logs to stderr; `RUST_LOG` sets the filter. By default: progress of the control plane,
/// warnings from kache, and nothing from kube-client, whose failures kache's watcher already
/// reports as error items. Colours only on a terminal: a log file gets plain text.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,kache_testenv=info,kube_client=off".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Starts a control plane and a fresh namespace for an example.
///
/// # Errors
/// When the control plane cannot start or the namespace cannot be created.
pub async fn start(prefix: &str) -> Result<(TestEnv, String), BoxError> {
    init_tracing();
    eprintln!(
        "starting a local control plane (the first run builds kube-apiserver: a few minutes)..."
    );
    let env = TestEnv::start().await?;
    let namespace = env.create_namespace(prefix).await?;
    eprintln!(
        "control plane at {}, namespace {namespace}",
        env.server_url()
    );
    Ok((env, namespace))
}

/// Polls `check` every 20 ms until it holds, for at most 30 s.
///
/// # Errors
/// When 30 s pass first.
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map_err(|_| format!("timed out waiting for {what}").into())
}
