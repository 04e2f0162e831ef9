//! Three replicas of an operator split a collection between them through Leases, each caching
//! only its shard of the objects (by uid hash, KEP-5866); one replica dies, and the two left
//! take over its range within a few seconds, without relisting what they keep.
//!
//! It runs the modern server (the Kubernetes 1.36 apiserver library) with the
//! `ShardedListAndWatch` gate on, so the server sends each replica only its shard. On a
//! server without it the same code works: each replica then receives everything and filters.
//!
//! `cargo run -p kache-examples --example sharded_replicas`

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::{
    BoxError, init_tracing,
    replicas::{Replica, namespaced_replica},
    wait_for,
};
use kache_testenv::{Server, TestEnv};
use kube_client::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};

const OBJECTS: usize = 600;
const LEASE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(300);

/// Whether the replicas together hold every listed object exactly once.
async fn covered(api: &Api<ConfigMap>, replicas: &[&Replica<ConfigMap>]) -> bool {
    let Ok(list) = api.list(&ListParams::default()).await else {
        return false;
    };
    let mut held: Vec<String> = replicas
        .iter()
        .flat_map(|replica| replica.store.state())
        .map(|cm| cm.metadata.name.clone().unwrap_or_default())
        .collect();
    held.sort();
    let mut listed: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    listed.sort();
    held == listed
}

fn describe(name: &str, replica: &Replica<ConfigMap>) {
    let shard = replica.shard.borrow().as_ref().map(ToString::to_string);
    println!(
        "  {name}: {} objects, shard {}",
        replica.store.len(),
        shard.as_deref().unwrap_or("none")
    );
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

    // Each replica: its own Lease in the group "config-maps", and a store of its shard.
    let mut replicas = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (replica, run) = namespaced_replica(
            env.client(),
            &ns,
            "config-maps",
            &format!("replica-{i}"),
            (LEASE, RENEW),
        );
        replicas.push(replica);
        tasks.push(tokio::spawn(run));
    }
    let all: Vec<&Replica<ConfigMap>> = replicas.iter().collect();
    wait_for("three replicas to cover every object", || {
        covered(&api, &all)
    })
    .await?;
    println!("3 replicas hold {OBJECTS} objects between them, each exactly once:");
    for (i, replica) in replicas.iter().enumerate() {
        describe(&format!("replica-{i}"), replica);
    }

    // replica-2 dies: no goodbye, its Lease simply stops being renewed.
    tasks.pop().expect("three tasks").abort();
    let killed = Instant::now();
    let survivors: Vec<&Replica<ConfigMap>> = replicas.iter().take(2).collect();
    wait_for("the survivors to take over", || covered(&api, &survivors)).await?;
    println!(
        "replica-2 stopped renewing; {:.1} s later the 2 others hold every object exactly once:",
        killed.elapsed().as_secs_f64()
    );
    for (i, replica) in survivors.iter().enumerate() {
        describe(&format!("replica-{i}"), replica);
    }
    for task in tasks {
        task.abort();
    }
    Ok(())
}
