//! Replicas that split a collection through Leases (`kache_examples::replicas`): three
//! replicas with clients of their own shard 3,000 objects; one is killed; the survivors take
//! over its range within a bound, together holding every object exactly once, equal to a
//! fresh LIST, while creates and deletes go on. Each replica's bytes from the server are
//! reported, with the server sharding and with the replicas filtering on the client.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::replicas::{Replica, namespaced_replica};
use kache_tests::{
    Server, TestEnv, create_configmaps, key_of, listed_versions, on_each_server, version_of,
};
use kube_client::{Api, api::DeleteParams, api::PostParams};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::RwLock,
    task::JoinHandle,
    time::Instant,
};

const OBJECTS: usize = 3_000;
const REPLICAS: usize = 3;
const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_millis(500);
/// How long the survivors may take to cover the killed replica's range: the lease must go
/// stale (3 s), then a renewal round (0.5 s), a sharded list and the retirement of old ranges.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

/// A loopback TCP proxy that counts the bytes the server sends through it (TLS included).
struct CountingProxy {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl CountingProxy {
    async fn start(server_url: &str) -> Self {
        let target: SocketAddr = server_url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn({
            let received = Arc::clone(&received);
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let received = Arc::clone(&received);
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut from_client, mut to_client) = inbound.into_split();
                        let (mut from_server, mut to_server) = outbound.into_split();
                        let up = tokio::io::copy(&mut from_client, &mut to_server);
                        let down = async {
                            let mut buf = vec![0_u8; 64 * 1024];
                            loop {
                                let n = from_server.read(&mut buf).await?;
                                if n == 0 {
                                    return Ok::<_, std::io::Error>(());
                                }
                                received.fetch_add(n as u64, Ordering::Relaxed);
                                to_client.write_all(&buf[..n]).await?;
                            }
                        };
                        let _ = tokio::join!(up, down);
                    });
                }
            }
        });
        Self {
            addr,
            received,
            accept,
        }
    }

    fn client(&self, env: &TestEnv) -> kube_client::Client {
        let mut config = env.config().clone();
        config.cluster_url = format!("https://{}", self.addr).parse().unwrap();
        kube_client::Client::try_from(config).unwrap()
    }
}

struct Running {
    replica: Replica<ConfigMap>,
    task: JoinHandle<()>,
    proxy: CountingProxy,
}

/// Every object the replicas hold, counting duplicates: `None` when one is held twice.
fn union(replicas: &[&Running]) -> Option<BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    for running in replicas {
        for cm in running.replica.store.state() {
            if all
                .insert(key_of(cm.as_ref()), version_of(cm.as_ref()))
                .is_some()
            {
                return None;
            }
        }
    }
    Some(all)
}

/// Waits, at most `bound`, until the replicas together hold a fresh LIST exactly once.
///
/// Each check holds `churn` (the writers take it shared for each create and delete) from the
/// LIST until the replicas have caught up with it, for at most 250 ms (a watch delivers in
/// milliseconds), then lets the writers go on for 250 ms: with writes every 20 ms, a LIST and
/// a look at the stores are never taken at the same instant otherwise.
async fn until_covered(
    api: &Api<ConfigMap>,
    replicas: &[&Running],
    churn: &RwLock<()>,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let paused = churn.write().await;
        let listed = listed_versions(api).await;
        let caught_up = Instant::now() + Duration::from_millis(250);
        while Instant::now() < caught_up {
            if union(replicas).is_some_and(|held| held == listed) {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(paused);
        assert!(
            start.elapsed() < bound,
            "the replicas did not cover the LIST exactly once within {bound:?}: {} listed, {:?} held",
            listed.len(),
            union(replicas).map(|held| held.len())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the scenario and returns each replica's bytes received up to the end.
async fn kill_one_of_three(server: Server, server_side: bool) -> Vec<u64> {
    let mut builder = TestEnv::builder().server(server);
    if server_side {
        builder = builder.feature_gate("ShardedListAndWatch", true);
    }
    let env = builder.start().await.expect("control plane");
    let ns = env.create_namespace("replicas").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    create_configmaps(&api, "cm", OBJECTS, &[]).await;

    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let proxy = CountingProxy::start(env.server_url()).await;
        let (replica, run) = namespaced_replica(
            proxy.client(&env),
            &ns,
            "cms",
            &format!("replica-{i}"),
            (LEASE, RENEW),
        );
        let task = tokio::spawn(run);
        replicas.push(Running {
            replica,
            task,
            proxy,
        });
    }
    let all: Vec<&Running> = replicas.iter().collect();
    let churn_lock = Arc::new(RwLock::new(()));
    let synced = until_covered(&api, &all, &churn_lock, Duration::from_secs(60)).await;
    eprintln!("{server}: 3 replicas cover {OBJECTS} objects exactly once after {synced:?}");

    // Creates and deletes go on from here to the end.
    let churning = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn({
        let api = api.clone();
        let churning = Arc::clone(&churning);
        let churn_lock = Arc::clone(&churn_lock);
        async move {
            let mut i = 0;
            while churning.load(Ordering::Relaxed) {
                let writing = churn_lock.read().await;
                let cm = kache_tests::configmap(&format!("live-{i}"), &[], 512);
                let _ = api.create(&PostParams::default(), &cm).await;
                let _ = api
                    .delete(&format!("cm-{i}"), &DeleteParams::default())
                    .await;
                drop(writing);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        }
    });

    // Killed: no renewal, no goodbye; its Lease goes stale.
    let killed = replicas.pop().unwrap();
    killed.task.abort();
    let killed_bytes = killed.proxy.received.load(Ordering::Relaxed);
    drop(killed);
    let survivors: Vec<&Running> = replicas.iter().collect();
    let takeover = until_covered(&api, &survivors, &churn_lock, TAKEOVER_BOUND).await;
    for running in &survivors {
        let shard = running.replica.shard.borrow().clone().unwrap();
        assert_eq!(shard.ranges().len(), 1);
    }
    churning.store(false, Ordering::Relaxed);
    let changes = churn.await.unwrap();
    // Still exact once the churn stops.
    let settled = until_covered(&api, &survivors, &churn_lock, Duration::from_secs(30)).await;
    eprintln!(
        "{server} ({}): the 2 survivors covered every object exactly once {takeover:?} after the kill \
         ({changes} creates and deletes during the run; exact again {settled:?} after they stopped)",
        if server_side {
            "server-side shards"
        } else {
            "client-side shards"
        },
    );
    let mut bytes: Vec<u64> = survivors
        .iter()
        .map(|running| running.proxy.received.load(Ordering::Relaxed))
        .collect();
    bytes.push(killed_bytes);
    for running in &replicas {
        running.task.abort();
    }
    bytes
}

fn report(label: &str, bytes: &[u64]) {
    // KiB as integers: no float cast, and enough precision for a report.
    let kib: Vec<String> = bytes.iter().map(|b| format!("{} KiB", b / 1024)).collect();
    eprintln!("{label}: bytes received per replica (survivors, then the killed one): {kib:?}");
}

on_each_server! {
    /// On the modern server with `ShardedListAndWatch` on, the server shards; on the legacy
    /// server every replica receives everything and filters.
    async fn survivors_take_over_a_killed_replicas_range(server: Server) {
        let server_side = server == Server::Modern;
        let bytes = kill_one_of_three(server, server_side).await;
        report(&format!("{server}, server-side sharding {server_side}"), &bytes);
    }
}

/// The same on the modern server with the gate off: client-side shards, for the byte
/// comparison with the server-side run on the same server.
#[tokio::test]
async fn survivors_take_over_with_client_side_shards_on_the_modern_server() {
    kache_tests::run_on(Server::Modern, |server| async move {
        let bytes = kill_one_of_three(server, false).await;
        report("modern, client-side sharding", &bytes);
    })
    .await;
}
