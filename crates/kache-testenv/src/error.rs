//! The one error type of this crate.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping a [`TestEnv`](crate::TestEnv).
///
/// One variant per stage, so a test failure says where it broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No `etcd` and `kube-apiserver` were found and provisioning was turned off
    /// (`KACHE_PROVISION=0`) or pointed somewhere empty.
    #[error(
        "control plane binaries not found: {reason}; run `just control-plane` in kache's \
         repository (or crates/kache-testenv/provision/legacy.sh), or set KUBEBUILDER_ASSETS \
         to a folder holding etcd and kube-apiserver"
    )]
    BinariesNotFound {
        /// Where the binaries were looked for.
        reason: String,
    },

    /// The embedded provisioning script failed.
    #[error("provisioning the control plane failed: {reason}")]
    Provision {
        /// What went wrong (exit status, missing output).
        reason: String,
        /// The I/O error, when the script could not be run at all.
        #[source]
        source: Option<io::Error>,
    },

    /// Preparing the working folder failed (folder, tokens, keys, kubeconfig file).
    #[error("could not prepare the working folder: {step}")]
    Setup {
        /// The step that failed, with its details.
        step: String,
        /// The I/O error behind it, if any.
        #[source]
        source: Option<io::Error>,
    },

    /// A [`Proxy`](crate::Proxy) could not start.
    #[error("could not start the proxy: {step}")]
    Proxy {
        /// What failed, with its details.
        step: String,
        /// The I/O error behind it, if any.
        #[source]
        source: Option<io::Error>,
    },

    /// A control plane process could not be started.
    #[error("could not start {component}")]
    Spawn {
        /// `etcd` or `kube-apiserver`.
        component: &'static str,
        /// Why the process could not be spawned.
        #[source]
        source: io::Error,
    },

    /// A component did not become ready in time.
    #[error("{component} was not ready within {timeout:?}; last lines of its log:\n{log_tail}")]
    NotReady {
        /// `etcd` or `kube-apiserver`.
        component: &'static str,
        /// How long it was given.
        timeout: Duration,
        /// The end of the component's log, usually the reason.
        log_tail: String,
    },

    /// The kubeconfig could not be read or turned into a client configuration.
    #[error("could not load kubeconfig {path}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The parse or resolution error.
        #[source]
        source: kube_client::config::KubeconfigError,
    },

    /// A client could not be built from a configuration.
    #[error("could not build a kubernetes client")]
    Client {
        /// The error from kube-client.
        #[source]
        source: kube_client::Error,
    },

    /// A request to the API server failed.
    #[error("api request failed: {context}")]
    Api {
        /// What was being done.
        context: String,
        /// The error from kube-client.
        #[source]
        source: kube_client::Error,
    },

    /// An `etcdctl` command failed.
    #[error("etcdctl {command} failed: {reason}")]
    Etcdctl {
        /// The subcommand, e.g. `compact 42`.
        command: String,
        /// Exit status and stderr, or what could not be parsed.
        reason: String,
        /// The I/O error, when etcdctl could not be run at all.
        #[source]
        source: Option<io::Error>,
    },

    /// The operation needs a control plane started by this crate, not an existing cluster.
    #[error("{operation} is not supported on an existing cluster (KACHE_USE_EXISTING_CLUSTER)")]
    Unsupported {
        /// The operation that was refused.
        operation: &'static str,
    },

    /// The operation needs a second API server ([`Builder::second_apiserver`](crate::Builder::second_apiserver)).
    #[error("{operation} needs a second API server (TestEnv::builder().second_apiserver())")]
    NoSecondApiserver {
        /// The operation that was refused.
        operation: &'static str,
    },

    /// The process-wide shared control plane failed to start; every caller gets this error.
    #[error("the shared control plane failed to start")]
    Shared {
        /// The error from its one start attempt.
        #[source]
        source: Arc<Error>,
    },
}
