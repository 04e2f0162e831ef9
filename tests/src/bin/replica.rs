//! One replica of a sharded operator, as its own OS process, for the multi-process tests
//! (`tests/tests/replica_processes.rs`) and the replica benchmark: it joins a group through
//! `kache_controller::replicas`, reconciles the `ConfigMap`s of its ranges, and logs each
//! reconcile's start and end, and each change of its ranges, to a file the test reads.
//!
//! Settings come from the environment (all required but the timing):
//! - `KUBECONFIG`: the cluster; `REPLICA_SERVER`: the server URL to use instead of the
//!   kubeconfig's (a proxy in front of it).
//! - `REPLICA_NAMESPACE`, `REPLICA_GROUP`, `REPLICA_IDENTITY`, `REPLICA_LOG`.
//! - `REPLICA_TIMING_MS`: `lease,deadline,renew,drain` (default `3000,2000,500,2000`);
//!   `REPLICA_WORK_MS`: the time a reconcile waits, as for I/O (default 20);
//!   `REPLICA_CONCURRENCY` (default 4); `REPLICA_REQUEUE_MS`: reconcile every object again this
//!   long after its last reconcile (default: only on changes).
//!
//! The log's lines, times in microseconds since the Unix epoch:
//! - `start ID KEY GEN T` / `end ID T ok|stopped`: a reconcile of KEY that saw data `gen` GEN;
//!   `end` is written when the reconcile's future is dropped: `ok` if it returned.
//! - `held RANGES T`, in `REPLICA_LOG` + `.held`: the ranges it may reconcile, each time they
//!   change (empty: `-`).
//! - `left T`: after an orderly leave, its Lease deleted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_controller::replicas::Replicas;
use kache_controller::{Action, Config, Controller};
use kube_client::config::{KubeConfigOptions, Kubeconfig};
use kube_client::{Api, Client};
use parking_lot::Mutex;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Microseconds since the Unix epoch: one clock for every process of the machine.
fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

struct Log {
    file: Mutex<File>,
    ids: AtomicU64,
}

impl Log {
    fn line(&self, line: &str) {
        let mut file = self.file.lock();
        // One write per line (O_APPEND): a killed process leaves whole lines.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// Writes the reconcile's `end` when dropped: on return, or when the controller stops it.
struct Running {
    log: Arc<Log>,
    id: u64,
    completed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let how = if self.completed { "ok" } else { "stopped" };
        self.log
            .line(&format!("end {} {} {how}", self.id, now_us()));
    }
}

struct Context {
    log: Arc<Log>,
    work: Duration,
    requeue: Option<Duration>,
}

async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, kube_client::Error> {
    let id = ctx.log.ids.fetch_add(1, Ordering::Relaxed);
    let key = format!(
        "{}/{}",
        cm.metadata.namespace.as_deref().unwrap_or_default(),
        cm.metadata.name.as_deref().unwrap_or_default()
    );
    let generation = cm
        .data
        .as_ref()
        .and_then(|data| data.get("gen"))
        .map_or("-", String::as_str);
    ctx.log
        .line(&format!("start {id} {key} {generation} {}", now_us()));
    let mut running = Running {
        log: Arc::clone(&ctx.log),
        id,
        completed: false,
    };
    tokio::time::sleep(ctx.work).await;
    running.completed = true;
    Ok(ctx
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

fn var(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn millis(list: &str) -> Result<Vec<Duration>, BoxError> {
    list.split(',')
        .map(|ms| Ok(Duration::from_millis(ms.trim().parse()?)))
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kache_controller=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (ns, group, identity) = (
        var("REPLICA_NAMESPACE")?,
        var("REPLICA_GROUP")?,
        var("REPLICA_IDENTITY")?,
    );
    let open = |path: String| -> Result<Arc<Log>, BoxError> {
        Ok(Arc::new(Log {
            file: Mutex::new(OpenOptions::new().create(true).append(true).open(path)?),
            ids: AtomicU64::new(0),
        }))
    };
    let log = open(var("REPLICA_LOG")?)?;
    let held_log = open(format!("{}.held", var("REPLICA_LOG")?))?;
    let timing = millis(
        &std::env::var("REPLICA_TIMING_MS").unwrap_or_else(|_| "3000,2000,500,2000".into()),
    )?;
    let [lease, deadline, renew, drain] = timing[..] else {
        return Err("REPLICA_TIMING_MS: lease,deadline,renew,drain".into());
    };
    let work =
        Duration::from_millis(std::env::var("REPLICA_WORK_MS").map_or(Ok(20), |ms| ms.parse())?);
    let concurrency = std::env::var("REPLICA_CONCURRENCY").map_or(Ok(4), |n| n.parse())?;
    let requeue = match std::env::var("REPLICA_REQUEUE_MS") {
        Ok(ms) => Some(Duration::from_millis(ms.parse()?)),
        Err(_) => None,
    };

    let kubeconfig = Kubeconfig::read_from(var("KUBECONFIG")?)?;
    let mut config =
        kube_client::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await?;
    if let Ok(server) = std::env::var("REPLICA_SERVER") {
        config.cluster_url = server.parse()?;
    }
    let client = Client::try_from(config)?;

    let (replica, membership) = Replicas::new(
        Api::<Lease>::namespaced(client.clone(), &ns),
        &group,
        &identity,
    )
    .timing(lease, deadline, renew)
    .drain_timeout(drain)
    .start(
        Api::<ConfigMap>::namespaced(client, &ns),
        kache_watch::Config::default(),
    )?;
    let mut membership = tokio::spawn(membership);

    // Each change of the ranges it may reconcile, as the controller sees them.
    let ownership = replica.ownership();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let held = ownership.held();
            if last.as_ref() != Some(&held) {
                let text = held.to_string();
                held_log.line(&format!(
                    "held {} {}",
                    if text.is_empty() { "-" } else { &text },
                    now_us()
                ));
                last = Some(held);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let context = Arc::new(Context {
        log: Arc::clone(&log),
        work,
        requeue,
    });
    let controller = Controller::new(
        replica.store(),
        Config::default().name(&identity).concurrency(concurrency),
    )
    .within(replica.ownership())
    .run(reconcile, kache_controller::backoff, context)
    .for_each(|_| async {});
    let mut controller = std::pin::pin!(controller);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = &mut controller => return Err("the controller stopped".into()),
        _ = &mut membership => return Err("the membership stopped".into()),
        _ = terminate.recv() => {}
    }
    // An orderly leave: the controller runs on while the ranges drain.
    replica.leave();
    // Once left, the replica's store closes, and with it the controller's stream.
    tokio::select! {
        left = &mut membership => left?,
        () = controller => membership.await?,
    }
    log.line(&format!("left {}", now_us()));
    Ok(())
}
