//! A real local Kubernetes control plane for tests and demos, like controller-runtime's
//! envtest: etcd and an API server on loopback, with fault tools. Two servers are on offer
//! ([`Server`]): kube-apiserver v1.20.2, and a small server on the Kubernetes 1.36 apiserver
//! library that serves streaming lists as every cluster since 1.34 does.
//!
//! ```no_run
//! use kache_testenv::{Server, TestEnv};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One control plane for the whole test binary; each test keeps to its own namespace.
//! let env = TestEnv::shared().await?;
//! let namespace = env.create_namespace("demo").await?;
//! let version = env.client().apiserver_version().await?;
//! println!("kube-apiserver {} at {}, namespace {namespace}", version.git_version, env.server_url());
//!
//! // A private one on the modern server, for tests that break things.
//! let env = TestEnv::builder().server(Server::Modern).watch_cache(false).start().await?;
//! env.restart_apiserver().await?; // same port and data: clients reconnect
//! env.compact_etcd().await?; // older resourceVersions now get 410 Gone
//! # Ok(()) }
//! ```
//!
//! # Test utilities
//!
//! Beside the control plane, the chores every test of a cache repeats:
//!
//! - Seeding: [`create_all`] and [`delete_all`] send many creates or deletes, [`IN_FLIGHT`]
//!   at a time, and [`run_all`] any other requests the same way; [`configmap`] builds a small
//!   `ConfigMap` of a chosen size to seed with.
//! - Counting requests: a client from [`RequestLog::client`] records every request it sends,
//!   and [`RequestKind`] says which were lists, watches and streaming lists.
//! - Partitions: a [`Proxy`] cuts a client off from the server while the server keeps running.
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kache_testenv::{Proxy, RequestKind, RequestLog, TestEnv, configmap, create_all};
//! use kube_client::{Api, api::ListParams};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let env = TestEnv::shared().await?;
//! let ns = env.create_namespace("seeded").await?;
//! let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
//! create_all(&api, (0..500).map(|i| configmap(&format!("cm-{i}"), &[], 1024))).await?;
//!
//! // The code under test gets a client through a proxy, recorded.
//! let proxy = Proxy::start(env.server_url()).await?;
//! let log = RequestLog::new();
//! let watched: Api<ConfigMap> = Api::namespaced(log.client(&proxy.config(env.config()))?, &ns);
//! watched.list(&ListParams::default().limit(100)).await?;
//! assert_eq!(log.count(RequestKind::List), 1);
//! # Ok(()) }
//! ```
//!
//! # What runs
//!
//! [`TestEnv::start`] creates a fresh folder under the system temp folder, generates an admin
//! token (group `system:masters`), a token for `kache-unprivileged` (no RBAC bindings), an RSA
//! service-account key (with `openssl`) and a kubeconfig, then starts etcd and the API server
//! (a self-signed serving certificate; kube-apiserver with RBAC authorization, the modern
//! server letting `system:masters` do anything and other users only discovery) on free
//! loopback ports. It returns once `/readyz` answers `ok` and the `default` namespace exists:
//! a few seconds. The group `kache:operators` may do anything too (bound to `cluster-admin` on
//! kube-apiserver) without being exempt from the server's limits on requests in flight, as
//! `system:masters` is: [`TestEnv::operator_config`] acts as its member `kache-operator`.
//!
//! There is no controller manager, scheduler or kubelet: objects are stored and watched but
//! nothing acts on them (no pods run, deleted namespaces stay `Terminating`, no
//! service accounts are created).
//!
//! Dropping a [`TestEnv`] stops both processes and removes the folder. Processes never outlive
//! the test process, even when it exits without dropping (as with [`TestEnv::shared`]) or is
//! killed: each runs under a small `sh` watchdog that ends it when its stdin pipe from the test
//! process closes.
//!
//! # Where the binaries come from
//!
//! The modern server ([`Server::Modern`]) and its etcd 3.5 are built once from Debian sid's
//! packages by the embedded `provision/modern.sh` (a private apt configuration; nothing is
//! installed into the system), cached under `modern-<hash>/` in kache's cache folder, the
//! hash naming the resolved package versions and the server's source. kube-apiserver
//! ([`Server::Legacy`]) is found as follows:
//!
//! 1. `KUBEBUILDER_ASSETS`: a folder holding `etcd` and `kube-apiserver` (envtest's layout;
//!    `etcdctl`, needed by the etcd fault tools, is taken from there or from `PATH`).
//! 2. kache's cache: `$KACHE_CACHE_DIR`, else `$XDG_CACHE_HOME/kache`, else `~/.cache/kache`,
//!    then `assets-v1.20.2/`.
//! 3. Provisioning: the embedded `provision/legacy.sh` installs etcd and builds
//!    kube-apiserver once into that cache (several minutes; progress on stderr). Set
//!    `KACHE_PROVISION=0` to get [`Error::BinariesNotFound`] instead, and run
//!    `just control-plane` ahead of time.
//!
//! # Environment variables
//!
//! | Variable | Effect |
//! |---|---|
//! | `KUBEBUILDER_ASSETS` | folder with `etcd` and `kube-apiserver`, used first |
//! | `KACHE_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME` | where the provisioned binaries are cached |
//! | `KACHE_PROVISION=0` | never build; fail with [`Error::BinariesNotFound`] |
//! | `KACHE_TEST_SERVER` | `legacy` (the default) or `modern`: the server of [`TestEnv::start`] and [`TestEnv::shared`] |
//! | `KACHE_USE_EXISTING_CLUSTER=1` | start nothing; use `KUBECONFIG` (or `~/.kube/config`) |
//!
//! On an existing cluster the fault tools return [`Error::Unsupported`] and
//! [`TestEnv::client_unprivileged`] impersonates `kache-unprivileged`.
//!
//! # TLS
//!
//! This crate builds its own clients, so it chooses their TLS stack: kube-client's `rustls-tls`
//! and `ring` features. Cargo unifies features, so every kube-client in a build that includes
//! kache-testenv has them too; as a dev-dependency (what a test harness is for) that choice
//! stays out of your library's and your binary's own builds.

mod apiserver;
mod assets;
mod env;
mod error;
mod etcd;
mod objects;
mod process;
mod proxy;
mod requests;
pub mod scripted;
mod server;
mod workdir;

pub use env::{Builder, TestEnv};
pub use error::{Error, Result};
pub use objects::{IN_FLIGHT, configmap, create_all, delete_all, run_all};
pub use proxy::Proxy;
pub use requests::{RecordedRequest, RequestKind, RequestLog};
pub use server::{Server, UnknownServer};

#[cfg(test)]
mod tests {
    const fn assert_send_sync<T: Send + Sync>() {}
    const _: () = assert_send_sync::<crate::TestEnv>();
    const _: () = assert_send_sync::<crate::Error>();
    const _: () = assert_send_sync::<crate::RequestLog>();
    const _: () = assert_send_sync::<crate::RecordedRequest>();
}
