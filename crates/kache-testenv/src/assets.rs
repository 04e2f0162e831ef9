//! Finding (or provisioning) the control plane binaries of each [`Server`].

use std::env;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{Error, Result};
use crate::server::Server;

/// The provisioning scripts, embedded so a fresh checkout can bootstrap itself from `cargo test`.
const LEGACY_SCRIPT: &str = include_str!("../provision/legacy.sh");
const MODERN_SCRIPT: &str = include_str!("../provision/modern.sh");

/// The modern server's Go sources, written out for the script to build (it keys its cache
/// by their hash, so a changed server is rebuilt).
const MODERN_SOURCES: &[(&str, &str)] = &[
    ("auth.go", include_str!("../apiserver/auth.go")),
    ("main.go", include_str!("../apiserver/main.go")),
    ("registry.go", include_str!("../apiserver/registry.go")),
];

/// The modern server's executable in its assets folder.
const MODERN_APISERVER: &str = "kache-apiserver";

/// Where the control plane binaries live.
#[derive(Debug, Clone)]
pub(crate) struct Assets {
    pub(crate) etcd: PathBuf,
    /// kube-apiserver, or the modern server.
    pub(crate) apiserver: PathBuf,
    /// `etcdctl` is not part of envtest's asset layout, so it may come from `PATH` instead.
    pub(crate) etcdctl: PathBuf,
}

impl Assets {
    /// The binaries of `server`: see [`Assets::locate_legacy`] and [`Assets::locate_modern`].
    pub(crate) async fn locate(server: Server) -> Result<Self> {
        match server {
            Server::Legacy => Self::locate_legacy().await,
            Server::Modern => Self::locate_modern().await,
        }
    }

    /// Runs the modern provisioning script, which answers at once from its cache when the
    /// resolved packages and the server's sources are unchanged, and builds otherwise
    /// (unless `KACHE_PROVISION=0`, where it fails instead).
    async fn locate_modern() -> Result<Self> {
        let src = tempdir_for_sources()?;
        let result = run_script(MODERN_SCRIPT, "modern.sh", &[("KACHE_APISERVER_SRC", &src)]).await;
        let _ = std::fs::remove_dir_all(&src);
        let dir = result?;
        Self::in_dir(&dir, MODERN_APISERVER).ok_or_else(|| Error::Provision {
            reason: format!(
                "{} holds no etcd and {MODERN_APISERVER} after provisioning",
                dir.display()
            ),
            source: None,
        })
    }

    /// Looks in `KUBEBUILDER_ASSETS`, then in kache's cache folder, then provisions
    /// (unless `KACHE_PROVISION=0`).
    async fn locate_legacy() -> Result<Self> {
        if let Some(dir) = env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            return Self::in_dir(&dir, "kube-apiserver").ok_or_else(|| Error::BinariesNotFound {
                reason: format!(
                    "KUBEBUILDER_ASSETS={} holds no executable etcd and kube-apiserver",
                    dir.display()
                ),
            });
        }
        let cached = cache_dir();
        if let Some(assets) = cached
            .as_deref()
            .and_then(|d| Self::in_dir(d, "kube-apiserver"))
        {
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
        tracing::info!(
            "no cached control plane binaries; provisioning kube-apiserver v{} \
             (the first build takes several minutes)",
            legacy_version()
        );
        let dir = run_script(LEGACY_SCRIPT, "legacy.sh", &[]).await?;
        Self::in_dir(&dir, "kube-apiserver").ok_or_else(|| Error::Provision {
            reason: format!(
                "{} holds no etcd and kube-apiserver after provisioning",
                dir.display()
            ),
            source: None,
        })
    }

    fn in_dir(dir: &Path, apiserver: &str) -> Option<Self> {
        let etcd = dir.join("etcd");
        let apiserver = dir.join(apiserver);
        if !is_executable(&etcd) || !is_executable(&apiserver) {
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
            apiserver,
            etcdctl,
        })
    }
}

/// The Kubernetes version the legacy script builds, from its `K8S_VERSION=` line: the script
/// is the one place it is written, and it keys the cache folder by it.
fn legacy_version() -> &'static str {
    LEGACY_SCRIPT
        .lines()
        .find_map(|line| line.strip_prefix("K8S_VERSION="))
        .map(str::trim)
        .expect("provision/legacy.sh sets K8S_VERSION (checked by a unit test)")
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
    Some(root.join(format!("assets-v{}", legacy_version())))
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

/// A fresh folder holding the modern server's Go sources.
fn tempdir_for_sources() -> Result<PathBuf> {
    let dir = crate::workdir::create_dir()?;
    for (name, text) in MODERN_SOURCES {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Setup {
            step: format!("write {}", path.display()),
            source: Some(source),
        })?;
    }
    Ok(dir)
}

/// Runs an embedded script with bash, its progress going straight to our stderr, and returns
/// the folder it prints last.
async fn run_script(script: &str, name: &str, envs: &[(&str, &Path)]) -> Result<PathBuf> {
    let mut command = tokio::process::Command::new("bash");
    command.arg("-c").arg(script).arg(name);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command
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

#[cfg(test)]
mod tests {
    use super::legacy_version;

    #[test]
    fn legacy_version_is_read_from_the_script() {
        let version = legacy_version();
        let parts: Vec<&str> = version.split('.').collect();
        assert_eq!(parts.len(), 3, "{version:?}");
        assert!(
            parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "{version:?}"
        );
    }
}
