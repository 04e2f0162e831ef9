//! Three replicas of an operator divide 600 `ConfigMap`s between them through Leases
//! (`kache_controller::replicas`): each caches and reconciles only the uid-hash ranges it
//! holds (KEP-5866). One replica dies; the two left take over its ranges within a few
//! seconds, keeping without a relist the objects they already had. Each replica's controller
//! reconciles only the objects of its ranges: the counts printed are its objects, and after
//! the takeover those of the ranges it took as well.
//!
//! It runs the modern server (the Kubernetes 1.36 apiserver library) with the
//! `ShardedListAndWatch` gate on, so the server sends each replica only its ranges. On a
//! server without it the same code works: each replica then receives everything and filters.
//!
//! `cargo run -p kache-examples --example sharded_replicas`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_controller::replicas::{Ranges, Replica, Replicas};
use kache_controller::{Action, Config, Controller};
use kache_examples::{BoxError, init_tracing, wait_for};
use kache_testenv::{Server, TestEnv};
use kube_client::api::{ListParams, ObjectMeta, PostParams};
use kube_client::{Api, Client};
use tokio::task::JoinHandle;

const OBJECTS: usize = 600;

/// One replica, as its own process would run it: its membership, and a controller that
/// reconciles only what the replica holds.
struct Running {
    name: String,
    replica: Replica<ConfigMap>,
    reconciles: Arc<AtomicUsize>,
    tasks: [JoinHandle<()>; 2],
}

async fn reconcile(
    _: Arc<ConfigMap>,
    reconciles: Arc<AtomicUsize>,
) -> Result<Action, kube_client::Error> {
    reconciles.fetch_add(1, Ordering::Relaxed);
    Ok(Action::await_change())
}

fn start(client: &Client, ns: &str, name: &str) -> Result<Running, BoxError> {
    let (replica, membership) = Replicas::new(
        Api::<Lease>::namespaced(client.clone(), ns),
        "config-maps",
        name,
    )
    // Lease duration, renew deadline, renewal interval: short, for a quick takeover.
    .timing(
        Duration::from_secs(3),
        Duration::from_secs(2),
        Duration::from_millis(500),
    )
    .start(
        Api::<ConfigMap>::namespaced(client.clone(), ns),
        kache_watch::Config::default(),
    )?;
    let reconciles = Arc::new(AtomicUsize::new(0));
    let controller = Controller::new(replica.store(), Config::default())
        .within(replica.ownership())
        .run(
            reconcile,
            kache_controller::backoff,
            Arc::clone(&reconciles),
        )
        .for_each(|_| async {});
    Ok(Running {
        name: name.to_owned(),
        replica,
        reconciles,
        tasks: [tokio::spawn(membership), tokio::spawn(controller)],
    })
}

/// Whether the replicas hold every range between them, and their stores every listed object
/// exactly once.
async fn covered(api: &Api<ConfigMap>, replicas: &[Running]) -> bool {
    let held = replicas.iter().fold(Ranges::empty(), |all, running| {
        all.union(&running.replica.ownership().held())
    });
    let Ok(list) = api.list(&ListParams::default()).await else {
        return false;
    };
    let mut cached: Vec<String> = replicas
        .iter()
        .flat_map(|running| running.replica.store().state())
        .filter_map(|cm| cm.metadata.name.clone())
        .collect();
    cached.sort();
    let mut listed: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    listed.sort();
    held == Ranges::full() && cached == listed
}

fn describe(replicas: &[Running]) {
    for running in replicas {
        let held = running.replica.ownership().held();
        println!(
            "  {}: {} objects, {} reconciles so far, holds {:.0}% of the hash space: {held}",
            running.name,
            running.replica.store().len(),
            running.reconciles.load(Ordering::Relaxed),
            held.share() * 100.0,
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_tracing();
    eprintln!("starting the modern server with ShardedListAndWatch on...");
    let env = TestEnv::builder()
        .server(Server::Modern)
        .feature_gate("ShardedListAndWatch", true)
        .start()
        .await?;
    let ns = env.create_namespace("sharded").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    for i in 0..OBJECTS {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm-{i}")),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        api.create(&PostParams::default(), &cm).await?;
    }

    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(start(&env.client(), &ns, &format!("replica-{i}"))?);
    }
    wait_for("three replicas to cover every object", || {
        covered(&api, &replicas)
    })
    .await?;
    println!("3 replicas hold {OBJECTS} objects between them, each exactly once:");
    describe(&replicas);

    // replica-2 dies: no goodbye, its Lease simply stops being renewed.
    let dead = replicas.pop().expect("three replicas");
    dead.tasks.iter().for_each(JoinHandle::abort);
    let killed = Instant::now();
    wait_for("the survivors to take over", || covered(&api, &replicas)).await?;
    println!(
        "{} died; {:.1} s later the 2 others hold every object exactly once:",
        dead.name,
        killed.elapsed().as_secs_f64()
    );
    describe(&replicas);
    // The others leave in order: their ranges released, their Leases deleted.
    for running in replicas {
        running.replica.leave();
        let [membership, controller] = running.tasks;
        membership.await?;
        controller.abort();
    }
    Ok(())
}
