//! The per-environment folder: tokens, keys, kubeconfig, data and logs.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Kubeconfig context of the admin user (group `system:masters`).
pub(crate) const ADMIN_CONTEXT: &str = "kache-admin";
/// Kubeconfig context of a user with no RBAC bindings at all.
pub(crate) const UNPRIVILEGED_CONTEXT: &str = "kache-unprivileged";
/// Name of the user behind [`UNPRIVILEGED_CONTEXT`].
pub(crate) const UNPRIVILEGED_USER: &str = "kache-unprivileged";
/// The user an operator client impersonates: allowed everything, yet not in `system:masters`.
pub(crate) const OPERATOR_USER: &str = "kache-operator";
/// The group that gives [`OPERATOR_USER`] its rights (a binding to `cluster-admin` on
/// kube-apiserver, a rule of its own on the modern server).
pub(crate) const OPERATORS_GROUP: &str = "kache:operators";

fn setup_error(step: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let step = step.into();
    move |source| Error::Setup {
        step,
        source: Some(source),
    }
}

/// Creates a fresh, uniquely named folder under the system temp folder.
pub(crate) fn create_dir() -> Result<PathBuf> {
    // Unique within the process by the counter, across processes by the PID and the clock.
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "kache-testenv-{}-{n}-{nanos:08x}",
        std::process::id()
    ));
    // `create_dir`, not `create_dir_all`: fail rather than share a folder by accident.
    std::fs::create_dir(&dir).map_err(setup_error(format!("create {}", dir.display())))?;
    Ok(dir)
}

/// A random hex token from the kernel's generator.
pub(crate) fn random_token() -> Result<String> {
    let mut bytes = [0_u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(setup_error("read /dev/urandom"))?;
    Ok(bytes.iter().fold(String::with_capacity(48), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Three distinct free loopback ports. Another process could take one before the server
/// binds it; envtest accepts the same small race.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(setup_error("find a free loopback port"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(setup_error("find a free loopback port"))?
            .port();
    }
    Ok(ports)
}

/// `TOKEN,user,uid[,"groups"]` lines for `--token-auth-file`.
pub(crate) fn write_token_file(path: &Path, admin: &str, unprivileged: &str) -> Result<()> {
    let text = format!(
        "{admin},kache-admin,kache-admin,system:masters\n\
         {unprivileged},{UNPRIVILEGED_USER},{UNPRIVILEGED_USER}\n"
    );
    std::fs::write(path, text).map_err(setup_error(format!("write {}", path.display())))
}

/// An RSA key for signing and verifying service account tokens.
pub(crate) async fn write_service_account_key(path: &Path) -> Result<()> {
    let output = tokio::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(path)
        .arg("2048")
        .output()
        .await
        .map_err(setup_error("run openssl genrsa (is openssl installed?)"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Setup {
            step: format!(
                "openssl genrsa exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            source: None,
        })
    }
}

/// A kubeconfig with an admin context (current) and an unprivileged one.
///
/// `ca` is the server's own certificate, which the server generates on its first start: until
/// it exists (while waiting for that start) the kubeconfig skips verification.
pub(crate) fn write_kubeconfig(
    path: &Path,
    server: &str,
    admin: &str,
    unprivileged: &str,
    ca: Option<&Path>,
) -> Result<()> {
    let trust = match ca {
        Some(ca) => format!("certificate-authority: {}", ca.display()),
        None => "insecure-skip-tls-verify: true".to_owned(),
    };
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kache
  cluster:
    server: {server}
    {trust}
users:
- name: kache-admin
  user:
    token: {admin}
- name: {UNPRIVILEGED_USER}
  user:
    token: {unprivileged}
contexts:
- name: {ADMIN_CONTEXT}
  context:
    cluster: kache
    user: kache-admin
    namespace: default
- name: {UNPRIVILEGED_CONTEXT}
  context:
    cluster: kache
    user: {UNPRIVILEGED_USER}
    namespace: default
current-context: {ADMIN_CONTEXT}
"
    );
    std::fs::write(path, text).map_err(setup_error(format!("write {}", path.display())))
}
