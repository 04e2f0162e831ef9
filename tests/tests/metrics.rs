//! Metrics and health end to end: a cache with metrics behind the example operator's probe
//! server, scraped over HTTP and read as the exposition format, while the test makes known
//! changes on a real API server (creates, deletes, a forced `410 Gone` relist, a server
//! restart) and checks that each counter moved by exactly those changes; and watches the
//! server refuses (403, 404), which `/readyz` and the metrics report within a bounded time.
#![expect(
    clippy::float_cmp,
    reason = "the samples compared are counts, exact in f64"
)]

use std::{collections::BTreeMap, net::SocketAddr, sync::atomic::Ordering, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_examples::{
    exposition::Exposition,
    probes::{self, HealthCheck, METRICS_CONTENT_TYPE, ProbeServer, Probes},
};
use kache_store::{Error, Metrics, ReflectExt, Store, Writer};
use kache_testenv::TestEnv;
use kache_tests::{
    Reflector, converges, create_configmaps, cut_off, delete_all, follow, on_each_server,
    private_env, quick_backoff, within,
};
use kache_watch::{Config, ErrorClass, WatchStreamExt, watcher};
use kube_client::{
    Api,
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use prometheus_client::registry::Registry;

/// The cache's name in every test.
const CACHE: &str = "configmaps";

/// A store of `ConfigMap`s reporting to `metrics`, with a named subscriber followed on a task.
fn cache(metrics: &Metrics) -> (Writer<ConfigMap>, Store<ConfigMap>) {
    let writer = Writer::new().with_metrics(metrics, CACHE);
    let store = writer.as_reader();
    let _view = follow(writer.subscribe().with_name("follower"), Duration::ZERO);
    (writer, store)
}

/// The example operator's probe server on a free loopback port, for `registry` and `store`.
async fn serve(registry: Registry, store: &Store<ConfigMap>) -> ProbeServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = store.clone();
    let health: HealthCheck = Box::new(move || store.health());
    ProbeServer::start(
        listener,
        Probes {
            registry,
            health: vec![health],
        },
    )
    .unwrap()
}

/// One scrape of `/metrics` over HTTP, checked and parsed.
async fn scrape(addr: SocketAddr) -> Exposition {
    let answer = probes::get(addr, "/metrics").await.expect("a scrape");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type, METRICS_CONTENT_TYPE);
    let scrape = Exposition::parse(&answer.body)
        .unwrap_or_else(|e| panic!("not the exposition format: {e}\n{}", answer.body));
    assert!(scrape.eof, "an OpenMetrics scrape ends with # EOF");
    scrape
}

/// The figures of [`CACHE`] that the test controls, from one scrape.
#[derive(Clone, Debug, PartialEq)]
struct Figures {
    events: BTreeMap<String, f64>,
    relists: BTreeMap<String, f64>,
    errors: BTreeMap<String, f64>,
    watch_starts: f64,
    watch_resumes: f64,
    objects: f64,
    synced: f64,
}

impl Figures {
    fn of(scrape: &Exposition) -> Self {
        let c = [("cache", CACHE)];
        let by = |name: &str, label: &str| -> BTreeMap<String, f64> {
            scrape
                .matching(name, &c)
                .map(|s| (s.labels[label].clone(), s.value))
                .collect()
        };
        let one = |name: &str| {
            scrape
                .value(name, &c)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        Self {
            events: by("kache_events_total", "type"),
            relists: by("kache_relists_total", "cause"),
            errors: by("kache_errors_total", "class"),
            watch_starts: one("kache_watch_starts_total"),
            watch_resumes: one("kache_watch_resumes_total"),
            objects: one("kache_objects"),
            synced: one("kache_synced"),
        }
    }

    fn event(&self, kind: &str) -> f64 {
        self.events[kind]
    }

    fn error(&self, class: ErrorClass) -> f64 {
        self.errors[class.as_str()]
    }
}

/// Scrapes until `done` holds for the figures, for at most the tests' bound.
async fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&Figures) -> bool) -> Figures {
    let mut last = None;
    let found = tokio::time::timeout(kache_tests::BOUND, async {
        loop {
            let figures = Figures::of(&scrape(addr).await);
            if done(&figures) {
                return figures;
            }
            last = Some(figures);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}; last scrape: {last:#?}"))
}

fn map(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Error counts, all 0 but `nonzero`.
fn errors(nonzero: &[(ErrorClass, f64)]) -> BTreeMap<String, f64> {
    ErrorClass::ALL
        .iter()
        .map(|class| {
            let n = nonzero
                .iter()
                .find(|(c, _)| c == class)
                .map_or(0.0, |p| p.1);
            (class.as_str().to_owned(), n)
        })
        .collect()
}

fn events(
    init: f64,
    init_apply: f64,
    init_done: f64,
    apply: f64,
    delete: f64,
) -> BTreeMap<String, f64> {
    map(&[
        ("init", init),
        ("init_apply", init_apply),
        ("init_done", init_done),
        ("apply", apply),
        ("delete", delete),
    ])
}

fn relists(first_sync: f64, gone: f64) -> BTreeMap<String, f64> {
    map(&[
        ("first_sync", first_sync),
        ("gone", gone),
        ("unfinished_list", 0.0),
        ("other", 0.0),
    ])
}

on_each_server! {
    /// Creates, deletes, a real 410 and a server restart move the counters by exactly what
    /// the test did, read from HTTP scrapes of the example operator's `/metrics`.
    async fn counters_move_by_exactly_the_changes_made(server: Server) {
        let (env, ns, api) = private_env(server, "metrics").await;
        create_configmaps(&api, "cm", 20, &[]).await;
        let (proxy, watched) = cut_off(&env, &ns).await;
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (writer, store) = cache(&metrics);
        let http = serve(registry, &store).await;
        let addr = http.addr();
        let reflector = Reflector::start(watched, Config::default(), writer);
        within("the first sync", store.wait_synced_or_fail()).await.unwrap();

        // The first sync: a list of 20 and one watch, on either strategy.
        let synced = scrape_until(addr, "the watch after the first list", |f| f.watch_starts >= 1.0).await;
        assert_eq!(synced.events, events(1.0, 20.0, 1.0, 0.0, 0.0));
        assert_eq!(synced.relists, relists(1.0, 0.0));
        assert_eq!(synced.errors, errors(&[]));
        assert_eq!((synced.watch_starts, synced.objects, synced.synced), (1.0, 20.0, 1.0));
        let scraped = scrape(addr).await;
        assert_eq!(scraped.value("kache_subscribers", &[("cache", CACHE)]), Some(1.0));
        let lag = [("cache", CACHE), ("subscriber", "follower")];
        assert!(scraped.value("kache_subscriber_lag", &lag).is_some());
        assert!(scraped.value("kache_initial_sync_duration_seconds", &[("cache", CACHE)]) > Some(0.0));

        // 5 creates and 3 deletes: 5 applies and 3 deletes, nothing else.
        create_configmaps(&api, "new", 5, &[]).await;
        delete_all(&api, (0..3).map(|i| format!("cm-{i}"))).await.unwrap();
        let changed = scrape_until(addr, "5 creates and 3 deletes", |f| {
            f.event("apply") >= 5.0 && f.event("delete") >= 3.0
        })
        .await;
        assert_eq!(changed.events, events(1.0, 20.0, 1.0, 5.0, 3.0));
        assert_eq!(changed.relists, synced.relists);
        assert_eq!(changed.errors, errors(&[]));
        assert_eq!(changed.objects, 22.0);

        // Cut off, 2 deletes and a create, etcd compacted: a real 410 and one relist of 21.
        proxy.cut();
        delete_all(&api, (3..5).map(|i| format!("cm-{i}"))).await.unwrap();
        create_configmaps(&api, "late", 1, &[]).await;
        env.compact_etcd().await.unwrap();
        proxy.restore();
        let relisted = scrape_until(addr, "the relist after a 410", |f| f.event("init_done") >= 2.0).await;
        converges(&api, &store, &[]).await;
        assert_eq!(relisted.events, events(2.0, 41.0, 2.0, 5.0, 3.0), "a relist is InitApply, not Apply");
        assert_eq!(relisted.relists, relists(1.0, 1.0));
        let network = relisted.error(ErrorClass::Network);
        assert_eq!(relisted.errors, errors(&[(ErrorClass::Gone, 1.0), (ErrorClass::Network, network)]));
        assert_eq!((relisted.watch_starts, relisted.objects), (2.0, 21.0));
        let relisted = scrape_until(addr, "the watch after the relist", |f| f.watch_starts >= 2.0).await;

        // A server restart: the watch resumes from where it was, without a relist.
        env.restart_apiserver().await.unwrap();
        create_configmaps(&api, "after-restart", 1, &[]).await;
        let restarted = scrape_until(addr, "a resumed watch and one create", |f| {
            f.watch_resumes > relisted.watch_resumes && f.event("apply") >= 6.0
        })
        .await;
        assert_eq!(restarted.events, events(2.0, 41.0, 2.0, 6.0, 3.0));
        assert_eq!(restarted.relists, relists(1.0, 1.0), "no relist for a restart");
        assert_eq!(restarted.watch_starts, 2.0);
        for class in [ErrorClass::Forbidden, ErrorClass::NotFound, ErrorClass::Gone, ErrorClass::Decode] {
            assert_eq!(restarted.error(class), relisted.error(class), "{class}");
        }
        assert_eq!(restarted.objects, 22.0);
        converges(&api, &store, &[]).await;
        let health = store.health();
        assert!(health.is_ready() && health.failing.is_none(), "{health}");
        let readyz = probes::get(addr, "/readyz").await.unwrap();
        assert_eq!((readyz.status, readyz.body.as_str()), (200, "ready\nconfigmaps: synced\n"));
        println!("{server}: {restarted:?}");
        drop(reflector);
    }
}

/// Waits until `/readyz` answers 503 and its body says `reason`, for at most 10 s.
async fn not_ready_because(addr: SocketAddr, reason: &str) -> String {
    let wait = async {
        loop {
            let readyz = probes::get(addr, "/readyz").await.unwrap();
            if readyz.status == 503 && readyz.body.contains(reason) {
                return readyz.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("/readyz did not say {reason:?} within 10 s"))
}

on_each_server! {
    /// A user without RBAC rights: `/readyz` says not ready and why within 10 s, the metrics
    /// count every 403, start-up can fail fast, and the log has one warning, not one per retry.
    async fn a_forbidden_watch_is_not_ready_with_its_reason_and_counted(server: Server) {
        // The test runs on one thread: every task it spawns logs here.
        let (warnings, _log) = kache_tests::count_store_warnings();
        let env = TestEnv::shared_on(server).await.expect("control plane");
        let ns = env.create_namespace("metrics-forbidden").await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(env.client_unprivileged(), &ns);
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (writer, store) = cache(&metrics);
        let http = serve(registry, &store).await;
        let addr = http.addr();
        let reflector = Reflector::start(api, Config::default(), writer);

        let body = not_ready_because(addr, "(forbidden)").await;
        assert!(body.starts_with("not ready\nconfigmaps: not synced; "), "{body}");
        assert!(body.contains("forbidden"), "{body}");
        let refused = within("a refusal", store.wait_synced_or_fail()).await;
        assert!(
            matches!(&refused, Err(Error::WatchRefused { class: ErrorClass::Forbidden, .. })),
            "{refused:?}"
        );

        let counted = scrape_until(addr, "three 403s", |f| f.error(ErrorClass::Forbidden) >= 3.0).await;
        let scraped = scrape(addr).await;
        let forbidden = Figures::of(&scraped).error(ErrorClass::Forbidden);
        let in_a_row = scraped.value("kache_consecutive_errors", &[("cache", CACHE)]);
        assert_eq!(Some(forbidden), in_a_row, "every error so far is one 403 in a row");
        let counted_by_watcher = kache_tests::Counters::get(&reflector.counters.forbidden);
        assert_eq!(forbidden, f64::from(u32::try_from(counted_by_watcher).unwrap()), "the metric counts each 403 item");
        assert_eq!(counted.errors, errors(&[(ErrorClass::Forbidden, counted.error(ErrorClass::Forbidden))]));
        assert_eq!(counted.events, events(0.0, 0.0, 0.0, 0.0, 0.0));
        assert_eq!(counted.relists, relists(0.0, 0.0));
        assert_eq!((counted.synced, counted.objects, counted.watch_starts), (0.0, 0.0, 0.0));
        assert_eq!(warnings.load(Ordering::Relaxed), 1, "one warning for the whole streak");
        drop(reflector);
    }
}

on_each_server! {
    /// A resource the server does not serve: the health says not found, and start-up can
    /// fail fast on it. (A resource in the core group: for an unknown group, the modern
    /// server's 404 body is not a `Status`, and kube-client loses its code.)
    async fn a_watch_of_a_missing_resource_fails_fast(server: Server) {
        let env = TestEnv::shared_on(server).await.expect("control plane");
        let ns = env.create_namespace("metrics-missing").await.unwrap();
        let gvk = GroupVersionKind::gvk("", "v1", "Widget");
        let resource = ApiResource::from_gvk(&gvk);
        let api: Api<DynamicObject> = Api::namespaced_with(env.client(), &ns, &resource);
        let writer = Writer::new().with_name("widgets");
        let store = writer.as_reader();
        let watch = tokio::spawn(
            watcher(api, Config::default())
                .backoff(quick_backoff())
                .reflect(writer)
                .for_each(|_| async {}),
        );
        let refused = within("a refusal", store.wait_synced_or_fail()).await;
        assert!(
            matches!(&refused, Err(Error::WatchRefused { class: ErrorClass::NotFound, .. })),
            "{refused:?}"
        );
        let health = store.health();
        assert!(!health.is_ready() && health.is_refused(), "{health}");
        assert!(health.to_string().starts_with("widgets: not synced; "), "{health}");
        watch.abort();
    }
}
