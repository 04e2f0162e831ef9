//! The API server (kube-apiserver, or the modern server): its flags and its readiness.

use std::path::Path;
use std::time::Duration;

use kube_client::core::params::{GetParams, PostParams};
use kube_client::core::{DynamicObject, Request};
use kube_client::{Client, Config};
use tracing::instrument::WithSubscriber;

use crate::error::{Error, Result};
use crate::server::Server;
use crate::workdir::OPERATORS_GROUP;

/// Where the API server's inputs are and which ports it talks on.
#[derive(Debug)]
pub(crate) struct Flags<'a> {
    pub(crate) server: Server,
    pub(crate) dir: &'a Path,
    pub(crate) port: u16,
    pub(crate) etcd_endpoint: String,
    pub(crate) watch_cache: bool,
    /// `--feature-gates` entries, in order (later ones win).
    pub(crate) feature_gates: &'a [(String, bool)],
    pub(crate) extra: &'a [String],
}

impl Flags<'_> {
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = match self.server {
            Server::Legacy => self.legacy_args(),
            Server::Modern => self.modern_args(),
        };
        if !self.watch_cache {
            args.push("--watch-cache=false".to_owned());
        }
        if !self.feature_gates.is_empty() {
            let gates: Vec<String> = self
                .feature_gates
                .iter()
                .map(|(name, on)| format!("{name}={on}"))
                .collect();
            args.push(format!("--feature-gates={}", gates.join(",")));
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// The modern server takes kube-apiserver's names for the flags it has.
    fn modern_args(&self) -> Vec<String> {
        let dir = self.dir;
        vec![
            format!("--etcd-servers={}", self.etcd_endpoint),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", self.port),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
        ]
    }

    fn legacy_args(&self) -> Vec<String> {
        let dir = self.dir;
        let sa_key = dir.join("service-account.key");
        vec![
            format!("--etcd-servers={}", self.etcd_endpoint),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", self.port),
            // Serving over TLS only; the plain-HTTP port would skip authentication.
            "--insecure-port=0".to_owned(),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            // RBAC so that a user without bindings is really refused; system:masters passes.
            "--authorization-mode=RBAC".to_owned(),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", sa_key.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
            "--allow-privileged=true".to_owned(),
            // There is no controller manager to create ServiceAccounts, so pods could not be
            // admitted with this plugin on (envtest does the same).
            "--disable-admission-plugins=ServiceAccount".to_owned(),
        ]
    }
}

/// The path of the API server's log inside a working folder.
pub(crate) fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join("kube-apiserver.log")
}

/// Whether `/readyz` says `ok` and the `default` namespace exists, so that the very first
/// request of a test (say, a create in `default`) succeeds.
pub(crate) async fn is_ready(config: &Config) -> bool {
    let Ok(client) = Client::try_from(config.clone()) else {
        return false;
    };
    let probe = async {
        let readyz = Request::new("").get("readyz", &GetParams::default()).ok()?;
        if client.request_text(readyz).await.ok()?.trim() != "ok" {
            return None;
        }
        let default_ns = Request::new("/api/v1/namespaces")
            .get("default", &GetParams::default())
            .ok()?;
        client.request_text(default_ns).await.ok()
    };
    // kube-client logs every failed request at ERROR; failures are expected while polling.
    let probe = probe.with_subscriber(tracing::subscriber::NoSubscriber::default());
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Some(_))
    )
}

/// Binds the operators' group to `cluster-admin` on kube-apiserver (whose RBAC would refuse it
/// everything otherwise); the modern server allows the group by a rule of its own. Already
/// bound (a restart over the same etcd) is fine.
pub(crate) async fn bind_operators(client: Client) -> Result<()> {
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": "kache-operators" },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin"
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": OPERATORS_GROUP
        }]
    });
    let api_error = |source| Error::Api {
        context: format!("bind {OPERATORS_GROUP} to cluster-admin"),
        source,
    };
    let request = Request::new("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
        .create(&PostParams::default(), binding.to_string().into_bytes())
        .map_err(|e| api_error(kube_client::Error::BuildRequest(e)))?;
    match client.request::<DynamicObject>(request).await {
        Ok(_) => Ok(()),
        Err(kube_client::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(api_error(e)),
    }
}
