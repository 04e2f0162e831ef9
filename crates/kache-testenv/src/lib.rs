//! A real local Kubernetes control plane for tests and demos, like controller-runtime's
//! envtest: etcd and kube-apiserver v1.20.2 on loopback, with fault tools.
//!
//! ```no_run
//! use kache_testenv::TestEnv;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // One control plane for the whole test binary; each test keeps to its own namespace.
//! let env = TestEnv::shared().await?;
//! let namespace = env.create_namespace("demo").await?;
//! let version = env.client().apiserver_version().await?;
//! println!("kube-apiserver {} at {}, namespace {namespace}", version.git_version, env.server_url());
//!
//! // A private one, for tests that break things.
//! let env = TestEnv::builder().watch_cache(false).start().await?;
//! env.restart_apiserver().await?; // same port and data: clients reconnect
//! env.compact_etcd().await?; // older resourceVersions now get 410 Gone
//! # Ok(()) }
//! ```
//!
//! # What runs
//!
//! [`TestEnv::start`] creates a fresh folder under the system temp folder, generates an admin
//! token (group `system:masters`), a token for `kache-unprivileged` (no RBAC bindings), an RSA
//! service-account key (with `openssl`) and a kubeconfig, then starts etcd and kube-apiserver
//! (RBAC authorization, a self-signed serving certificate) on free loopback ports. It returns
//! once `/readyz` answers `ok` and the `default` namespace exists: about 10 s.
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
//! 1. `KUBEBUILDER_ASSETS`: a folder holding `etcd` and `kube-apiserver` (envtest's layout;
//!    `etcdctl`, needed by the etcd fault tools, is taken from there or from `PATH`).
//! 2. kache's cache: `$KACHE_CACHE_DIR`, else `$XDG_CACHE_HOME/kache`, else `~/.cache/kache`,
//!    then `assets-v1.20.2/`.
//! 3. Provisioning: the embedded `scripts/provision-control-plane.sh` installs etcd and builds
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
//! | `KACHE_USE_EXISTING_CLUSTER=1` | start nothing; use `KUBECONFIG` (or `~/.kube/config`) |
//!
//! On an existing cluster the fault tools return [`Error::Unsupported`] and
//! [`TestEnv::client_unprivileged`] impersonates `kache-unprivileged`.

mod apiserver;
mod assets;
mod env;
mod error;
mod etcd;
mod process;
mod proxy;
pub mod scripted;
mod workdir;

pub use env::{Builder, TestEnv};
pub use error::{Error, Result};
pub use proxy::Proxy;

#[cfg(test)]
mod tests {
    const fn assert_send_sync<T: Send + Sync>() {}
    const _: () = assert_send_sync::<crate::TestEnv>();
    const _: () = assert_send_sync::<crate::Error>();
}
