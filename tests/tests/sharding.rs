//! Sharded watches (KEP-5866) against real servers: the modern server with the
//! `ShardedListAndWatch` gate on applies the shard itself, the legacy server and the modern one
//! with the gate off ignore it and the watcher applies it; either way the same objects.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::Writer;
use kache_tests::{
    Reflector, Server, TestEnv, create_configmaps, delete_all, eventually, key_of, listed_versions,
    on_each_server, stored_versions, version_of, within,
};
use kache_watch::{Config, InitialListStrategy, Shard, uid_hash};
use kube_client::{Api, api::ListParams};

/// Objects in each test namespace.
const OBJECTS: usize = 120;
/// Shards the namespace is split into.
const SHARDS: u32 = 3;

/// A control plane for the sharding tests: the modern server with sharded list and watch on
/// when `gate` is set (the legacy server knows no such gate).
async fn env(server: Server, gate: bool) -> TestEnv {
    let mut builder = TestEnv::builder().server(server);
    if gate {
        builder = builder.feature_gate("ShardedListAndWatch", true);
    }
    builder.start().await.expect("control plane")
}

/// The objects of `shard` in a full LIST, selected with kache's hash.
async fn expected(api: &Api<ConfigMap>, shard: &Shard) -> BTreeMap<String, String> {
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .filter(|cm| shard.contains(*cm))
        .map(|cm| (key_of(cm), version_of(cm)))
        .collect()
}

/// A raw LIST with `shardSelector`: the names the server sent, and the selector it echoed in
/// `metadata.shardInfo`, if any.
async fn raw_sharded_list(
    env: &TestEnv,
    ns: &str,
    shard: &Shard,
) -> (BTreeSet<String>, Option<String>) {
    let selector: String = shard
        .selector()
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{ns}/configmaps?shardSelector={selector}"
    ))
    .body(Vec::new())
    .unwrap();
    let list: serde_json::Value = env.client().request(request).await.unwrap();
    let names = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let echo = list["metadata"]["shardInfo"]["selector"]
        .as_str()
        .map(str::to_owned);
    (names, echo)
}

/// Runs one watcher per shard into its own store, checks that each holds exactly its shard
/// of the namespace, that together they hold every object once, and that they follow
/// creates and deletes.
async fn shards_hold_exactly_their_objects(env: &TestEnv, strategy: InitialListStrategy) {
    let ns = env.create_namespace("shard").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
    create_configmaps(&api, "cm", OBJECTS, &[]).await;

    let shards: Vec<Shard> = (0..SHARDS)
        .map(|i| Shard::nth(i, SHARDS).unwrap())
        .collect();
    let mut replicas = Vec::new();
    for shard in &shards {
        let writer = Writer::new();
        let store = writer.as_reader();
        let config = Config::default()
            .shard(shard.clone())
            .initial_list_strategy(strategy)
            .page_size(50);
        let reflector = Reflector::start(api.clone(), config, writer);
        within("a shard's store to be ready", store.wait_synced())
            .await
            .unwrap();
        replicas.push((shard, store, reflector));
    }
    let check = || async {
        let all = listed_versions(&api).await;
        let mut union = BTreeMap::new();
        for (shard, store, _) in &replicas {
            let held = stored_versions(store);
            if held != expected(&api, shard).await {
                return false;
            }
            for (key, version) in held {
                if union.insert(key, version).is_some() {
                    return false;
                }
            }
        }
        union == all
    };
    eventually("each shard to hold exactly its objects", check).await;

    create_configmaps(&api, "late", 30, &[]).await;
    delete_all(&api, (0..20).map(|i| format!("cm-{i}")))
        .await
        .unwrap();
    eventually("each shard to follow creates and deletes", check).await;
    for (_, _, reflector) in &replicas {
        assert_eq!(
            kache_tests::Counters::get(&reflector.counters.errors),
            0,
            "no watcher error"
        );
    }
}

on_each_server! {
    /// On the modern server with the gate on, the server's own selection (a raw LIST with
    /// `shardSelector`, which it echoes back) is exactly what kache's hash selects; on the
    /// legacy server the parameter is ignored and nothing is echoed.
    async fn server_selects_what_the_client_hash_selects(server: Server) {
        let sharding = server == Server::Modern;
        let env = env(server, sharding).await;
        let ns = env.create_namespace("shard-raw").await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        create_configmaps(&api, "cm", OBJECTS, &[]).await;
        assert_eq!(kache_watch::server_shards(&api).await.unwrap(), sharding);
        let list = api.list(&ListParams::default()).await.unwrap();
        // The uids are random: each shard holds some, which the hash of each confirms.
        for i in 0..SHARDS {
            let shard = Shard::nth(i, SHARDS).unwrap();
            let by_hash: BTreeSet<String> = list
                .items
                .iter()
                .filter(|cm| shard.contains_hash(uid_hash(cm.metadata.uid.as_deref().unwrap())))
                .map(|cm| cm.metadata.name.clone().unwrap())
                .collect();
            let (sent, echo) = raw_sharded_list(&env, &ns, &shard).await;
            if sharding {
                assert_eq!(sent, by_hash, "shard {i}: the server's selection");
                assert_eq!(echo.as_deref(), Some(shard.selector().as_str()));
            } else {
                assert_eq!(sent.len(), OBJECTS, "the legacy server ignores the selector");
                assert_eq!(echo, None);
            }
        }
    }

    /// Three sharded watchers (paged lists) hold their shards exactly, on either server.
    async fn sharded_watchers_with_paged_lists_hold_their_shards(server: Server) {
        let env = env(server, server == Server::Modern).await;
        shards_hold_exactly_their_objects(&env, InitialListStrategy::ListWatch).await;
    }

    /// The same with the default strategy (streaming lists where the server has them).
    async fn sharded_watchers_with_the_default_strategy_hold_their_shards(server: Server) {
        let env = env(server, server == Server::Modern).await;
        shards_hold_exactly_their_objects(&env, InitialListStrategy::Auto).await;
    }
}

/// The modern server with the gate off ignores the selector, like the legacy one: the watcher
/// filters on the client and holds the same objects.
#[tokio::test]
async fn client_side_shards_on_the_modern_server_without_the_gate() {
    kache_tests::run_on(Server::Modern, |server| async move {
        let env = env(server, false).await;
        shards_hold_exactly_their_objects(&env, InitialListStrategy::Auto).await;
    })
    .await;
}
