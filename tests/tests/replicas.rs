//! Replicas that divide a collection through Leases (`kache_controller::replicas`): three
//! replicas with clients of their own share 3,000 objects; one is killed; the survivors take
//! over its ranges within a bound, each then caching exactly the objects of the ranges it
//! holds, together every object exactly once, equal to a fresh LIST, while creates and deletes
//! go on. Each replica's bytes from the server are reported, with the server sharding and with
//! the replicas filtering on the client.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_controller::replicas::{Ranges, Replica, Replicas};
use kache_tests::{
    Proxy, Server, TestEnv, create_configmaps, key_of, listed_versions, on_each_server, version_of,
};
use kache_watch::{Shard, uid_hash};
use kube_client::{Api, api::DeleteParams, api::PostParams};
use tokio::{sync::RwLock, task::JoinHandle, time::Instant};

const OBJECTS: usize = 3_000;
const REPLICAS: usize = 3;
const LEASE: Duration = Duration::from_secs(3);
const DEADLINE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
/// How long the survivors may take to cover the killed replica's ranges: its Lease must go
/// stale (3 s on their clocks), then a round lists the new ranges, claims them once synced and
/// confirms the claims, and the segments outside the new ranges retire.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

struct Running {
    replica: Replica<ConfigMap>,
    task: JoinHandle<()>,
    /// Its own way to the server, counting the bytes it receives.
    proxy: Proxy,
}

/// Every object the replicas cache, once they have settled: `None` unless their held ranges
/// are disjoint and cover the hash space, and each caches only objects of the ranges it holds
/// (so no object twice).
fn union(replicas: &[&Running]) -> Option<BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    let mut covered = Ranges::empty();
    for running in replicas {
        let held = running.replica.ownership().held();
        if held.overlaps(&covered) {
            return None;
        }
        covered = covered.union(&held);
        for cm in running.replica.store().state() {
            let uid = cm.metadata.uid.as_deref()?;
            if !held.contains(uid_hash(uid))
                || all
                    .insert(key_of(cm.as_ref()), version_of(cm.as_ref()))
                    .is_some()
            {
                return None;
            }
        }
    }
    (covered == Ranges::full()).then_some(all)
}

/// Each replica's cache size and held ranges, for a failure message.
fn describe(replicas: &[&Running]) -> Vec<String> {
    replicas
        .iter()
        .map(|running| {
            format!(
                "{} objects, holds {}",
                running.replica.store().len(),
                running.replica.ownership().held()
            )
        })
        .collect()
}

/// Waits, at most `bound`, until the replicas together hold a fresh LIST exactly once, each
/// the objects of its held ranges.
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
            "the replicas did not cover the LIST exactly once within {bound:?}: {} listed; {:?}",
            listed.len(),
            describe(replicas)
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
        let proxy = Proxy::start(env.server_url()).await.expect("proxy");
        // Its Lease and its watches both through its proxy, as a replica process's would be.
        let client = proxy.client(env.config()).expect("client");
        let (replica, membership) = Replicas::new(
            Api::<Lease>::namespaced(client.clone(), &ns),
            "cms",
            &format!("replica-{i}"),
        )
        .timing(LEASE, DEADLINE, RENEW)
        .start(
            Api::<ConfigMap>::namespaced(client, &ns),
            kache_watch::Config::default(),
        )
        .expect("valid settings");
        let task = tokio::spawn(membership);
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

    // Killed: no renewal, no goodbye; its Lease goes stale. Its task is gone before its
    // `Replica` is dropped: a dropped `Replica` would leave in order instead.
    let killed = replicas.pop().unwrap();
    killed.task.abort();
    let _ = killed.task.await;
    let killed_bytes = killed.proxy.bytes_from_server();
    drop((killed.replica, killed.proxy));
    let survivors: Vec<&Running> = replicas.iter().collect();
    let takeover = until_covered(&api, &survivors, &churn_lock, TAKEOVER_BOUND).await;
    // Ranks among the two live identities: replica-0 the first half, replica-1 the second.
    for (i, running) in (0..).zip(&survivors) {
        let half = Ranges::of(Shard::nth(i, 2).unwrap().ranges());
        assert_eq!(running.replica.ownership().held(), half, "replica-{i}");
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
        .map(|running| running.proxy.bytes_from_server())
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
