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
//! # What runs
//!
//! [`TestEnv::start`] creates a fresh folder under the system temp folder, generates an admin
//! token (group `system:masters`), a token for `kache-unprivileged` (no RBAC bindings), an RSA
//! service-account key (with `openssl`) and a kubeconfig, then starts etcd and the API server
//! (a self-signed serving certificate; kube-apiserver with RBAC authorization, the modern
//! server letting `system:masters` do anything and other users only discovery) on free
//! loopback ports. It returns once `/readyz` answers `ok` and the `default` namespace exists:
//! a few seconds.
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
mod process;
mod proxy;
pub mod scripted;
mod server;
mod workdir;

pub use env::{Builder, TestEnv};
pub use error::{Error, Result};
pub use proxy::Proxy;
pub use server::{Server, UnknownServer};

#[cfg(test)]
mod tests {
    const fn assert_send_sync<T: Send + Sync>() {}
    const _: () = assert_send_sync::<crate::TestEnv>();
    const _: () = assert_send_sync::<crate::Error>();
}
