//! Against the real thing: each test starts etcd and an API server (about 10 s each), the
//! one `KACHE_TEST_SERVER` names (`legacy` or `modern`; `just e2e` runs both).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_testenv::TestEnv;
use kube_client::Api;
use kube_client::api::{ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..ConfigMap::default()
    }
}

async fn create(api: &Api<ConfigMap>, name: &str) -> ConfigMap {
    api.create(&PostParams::default(), &config_map(name))
        .await
        .expect("create a config map")
}

/// A fresh namespace named after `prefix`, an `Api` for it, and the resourceVersion of the
/// `ConfigMap` `cm-0` created there first.
async fn first_version(env: &TestEnv, prefix: &str) -> (String, Api<ConfigMap>, String) {
    let namespace = env
        .create_namespace(prefix)
        .await
        .expect("create a namespace");
    let api = Api::<ConfigMap>::namespaced(env.client(), &namespace);
    let old = create(&api, "cm-0")
        .await
        .metadata
        .resource_version
        .expect("a resourceVersion");
    (namespace, api, old)
}

/// A WATCH from `version` gets one ERROR event with `410 Gone`.
async fn assert_watch_is_gone(api: &Api<ConfigMap>, version: &str) {
    let mut events = api
        .watch(&WatchParams::default(), version)
        .await
        .expect("watch")
        .boxed();
    match events.try_next().await.expect("a watch event") {
        Some(WatchEvent::Error(status)) => assert_eq!(status.code, 410, "{status:?}"),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

/// PIDs of processes whose command line mentions `needle` (the working folder is in every
/// server's flags), other than this test process.
fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

#[tokio::test]
async fn shared_env_creates_and_lists_config_maps_in_its_own_namespace() {
    let env = TestEnv::shared()
        .await
        .expect("start the shared control plane");
    let namespace = env
        .create_namespace("kache-testenv")
        .await
        .expect("create a namespace");
    assert!(namespace.starts_with("kache-testenv-"), "{namespace}");
    let api = Api::<ConfigMap>::namespaced(env.client(), &namespace);
    create(&api, "first").await;
    let names: Vec<_> = api
        .list(&ListParams::default())
        .await
        .expect("list config maps")
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    assert_eq!(names, ["first"]);
}

#[tokio::test]
async fn unprivileged_client_is_forbidden_to_list_config_maps() {
    let env = TestEnv::shared()
        .await
        .expect("start the shared control plane");
    let api = Api::<ConfigMap>::namespaced(env.client_unprivileged(), "default");
    let error = api
        .list(&ListParams::default())
        .await
        .expect_err("must be forbidden");
    assert!(
        matches!(&error, kube_client::Error::Api(status) if status.code == 403),
        "{error:?}"
    );
    // The admin token still can.
    Api::<ConfigMap>::namespaced(env.client(), "default")
        .list(&ListParams::default())
        .await
        .expect("admin lists config maps");
}

#[tokio::test]
async fn restarts_keep_data_and_drop_leaves_no_processes_or_files() {
    let env = TestEnv::start().await.expect("start a control plane");
    let dir = env
        .work_dir()
        .expect("a local control plane has a folder")
        .to_owned();
    assert!(
        !processes_mentioning(&dir).is_empty(),
        "servers are running"
    );
    let api = Api::<ConfigMap>::namespaced(env.client(), "default");
    create(&api, "before-restarts").await;

    env.restart_apiserver()
        .await
        .expect("restart kube-apiserver");
    api.get("before-restarts")
        .await
        .expect("kept across an apiserver restart");

    env.restart_etcd().await.expect("restart etcd");
    api.get("before-restarts")
        .await
        .expect("kept across an etcd restart");
    create(&api, "after-restarts").await;

    drop(env);
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<u32>::new(),
        "processes left after drop"
    );
    assert!(!dir.exists(), "{} left after drop", dir.display());
}

#[tokio::test]
async fn compaction_without_watch_cache_expires_old_resource_versions() {
    let env = TestEnv::builder()
        .watch_cache(false)
        .start()
        .await
        .expect("start a control plane");
    let (_, api, old) = first_version(&env, "compaction").await;
    for name in ["cm-1", "cm-2", "cm-3"] {
        create(&api, name).await;
    }
    let page = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("first page");
    let token = page.metadata.continue_.expect("more pages");
    create(&api, "cm-4").await; // moves the revision past the continue token's

    let before = env.etcd_revision().await.expect("etcd revision");
    let compacted = env.compact_etcd().await.expect("compact etcd");
    assert!(compacted >= before);

    assert_watch_is_gone(&api, &old).await;

    let error = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .expect_err("an expired continue token");
    assert!(
        matches!(&error, kube_client::Error::Api(status) if status.code == 410),
        "{error:?}"
    );
}

/// With the watch cache on, old versions are served from the cache's history even after a
/// compaction; a restart of the API server empties that history, and the cache then fills
/// from etcd's current revision, so a watch from a compacted version gets a real `410`.
#[tokio::test]
async fn compaction_and_restart_with_watch_cache_expire_old_resource_versions() {
    let env = TestEnv::start().await.expect("start a control plane");
    let (namespace, api, old) = first_version(&env, "compaction-cached").await;
    create(&api, "cm-1").await;
    env.compact_etcd().await.expect("compact etcd");
    env.restart_apiserver().await.expect("restart");

    let api = Api::<ConfigMap>::namespaced(env.client(), &namespace);
    assert_watch_is_gone(&api, &old).await;
}

/// Runs this binary's `orphan_helper`, which starts the shared control plane and exits
/// without dropping it (as every test binary using `shared` does), then checks that the
/// servers and the folder go away.
#[test]
fn children_do_not_outlive_the_test_process() {
    let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "orphan_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KACHE_TESTENV_ORPHAN_HELPER", "1")
        .output()
        .expect("run the helper");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helper failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir: PathBuf = stdout
        .lines()
        .find_map(|l| l.split_once("WORK_DIR=").map(|(_, dir)| dir.trim()))
        .unwrap_or_else(|| panic!("no WORK_DIR in: {stdout}"))
        .into();

    // The watchdogs send SIGTERM at once and SIGKILL after 10 s; the janitor removes the
    // folder 12 s after the helper exits.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (dir.exists() || !processes_mentioning(&dir).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        processes_mentioning(&dir),
        Vec::<u32>::new(),
        "orphans of {}",
        dir.display()
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[tokio::test]
#[ignore = "run by children_do_not_outlive_the_test_process in a child process"]
async fn orphan_helper() {
    if std::env::var_os("KACHE_TESTENV_ORPHAN_HELPER").is_none() {
        return;
    }
    let env = TestEnv::shared()
        .await
        .expect("start the shared control plane");
    println!(
        "WORK_DIR={}",
        env.work_dir().expect("a local control plane").display()
    );
}
