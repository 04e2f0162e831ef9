//! What the end-to-end benchmark binaries share: their settings from the environment, the
//! servers to run against, and the memory of their own process.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kache_testenv::{Server, TestEnv};
use kube_client::{
    Api, Client,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::config_map;

/// A boxed error, enough for a benchmark binary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The number in environment variable `name`, or `default` when it is unset or not a number.
#[must_use]
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The numbers in environment variable `name`, comma-separated (`1000,10000`), or `default`
/// when it is unset or holds no number.
#[must_use]
pub fn env_sizes(name: &str, default: &[usize]) -> Vec<usize> {
    let sizes: Vec<usize> = std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    if sizes.is_empty() {
        default.to_vec()
    } else {
        sizes
    }
}

/// The servers of `KACHE_BENCH_SERVERS` (comma-separated), both when unset.
///
/// # Errors
/// When the variable names an unknown server.
pub fn bench_servers() -> Result<Vec<Server>, BoxError> {
    match std::env::var("KACHE_BENCH_SERVERS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| name.parse::<Server>().map_err(Into::into))
            .collect(),
        _ => Ok(Server::ALL.to_vec()),
    }
}

/// The `ConfigMap`s of `namespace` on the cluster of `kubeconfig`, for a benchmark's child
/// process, with its connection already open: one small LIST first, so that the connection
/// (TLS session, buffers, resolver threads) is not part of what the child measures.
///
/// # Errors
/// When the kubeconfig cannot be read or the LIST fails.
pub async fn connected_api(kubeconfig: &Path, namespace: &str) -> Result<Api<ConfigMap>, BoxError> {
    let config = kube_client::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let api = Api::namespaced(Client::try_from(config)?, namespace);
    api.list(&ListParams::default().limit(1)).await?;
    Ok(api)
}

/// Creates `n` of the benches' `ConfigMap`s ([`config_map`]) in `namespace`,
/// [`IN_FLIGHT`](kache_testenv::IN_FLIGHT) creates at a time. The server records one
/// `managedFields` entry for each.
///
/// # Errors
/// When a create fails.
pub async fn seed_config_maps(
    api: &Api<ConfigMap>,
    namespace: &str,
    n: usize,
) -> Result<(), BoxError> {
    let objects = (0..n).map(|i| {
        let mut cm = config_map(i, 0);
        cm.metadata.namespace = Some(namespace.to_owned());
        cm.metadata.resource_version = None;
        cm.metadata.uid = None;
        cm.metadata.creation_timestamp = None;
        cm
    });
    kache_testenv::create_all(api, objects).await?;
    Ok(())
}

/// Starts a control plane running `server` and seeds `n` of the benches' `ConfigMap`s
/// ([`seed_config_maps`]) into a new namespace named after `prefix`; returns the control plane
/// (keep it: dropping it stops the servers), the namespace and an `Api` on it.
///
/// # Errors
/// When the control plane cannot start or a create fails.
pub async fn seeded_server(
    server: Server,
    prefix: &str,
    n: usize,
) -> Result<(TestEnv, String, Api<ConfigMap>), BoxError> {
    eprintln!("[{server}] starting a local control plane...");
    let env = TestEnv::builder().server(server).start().await?;
    let namespace = env.create_namespace(prefix).await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    seed_config_maps(&api, &namespace, n).await?;
    eprintln!("[{server}] seeded {n} ConfigMaps");
    Ok((env, namespace, api))
}

/// A field of `/proc/self/status` given in kB, such as `VmHWM` (peak RSS) or `VmRSS`, in bytes.
///
/// # Errors
/// When the file cannot be read or has no such field.
pub fn proc_status_bytes(field: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
    let kib: u64 = value.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024)
}

/// The report a benchmark's child process printed: its stdout line that begins with a
/// prefix, made of `name=value` fields.
#[derive(Debug)]
pub struct ChildReport {
    line: String,
}

impl ChildReport {
    /// The line of `output` that begins with `prefix`, if the child (`what`, for the error)
    /// succeeded.
    ///
    /// # Errors
    /// When the child failed or printed no such line; the error carries its stderr.
    pub fn from_output(
        output: &std::process::Output,
        prefix: &str,
        what: &str,
    ) -> Result<Self, BoxError> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .filter(|_| output.status.success())
            .map(|line| Self {
                line: line.to_owned(),
            })
            .ok_or_else(|| {
                format!(
                    "{what} failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                )
                .into()
            })
    }

    /// The value of field `name`.
    ///
    /// # Errors
    /// When the report has no such field or its value does not parse.
    pub fn field<T>(&self, name: &str) -> Result<T, BoxError>
    where
        T: std::str::FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let value = self
            .line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| format!("no {name} in the child's report {:?}", self.line))?;
        Ok(value.parse()?)
    }
}

/// How objects travel on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/vnd.kubernetes.protobuf`.
    Protobuf,
}

impl Encoding {
    /// As ids and command lines have it: `json`, `protobuf`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Protobuf => "protobuf",
        }
    }

    /// As tables say it: `JSON`, `protobuf`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::Protobuf => "protobuf",
        }
    }

    /// The media type to ask for on a LIST.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Protobuf => "application/vnd.kubernetes.protobuf",
        }
    }

    /// The media type to ask for on a WATCH: JSON lines, or length-prefixed protobuf frames.
    #[must_use]
    pub fn watch_media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }
}
