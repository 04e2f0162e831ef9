//! The test environment: a local control plane, or an existing cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_client::config::{KubeConfigOptions, Kubeconfig};
use kube_client::core::params::PostParams;
use kube_client::core::{DynamicObject, Request};
use kube_client::{Client, Config};
use tokio::sync::{Mutex, OnceCell};

use crate::apiserver;
use crate::assets::Assets;
use crate::error::{Error, Result};
use crate::etcd::{self, Etcd};
use crate::process::{Janitor, Supervised, log_tail};
use crate::server::Server;
use crate::workdir::{
    self, ADMIN_CONTEXT, OPERATOR_USER, OPERATORS_GROUP, UNPRIVILEGED_CONTEXT, UNPRIVILEGED_USER,
};

/// Lines of a log quoted in a [`Error::NotReady`].
const LOG_TAIL_LINES: usize = 30;

/// A Kubernetes API server for tests: etcd and an API server ([`Server`]) started on loopback, or an
/// existing cluster when `KACHE_USE_EXISTING_CLUSTER=1`.
///
/// Dropping a locally started environment stops both processes and removes its working
/// folder. See the [crate docs](crate) for where the binaries come from.
#[derive(Debug)]
pub struct TestEnv {
    admin: Config,
    unprivileged: Config,
    operator: Config,
    kubeconfig: PathBuf,
    server_url: String,
    /// `None` for an existing cluster.
    local: Option<Local>,
}

/// The API server's process name, in logs and errors.
fn component(server: Server) -> &'static str {
    match server {
        Server::Legacy => "kube-apiserver",
        Server::Modern => "kache-apiserver",
    }
}

/// Options for starting a [`TestEnv`]; get one from [`TestEnv::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct Builder {
    server: Option<Server>,
    watch_cache: bool,
    feature_gates: Vec<(String, bool)>,
    apiserver_args: Vec<String>,
    ready_timeout: Duration,
    use_existing_cluster: Option<bool>,
    second_apiserver: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            server: None,
            watch_cache: true,
            feature_gates: Vec::new(),
            apiserver_args: Vec::new(),
            ready_timeout: Duration::from_secs(60),
            use_existing_cluster: None,
            second_apiserver: false,
        }
    }
}

impl Builder {
    /// Which API server to run (default: [`Server::from_env`], that is `KACHE_TEST_SERVER`,
    /// else [`Server::Legacy`]). Ignored on an existing cluster.
    pub fn server(mut self, server: Server) -> Self {
        self.server = Some(server);
        self
    }

    /// Sets a feature gate of the API server (`--feature-gates=NAME=BOOL`), such as
    /// `WatchList` or `ShardedListAndWatch` on [`Server::Modern`]; later calls win. A gate the
    /// server does not know makes it fail to start with [`Error::NotReady`] quoting its log.
    pub fn feature_gate(mut self, name: impl Into<String>, enabled: bool) -> Self {
        self.feature_gates.push((name.into(), enabled));
        self
    }

    /// Whether the API server serves lists and watches from its watch cache (the default, as
    /// in production). With `false` every request goes to etcd, so after
    /// [`TestEnv::compact_etcd`] an old resourceVersion reliably gets `410 Gone`. With the
    /// watch cache on, a compaction followed by [`TestEnv::restart_apiserver`] does the same:
    /// the restarted server fills its cache from etcd's current revision, and older versions
    /// are then neither in the cache nor in etcd.
    pub fn watch_cache(mut self, enabled: bool) -> Self {
        self.watch_cache = enabled;
        self
    }

    /// Adds an API server flag such as `--default-watch-cache-size=0`; later flags win.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// How long etcd and the API server each get to become ready (default 60 s), at start
    /// and after every restart.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Also starts a second API server of the same version, flags and certificate over the
    /// same etcd: a highly available control plane, as production clusters run. Its URL is the
    /// second of [`TestEnv::server_urls`]; put [`Proxy::balance`](crate::Proxy::balance) in
    /// front of both as the load balancer. It reaches etcd through a link of its own, so that
    /// [`TestEnv::lag_second_apiserver`] can make its watch cache fall behind while it keeps
    /// serving. Only for a control plane this crate starts.
    pub fn second_apiserver(mut self) -> Self {
        self.second_apiserver = true;
        self
    }

    /// Uses the cluster of `KUBECONFIG` (or `~/.kube/config`) instead of starting one,
    /// overriding the `KACHE_USE_EXISTING_CLUSTER` environment variable.
    pub fn use_existing_cluster(mut self, existing: bool) -> Self {
        self.use_existing_cluster = Some(existing);
        self
    }

    /// Starts the control plane and waits until it serves requests (or connects to the
    /// existing cluster).
    ///
    /// # Errors
    ///
    /// Any [`Error`] of a start stage: binaries, provisioning, setup, spawn, readiness,
    /// kubeconfig, client.
    pub async fn start(self) -> Result<TestEnv> {
        let existing = self.use_existing_cluster.unwrap_or_else(|| {
            std::env::var("KACHE_USE_EXISTING_CLUSTER")
                .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "True"))
        });
        if existing {
            TestEnv::existing().await
        } else {
            let server = match self.server {
                Some(server) => server,
                None => Server::from_env().map_err(|e| Error::Setup {
                    step: format!("read KACHE_TEST_SERVER: {e}"),
                    source: None,
                })?,
            };
            TestEnv::start_local(self, server).await
        }
    }
}

/// The second API server of a highly available control plane.
#[derive(Debug)]
struct Second {
    url: String,
    args: Vec<String>,
    /// Its link to etcd.
    link: crate::Proxy,
}

/// The processes and files of a control plane this crate started.
#[derive(Debug)]
struct Local {
    server: Server,
    dir: PathBuf,
    assets: Assets,
    etcd: Etcd,
    apiserver_args: Vec<String>,
    second: Option<Second>,
    ready_timeout: Duration,
    /// A tokio mutex: stop/start await while holding it, and it is not tied to a runtime.
    processes: Mutex<Processes>,
    /// Declared last so it drops last: the folder goes once the processes are stopped.
    _janitor: Janitor,
}

/// Fields drop in order: the API server stops before the etcd it talks to.
#[derive(Debug, Default)]
struct Processes {
    second_apiserver: Option<Supervised>,
    apiserver: Option<Supervised>,
    etcd: Option<Supervised>,
}

type SharedCell = OnceCell<Result<TestEnv, Arc<Error>>>;

/// One shared control plane per [`Server`], in the order of [`Server::ALL`].
static SHARED: [SharedCell; 2] = [OnceCell::const_new(), OnceCell::const_new()];

impl TestEnv {
    /// Starts a control plane with the default options; see [`Builder`] for the others.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// Options for starting a control plane.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// One control plane for the whole test process, started by the first caller, running
    /// the default server ([`Server::from_env`]); see [`shared_on`](Self::shared_on).
    ///
    /// # Errors
    ///
    /// As [`shared_on`](Self::shared_on), and [`Error::Setup`] for a bad `KACHE_TEST_SERVER`.
    pub async fn shared() -> Result<&'static Self> {
        let server = Server::from_env().map_err(|e| Error::Setup {
            step: format!("read KACHE_TEST_SERVER: {e}"),
            source: None,
        })?;
        Self::shared_on(server).await
    }

    /// One control plane running `server` for the whole test process, started by the first
    /// caller.
    ///
    /// Tests that share it should keep to their own namespace (see
    /// [`create_namespace`](Self::create_namespace)) and leave the fault tools alone. It is
    /// never dropped; its processes end and its folder is removed when the process exits.
    ///
    /// # Errors
    ///
    /// [`Error::Shared`] holding the error of the one start attempt, for every caller.
    pub async fn shared_on(server: Server) -> Result<&'static Self> {
        // No runtime-bound state lives in a TestEnv (std child processes, client configs
        // only), so it may be started on whichever test's runtime comes first.
        let cell = &SHARED[usize::from(server == Server::Modern)];
        let result = cell
            .get_or_init(|| async {
                Self::builder()
                    .server(server)
                    .start()
                    .await
                    .map_err(Arc::new)
            })
            .await;
        result.as_ref().map_err(|e| Error::Shared {
            source: Arc::clone(e),
        })
    }

    /// A client acting as an administrator (group `system:masters`).
    ///
    /// Each call builds a new client: a client's connection pool belongs to the runtime it
    /// was first used on, and each `#[tokio::test]` has its own.
    ///
    /// # Panics
    ///
    /// Never in practice: the same configuration already built a client at start.
    #[must_use]
    pub fn client(&self) -> Client {
        Client::try_from(self.admin.clone()).expect("this configuration built a client at start")
    }

    /// A client acting as `kache-unprivileged`, a user with no RBAC bindings, for tests of
    /// permission errors: anything beyond discovery gets `403 Forbidden`.
    ///
    /// On an existing cluster this impersonates that user (group `system:authenticated`),
    /// which needs the kubeconfig's user to be allowed to impersonate.
    ///
    /// # Panics
    ///
    /// Never in practice: the same configuration already built a client at start.
    #[must_use]
    pub fn client_unprivileged(&self) -> Client {
        Client::try_from(self.unprivileged.clone())
            .expect("this configuration built a client at start")
    }

    /// The configuration of a client acting as `kache-operator` (group `kache:operators`):
    /// allowed everything, like an operator's service account bound to `cluster-admin`, but,
    /// unlike the [admin](Self::config), not in `system:masters`, so the server's limits on
    /// requests in flight (`--max-requests-inflight`, and API Priority and Fairness on
    /// kube-apiserver) apply to it as they do to every operator in a real cluster. Tests of
    /// an overloaded server use it; the admin stays exempt and can still set the scene.
    ///
    /// It impersonates that user with the admin's credentials. On an existing cluster it is
    /// the kubeconfig's own user, whatever its rights and limits.
    #[must_use]
    pub fn operator_config(&self) -> &Config {
        &self.operator
    }

    /// The admin client configuration, for building clients with other settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.admin
    }

    /// The kubeconfig file: generated in the working folder (admin context current, plus a
    /// `kache-unprivileged` context), or the existing cluster's (the first of `KUBECONFIG`).
    #[must_use]
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, such as `https://127.0.0.1:40123`.
    #[must_use]
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The URLs of the API servers: the first is [`server_url`](Self::server_url), the second
    /// that of [`Builder::second_apiserver`] if there is one.
    #[must_use]
    pub fn server_urls(&self) -> Vec<&str> {
        let second = self
            .local
            .as_ref()
            .and_then(|local| local.second.as_ref())
            .map(|second| second.url.as_str());
        std::iter::once(self.server_url.as_str())
            .chain(second)
            .collect()
    }

    /// Makes the second API server's watch cache fall behind: its link to etcd holds back
    /// every answer and event (connections stay open) until
    /// [`catch_up_second_apiserver`](Self::catch_up_second_apiserver). It keeps answering
    /// what needs no etcd: a WATCH from a version its cache has not reached waits (and, on
    /// recent servers, is answered "Too large resource version"), as an API server behind a
    /// load balancer that lags the one a client left.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a second API server.
    pub fn lag_second_apiserver(&self) -> Result<()> {
        self.second("lag_second_apiserver")?.link.pause();
        Ok(())
    }

    /// Lets the second API server's link to etcd through again: its cache catches up.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] without a second API server.
    pub fn catch_up_second_apiserver(&self) -> Result<()> {
        self.second("catch_up_second_apiserver")?.link.resume();
        Ok(())
    }

    fn second(&self, operation: &'static str) -> Result<&Second> {
        self.require_local(operation)?
            .second
            .as_ref()
            .ok_or(Error::NoSecondApiserver { operation })
    }

    /// The API server this environment started, or `None` on an existing cluster.
    #[must_use]
    pub fn server(&self) -> Option<Server> {
        self.local.as_ref().map(|l| l.server)
    }

    /// Whether this environment talks to an existing cluster rather than its own processes.
    #[must_use]
    pub fn is_existing_cluster(&self) -> bool {
        self.local.is_none()
    }

    /// The working folder (data, certificates, kubeconfig, logs), or `None` on an existing
    /// cluster.
    #[must_use]
    pub fn work_dir(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.dir.as_path())
    }

    /// Creates a namespace named `<prefix>-<random suffix>` and returns its name, so tests
    /// sharing a control plane do not see each other's objects.
    ///
    /// There is no controller manager, so a deleted namespace stays `Terminating`; there is
    /// no need to delete them.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] if the server refuses it (for example a prefix that is not a DNS label).
    pub async fn create_namespace(&self, prefix: &str) -> Result<String> {
        let api_error = |source| Error::Api {
            context: format!("create namespace {prefix}-*"),
            source,
        };
        let body = format!(
            r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"generateName":"{prefix}-"}}}}"#
        );
        let request = Request::new("/api/v1/namespaces")
            .create(&PostParams::default(), body.into_bytes())
            .map_err(|e| api_error(kube_client::Error::BuildRequest(e)))?;
        let created: DynamicObject = self.client().request(request).await.map_err(api_error)?;
        let name = created.metadata.name.unwrap_or_default();
        tracing::debug!(namespace = %name, "created namespace");
        Ok(name)
    }

    /// Stops the API server (etcd keeps running); clients get connection errors until
    /// [`start_apiserver`](Self::start_apiserver).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster.
    pub async fn stop_apiserver(&self) -> Result<()> {
        let local = self.require_local("stop_apiserver")?;
        let stopped = local.processes.lock().await.apiserver.take();
        if let Some(apiserver) = stopped {
            tracing::info!("stopping {}", component(local.server));
            apiserver.stop().await;
        }
        Ok(())
    }

    /// Starts the API server again on the same port with the same flags, tokens and data, and
    /// waits until it is ready; existing clients reconnect. Does nothing if it is running.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster; [`Error::Spawn`] or [`Error::NotReady`].
    pub async fn start_apiserver(&self) -> Result<()> {
        let local = self.require_local("start_apiserver")?;
        let mut processes = local.processes.lock().await;
        if processes
            .apiserver
            .as_mut()
            .is_some_and(|p| !p.has_exited())
        {
            return Ok(());
        }
        processes.apiserver = Some(local.spawn_apiserver()?);
        drop(processes);
        local.wait_apiserver(&self.admin).await
    }

    /// Stops and starts the API server (see [`start_apiserver`](Self::start_apiserver)):
    /// every watch is cut, no data is lost.
    ///
    /// # Errors
    ///
    /// As [`start_apiserver`](Self::start_apiserver).
    pub async fn restart_apiserver(&self) -> Result<()> {
        self.stop_apiserver().await?;
        self.start_apiserver().await
    }

    /// Restarts etcd on the same port and data folder, then waits until etcd and
    /// the API server are both ready again.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster; [`Error::Spawn`] or [`Error::NotReady`].
    pub async fn restart_etcd(&self) -> Result<()> {
        let local = self.require_local("restart_etcd")?;
        let mut processes = local.processes.lock().await;
        if let Some(etcd) = processes.etcd.take() {
            tracing::info!("stopping etcd");
            etcd.stop().await;
        }
        processes.etcd = Some(local.spawn_etcd()?);
        drop(processes);
        local.wait_etcd().await?;
        local.wait_apiserver(&self.admin).await
    }

    /// The current etcd revision, the number resourceVersions are made of.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster; [`Error::Etcdctl`].
    pub async fn etcd_revision(&self) -> Result<i64> {
        self.require_local("etcd_revision")?.etcd.revision().await
    }

    /// Compacts etcd at its current revision and returns that revision: every older
    /// resourceVersion is gone. With [`Builder::watch_cache`]`(false)`, a WATCH from an older
    /// resourceVersion then gets an `ERROR` event with `410 Gone`, and a LIST with an older
    /// `continue` token gets HTTP 410.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster; [`Error::Etcdctl`].
    pub async fn compact_etcd(&self) -> Result<i64> {
        let revision = self.require_local("compact_etcd")?.etcd.compact().await?;
        tracing::info!(revision, "compacted etcd");
        Ok(revision)
    }

    /// The last `lines` lines of the API server's log, for failure messages.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster.
    pub fn apiserver_log_tail(&self, lines: usize) -> Result<String> {
        let local = self.require_local("apiserver_log_tail")?;
        Ok(log_tail(&apiserver::log_path(&local.dir), lines))
    }

    /// The last `lines` lines of etcd's log.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on an existing cluster.
    pub fn etcd_log_tail(&self, lines: usize) -> Result<String> {
        let local = self.require_local("etcd_log_tail")?;
        Ok(log_tail(&etcd::log_path(&local.dir), lines))
    }

    fn require_local(&self, operation: &'static str) -> Result<&Local> {
        self.local.as_ref().ok_or(Error::Unsupported { operation })
    }

    async fn existing() -> Result<Self> {
        let kubeconfig = existing_kubeconfig_path();
        let admin = Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(|source| Error::Kubeconfig {
                path: kubeconfig.clone(),
                source,
            })?;
        let mut unprivileged = admin.clone();
        unprivileged.auth_info.impersonate = Some(UNPRIVILEGED_USER.to_owned());
        unprivileged.auth_info.impersonate_groups = Some(vec!["system:authenticated".to_owned()]);
        Client::try_from(admin.clone()).map_err(|source| Error::Client { source })?;
        let server_url = admin
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned();
        tracing::info!(server = %server_url, "using an existing cluster");
        Ok(Self {
            operator: admin.clone(),
            admin,
            unprivileged,
            kubeconfig,
            server_url,
            local: None,
        })
    }

    async fn start_local(options: Builder, server: Server) -> Result<Self> {
        let started = Instant::now();
        let assets = Assets::locate(server).await?;
        tracing::debug!(?assets, "control plane binaries");
        let dir = workdir::create_dir()?;
        // From here on the janitor (and then `Local`'s drop) removes the folder on failure.
        let janitor = Janitor::spawn(&dir).map_err(|source| Error::Setup {
            step: "spawn the clean-up watchdog".to_owned(),
            source: Some(source),
        })?;
        let [client_port, peer_port, apiserver_port] = workdir::free_ports()?;
        let admin_token = workdir::random_token()?;
        let unprivileged_token = workdir::random_token()?;
        workdir::write_token_file(&dir.join("tokens.csv"), &admin_token, &unprivileged_token)?;
        workdir::write_service_account_key(&dir.join("service-account.key")).await?;
        let server_url = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        let write_kubeconfig = |ca: Option<&Path>| {
            workdir::write_kubeconfig(
                &kubeconfig,
                &server_url,
                &admin_token,
                &unprivileged_token,
                ca,
            )
        };
        write_kubeconfig(None)?;
        let admin = load_context(&kubeconfig, ADMIN_CONTEXT).await?;
        Client::try_from(admin.clone()).map_err(|source| Error::Client { source })?;

        let etcd = Etcd {
            data_dir: dir.join("etcd"),
            client_port,
            peer_port,
            etcdctl: assets.etcdctl.clone(),
        };
        let apiserver_args = apiserver::Flags {
            server,
            dir: &dir,
            port: apiserver_port,
            etcd_endpoint: etcd.endpoint(),
            watch_cache: options.watch_cache,
            feature_gates: &options.feature_gates,
            extra: &options.apiserver_args,
        }
        .args();
        let mut local = Local {
            server,
            dir,
            assets,
            etcd,
            apiserver_args,
            second: None,
            ready_timeout: options.ready_timeout,
            processes: Mutex::new(Processes::default()),
            _janitor: janitor,
        };
        tracing::info!(dir = %local.dir.display(), server = %server_url, "starting etcd and {}", component(server));
        local.processes.lock().await.etcd = Some(local.spawn_etcd()?);
        local.wait_etcd().await?;
        local.processes.lock().await.apiserver = Some(local.spawn_apiserver()?);
        local.wait_apiserver(&admin).await?;
        // The server made its self-signed certificate on this first start, and reuses it on
        // restarts: from now on clients trust it instead of skipping verification.
        write_kubeconfig(Some(&local.dir.join("certs").join("apiserver.crt")))?;
        let admin = load_context(&kubeconfig, ADMIN_CONTEXT).await?;
        if options.second_apiserver {
            // Started now that the first made the certificate: both serve it (it names
            // 127.0.0.1, whatever the port), so one kubeconfig trusts either.
            let link = crate::Proxy::start(&local.etcd.endpoint()).await?;
            let [port] = workdir::free_ports()?;
            let args = apiserver::Flags {
                server,
                dir: &local.dir,
                port,
                etcd_endpoint: format!("http://{}", link.addr()),
                watch_cache: options.watch_cache,
                feature_gates: &options.feature_gates,
                extra: &options.apiserver_args,
            }
            .args();
            let url = format!("https://127.0.0.1:{port}");
            local.second = Some(Second { url, args, link });
            let second = local.spawn_second()?;
            local.processes.lock().await.second_apiserver = Some(second);
            local.wait_second(&admin).await?;
        }
        let unprivileged = load_context(&kubeconfig, UNPRIVILEGED_CONTEXT).await?;
        let admin_client =
            Client::try_from(admin.clone()).map_err(|source| Error::Client { source })?;
        if server == Server::Legacy {
            apiserver::bind_operators(admin_client).await?;
        }
        let operator = as_operator(&admin);
        tracing::info!(elapsed = ?started.elapsed(), server = %server_url, %server, "control plane ready");
        Ok(Self {
            admin,
            unprivileged,
            operator,
            kubeconfig,
            server_url,
            local: Some(local),
        })
    }
}

impl Local {
    fn spawn_etcd(&self) -> Result<Supervised> {
        Supervised::spawn(
            "etcd",
            &self.assets.etcd,
            &self.etcd.args(),
            &etcd::log_path(&self.dir),
        )
        .map_err(|source| Error::Spawn {
            component: "etcd",
            source,
        })
    }

    fn spawn_apiserver(&self) -> Result<Supervised> {
        let component = component(self.server);
        tracing::debug!(args = ?self.apiserver_args, "{component} flags");
        Supervised::spawn(
            component,
            &self.assets.apiserver,
            &self.apiserver_args,
            &apiserver::log_path(&self.dir),
        )
        .map_err(|source| Error::Spawn { component, source })
    }

    fn spawn_second(&self) -> Result<Supervised> {
        let component = component(self.server);
        let args = self
            .second
            .as_ref()
            .map_or(&self.apiserver_args, |s| &s.args);
        Supervised::spawn(
            component,
            &self.assets.apiserver,
            args,
            &self.dir.join("kube-apiserver-2.log"),
        )
        .map_err(|source| Error::Spawn { component, source })
    }

    async fn wait_second(&self, admin: &Config) -> Result<()> {
        let Some(second) = &self.second else {
            return Ok(());
        };
        let mut config = admin.clone();
        config.cluster_url = second.url.parse().map_err(|e| Error::Setup {
            step: format!("the second API server's URL {}: {e}", second.url),
            source: None,
        })?;
        let deadline = Instant::now() + self.ready_timeout;
        while !apiserver::is_ready(&config).await {
            if Instant::now() >= deadline || self.exited(|p| &mut p.second_apiserver).await {
                return Err(Error::NotReady {
                    component: component(self.server),
                    timeout: self.ready_timeout,
                    log_tail: log_tail(&self.dir.join("kube-apiserver-2.log"), LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::debug!("the second {} is ready", component(self.server));
        Ok(())
    }

    async fn wait_etcd(&self) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        while !self.etcd.is_healthy().await {
            if Instant::now() >= deadline || self.exited(|p| &mut p.etcd).await {
                return Err(Error::NotReady {
                    component: "etcd",
                    timeout: self.ready_timeout,
                    log_tail: log_tail(&etcd::log_path(&self.dir), LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::debug!("etcd is healthy");
        Ok(())
    }

    async fn wait_apiserver(&self, config: &Config) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        while !apiserver::is_ready(config).await {
            if Instant::now() >= deadline || self.exited(|p| &mut p.apiserver).await {
                return Err(Error::NotReady {
                    component: component(self.server),
                    timeout: self.ready_timeout,
                    log_tail: log_tail(&apiserver::log_path(&self.dir), LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::debug!("{} is ready", component(self.server));
        Ok(())
    }

    /// Whether the process picked by `which` has exited (or was never started).
    async fn exited(&self, which: impl FnOnce(&mut Processes) -> &mut Option<Supervised>) -> bool {
        which(&mut *self.processes.lock().await)
            .as_mut()
            .is_none_or(Supervised::has_exited)
    }
}

/// `admin` impersonating the operator user: see [`TestEnv::operator_config`].
fn as_operator(admin: &Config) -> Config {
    let mut operator = admin.clone();
    operator.auth_info.impersonate = Some(OPERATOR_USER.to_owned());
    operator.auth_info.impersonate_groups = Some(vec![
        OPERATORS_GROUP.to_owned(),
        "system:authenticated".to_owned(),
    ]);
    operator
}

async fn load_context(path: &Path, context: &str) -> Result<Config> {
    let kubeconfig_error = |source| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(kubeconfig_error)
}

/// The first file of `KUBECONFIG`, else `~/.kube/config`, as kube-client reads them.
fn existing_kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .and_then(|v| std::env::split_paths(&v).find(|p| !p.as_os_str().is_empty()))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube").join("config")))
        .unwrap_or_default()
}

impl Drop for Local {
    fn drop(&mut self) {
        tracing::info!(dir = %self.dir.display(), "stopping the control plane");
        // `Processes` then the janitor drop after this: each server stops, then the folder goes.
    }
}
