//! Finding (or provisioning) the `etcd` and `kube-apiserver` binaries.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Error, Result};

/// The Kubernetes version the provisioning script builds.
pub(crate) const KUBERNETES_VERSION: &str = "1.20.2";

/// The provisioning script, embedded so a fresh checkout can bootstrap itself from `cargo test`.
const PROVISION_SCRIPT: &str = include_str!("../../../scripts/provision-control-plane.sh");

/// Where the control plane binaries live.
#[derive(Debug, Clone)]
pub(crate) struct Assets {
    pub(crate) etcd: PathBuf,
    pub(crate) kube_apiserver: PathBuf,
    /// `etcdctl` is not part of envtest's asset layout, so it may come from `PATH` instead.
    pub(crate) etcdctl: PathBuf,
}

impl Assets {
    /// Looks in `KUBEBUILDER_ASSETS`, then in kache's cache folder, then provisions
    /// (unless `KACHE_PROVISION=0`).
    pub(crate) async fn locate() -> Result<Self> {
        if let Some(dir) = env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return Self::in_dir(&dir).ok_or_else(|| Error::BinariesNotFound {
                reason: format!(
                    "KUBEBUILDER_ASSETS={} holds no executable etcd and kube-apiserver",
                    dir.display()
                ),
            });
        }
        let cached = cache_dir();
        if let Some(assets) = cached.as_deref().and_then(Self::in_dir) {
            return Ok(assets);
        }
        if env::var_os("KACHE_PROVISION").is_some_and(|v| v == "0") {
            return Err(Error::BinariesNotFound {
                reason: match cached {
                    Some(dir) => {
                        format!("nothing cached in {}, and KACHE_PROVISION=0", dir.display())
                    }
                    None => "no cache folder (HOME unset), and KACHE_PROVISION=0".to_owned(),
                },
            });
        }
        let dir = provision().await?;
        Self::in_dir(&dir).ok_or_else(|| Error::Provision {
            reason: format!(
                "{} holds no etcd and kube-apiserver after provisioning",
                dir.display()
            ),
            source: None,
        })
    }

    fn in_dir(dir: &Path) -> Option<Self> {
        let etcd = dir.join("etcd");
        let kube_apiserver = dir.join("kube-apiserver");
        if !is_executable(&etcd) || !is_executable(&kube_apiserver) {
            return None;
        }
        let local_etcdctl = dir.join("etcdctl");
        let etcdctl = if is_executable(&local_etcdctl) {
            local_etcdctl
        } else {
            find_in_path("etcdctl").unwrap_or_else(|| PathBuf::from("etcdctl"))
        };
        Some(Self {
            etcd,
            kube_apiserver,
            etcdctl,
        })
    }
}

/// `${KACHE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kache}/assets-v<version>`, as in the script.
fn cache_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| {
        env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let root = non_empty("KACHE_CACHE_DIR")
        .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("kache")))
        .or_else(|| non_empty("HOME").map(|d| d.join(".cache").join("kache")))?;
    Some(root.join(format!("assets-v{KUBERNETES_VERSION}")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Runs the embedded script with bash, its progress going straight to our stderr.
async fn provision() -> Result<PathBuf> {
    tracing::info!(
        "no cached control plane binaries; provisioning kube-apiserver v{KUBERNETES_VERSION} \
         (the first build takes several minutes)"
    );
    let output = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(PROVISION_SCRIPT)
        .arg("provision-control-plane.sh")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Error::Provision {
            reason: "could not run bash".to_owned(),
            source: Some(source),
        })?;
    if !output.status.success() {
        return Err(Error::Provision {
            reason: format!(
                "the script exited with {} (its output is above)",
                output.status
            ),
            source: None,
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::trim);
    dir.map(PathBuf::from).ok_or_else(|| Error::Provision {
        reason: "the script printed no assets folder".to_owned(),
        source: None,
    })
}
