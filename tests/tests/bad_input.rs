//! Bad input at the store level: `watcher(..).reflect(writer)` over a scripted responder that
//! sends malformed, truncated, incomplete or contradictory list/watch responses. Each case
//! must yield a clear error item (or be skipped with a warning), never panic, and leave the
//! store, and a subscriber's view of it, exactly right; objects from a broken attempt must
//! never become visible.
//!
//! kache-watch's own `tests/scripted.rs` checks the watcher's items for the same inputs; these
//! check what ends up in the store.

use std::{collections::BTreeMap, pin::Pin, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{ReflectExt, Store, Writer};
use kache_tests::{
    View, eventually, follow, init_tracing,
    scripted::{End, Reply, Scripted, bookmark, cm, event, list, status},
    stored_versions,
};
use kache_watch::{Config, Error, Event, InitialListStrategy, watcher};
use kube_client::Api;
use serde_json::json;

type Reflected = Pin<Box<dyn Stream<Item = Result<Event<Arc<ConfigMap>>, Error>> + Send>>;

/// A reflected watcher over a scripted server, a subscriber following the store, and names
/// that must never be visible in the store.
struct Run {
    server: Scripted,
    store: Store<ConfigMap>,
    view: View,
    events: Reflected,
}

impl Run {
    async fn start(script: impl IntoIterator<Item = Reply>, config: Config) -> Self {
        init_tracing();
        let server = Scripted::start(script).await;
        let writer = Writer::new();
        let store = writer.as_reader();
        let view = follow(writer.subscribe(), Duration::ZERO);
        let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
        let events = Box::pin(watcher(api, config).reflect(writer));
        Self {
            server,
            store,
            view,
            events,
        }
    }

    fn list_watch(script: impl IntoIterator<Item = Reply>) -> impl Future<Output = Self> {
        Self::start(
            script,
            Config::default().initial_list_strategy(InitialListStrategy::ListWatch),
        )
    }

    /// The next `n` items, each within a bound; after each one, `check` judges the store.
    async fn take(
        &mut self,
        n: usize,
        mut check: impl FnMut(&BTreeMap<String, String>) -> bool,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            let item = tokio::time::timeout(Duration::from_secs(10), self.events.next())
                .await
                .unwrap_or_else(|_| panic!("no item after {out:?}"))
                .expect("the watcher never ends");
            out.push(show(&item));
            let contents = contents(&self.store);
            assert!(check(&contents), "store after {out:?}: {contents:?}");
        }
        out
    }

    /// The store holds exactly `expected` (name → resourceVersion), and the subscriber's view
    /// comes to equal it.
    async fn assert_store(&self, expected: &[(&str, &str)]) {
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(name, rv)| ((*name).to_owned(), (*rv).to_owned()))
            .collect();
        assert_eq!(contents(&self.store), expected);
        assert!(self.store.is_ready());
        eventually("the subscriber to match the store", || async {
            self.view.versions() == stored_versions(&self.store)
        })
        .await;
    }
}

/// name → resourceVersion of the store (every object is in namespace `ns`).
fn contents(store: &Store<ConfigMap>) -> BTreeMap<String, String> {
    stored_versions(store)
        .into_iter()
        .map(|(key, rv)| (key.trim_start_matches("ns/").to_owned(), rv))
        .collect()
}

/// A check that `name` is never in the store.
fn never(name: &str) -> impl FnMut(&BTreeMap<String, String>) -> bool + '_ {
    move |contents| !contents.contains_key(name)
}

/// A compact, comparable rendering of one item: the event's `Display`, or the error's kind
/// with its status code (or its field, for an invalid object).
fn show(item: &Result<Event<Arc<ConfigMap>>, Error>) -> String {
    match item {
        Ok(event) => event.clone().map(|cm| (*cm).clone()).to_string(),
        Err(Error::InvalidObject { field, .. }) => format!("InvalidObject {field}"),
        Err(err) => match err.status_code() {
            Some(code) => format!("{} {code}", err.kind()),
            None => err.kind().to_owned(),
        },
    }
}

#[tokio::test]
async fn malformed_json_line_mid_watch_leaves_the_store_exact() {
    let mut run = Run::list_watch([
        list(vec![cm("x", "1"), cm("y", "2")], Some("5"), None),
        Reply::Stream(
            vec![
                event("ADDED", cm("a", "6")),
                event("MODIFIED", cm("x", "7")),
                "{not json".into(),
            ],
            End::Hang,
        ),
        Reply::Stream(
            vec![event("DELETED", cm("y", "8")), event("ADDED", cm("b", "9"))],
            End::Hang,
        ),
    ])
    .await;
    assert_eq!(
        run.take(9, |_| true).await,
        [
            "Init",
            "InitApply(x)",
            "InitApply(y)",
            "InitDone",
            "Apply(a)",
            "Apply(x)",
            "WatchFailed",
            "Delete(y)",
            "Apply(b)"
        ]
    );
    run.assert_store(&[("a", "6"), ("b", "9"), ("x", "7")])
        .await;
    assert_eq!(run.server.requests()[2].param("resourceVersion"), Some("7"));
}

#[tokio::test]
async fn truncated_watch_stream_resumes_and_the_store_has_every_change() {
    let mut run = Run::list_watch([
        list(vec![cm("x", "1")], Some("5"), None),
        Reply::Stream(vec![event("ADDED", cm("a", "6"))], End::Truncate),
        Reply::Stream(
            vec![
                event("MODIFIED", cm("a", "7")),
                event("DELETED", cm("x", "8")),
            ],
            End::Hang,
        ),
    ])
    .await;
    let items = run.take(6, |_| true).await;
    // A cut mid-chunk ends the stream; whether the client reports it as an error or as an
    // end, the watch resumes from the last good version.
    let items: Vec<&str> = items
        .iter()
        .map(String::as_str)
        .filter(|item| *item != "WatchFailed")
        .collect();
    assert_eq!(
        items[..5],
        ["Init", "InitApply(x)", "InitDone", "Apply(a)", "Apply(a)"]
    );
    eventually("the delete after the resume", || async {
        contents(&run.store).len() == 1
    })
    .await;
    run.assert_store(&[("a", "7")]).await;
    assert_eq!(run.server.requests()[2].param("resourceVersion"), Some("6"));
}

#[tokio::test]
async fn unknown_event_type_is_an_error_item_and_its_object_never_stored() {
    let mut run = Run::list_watch([
        list(vec![cm("x", "1")], Some("5"), None),
        Reply::Stream(vec![event("EXPLODED", cm("a", "6"))], End::Hang),
        Reply::Stream(vec![event("ADDED", cm("b", "7"))], End::Hang),
    ])
    .await;
    assert_eq!(
        run.take(5, never("a")).await,
        [
            "Init",
            "InitApply(x)",
            "InitDone",
            "WatchFailed",
            "Apply(b)"
        ]
    );
    run.assert_store(&[("b", "7"), ("x", "1")]).await;
}

#[tokio::test]
async fn non_gone_error_event_keeps_the_store_and_resumes_without_relist() {
    let mut run = Run::list_watch([
        list(vec![cm("x", "1")], Some("5"), None),
        Reply::Stream(
            vec![event("ERROR", status(500, "InternalError", "etcd hiccup"))],
            End::Hang,
        ),
        Reply::Stream(
            vec![event("ADDED", cm("b", "7")), event("DELETED", cm("x", "8"))],
            End::Hang,
        ),
    ])
    .await;
    assert_eq!(
        run.take(6, |_| true).await,
        [
            "Init",
            "InitApply(x)",
            "InitDone",
            "WatchError 500",
            "Apply(b)",
            "Delete(x)"
        ]
    );
    run.assert_store(&[("b", "7")]).await;
    assert_eq!(run.server.requests().len(), 3, "no relist");
    assert_eq!(run.view.deleted(), ["ns/x"]);
}

#[tokio::test]
async fn objects_without_name_or_resource_version_never_reach_the_store() {
    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"namespace": "ns", "resourceVersion": "6"}});
    let versionless = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "ns"}});
    let mut run = Run::list_watch([
        list(vec![nameless.clone(), cm("a", "1")], Some("5"), None),
        Reply::Stream(vec![event("ADDED", nameless)], End::Hang),
        list(vec![cm("a", "1")], Some("6"), None),
        Reply::Stream(vec![event("ADDED", versionless)], End::Hang),
        list(vec![cm("a", "1"), cm("x", "9")], Some("9"), None),
    ])
    .await;
    let items = run
        .take(13, |contents| {
            // No nameless object, and `x` only with a version.
            !contents.contains_key("") && contents.get("x").is_none_or(|rv| rv == "9")
        })
        .await;
    assert_eq!(
        items,
        [
            "Init",
            "InvalidObject metadata.name",
            "InitApply(a)",
            "InitDone",
            "InvalidObject metadata.name",
            "Init",
            "InitApply(a)",
            "InitDone",
            "InvalidObject metadata.resourceVersion",
            "Init",
            "InitApply(a)",
            "InitApply(x)",
            "InitDone"
        ]
    );
    run.assert_store(&[("a", "1"), ("x", "9")]).await;
    assert_eq!(run.view.deleted(), Vec::<String>::new());
}

#[tokio::test]
async fn list_without_resource_version_or_continue_is_not_a_sync() {
    let mut run = Run::list_watch([
        list(vec![cm("a", "1")], None, None),
        list(vec![cm("a", "1"), cm("b", "2")], Some("3"), None),
    ])
    .await;
    let items = run.take(3, |_| true).await;
    assert_eq!(items, ["Init", "InitApply(a)", "NoResourceVersion"]);
    assert!(
        !run.store.is_ready(),
        "an unusable list does not make the store ready"
    );
    assert_eq!(
        run.take(4, |_| true).await,
        ["Init", "InitApply(a)", "InitApply(b)", "InitDone"]
    );
    run.assert_store(&[("a", "1"), ("b", "2")]).await;
}

#[tokio::test]
async fn streaming_list_without_end_bookmark_falls_back_and_drops_its_objects() {
    let config = Config::default()
        .streaming_lists()
        .initial_events_timeout(Duration::from_millis(300));
    let mut run = Run::start(
        [
            Reply::Stream(vec![event("ADDED", cm("a", "1"))], End::Hang),
            list(vec![cm("b", "2")], Some("5"), None),
        ],
        config,
    )
    .await;
    assert_eq!(
        run.take(6, never("a")).await,
        [
            "Init",
            "InitApply(a)",
            "InitialEventsTimeout",
            "Init",
            "InitApply(b)",
            "InitDone"
        ]
    );
    run.assert_store(&[("b", "2")]).await;
    assert_eq!(run.view.inits(), 1);
}

#[tokio::test]
async fn delete_during_streaming_initial_events_keeps_the_object_out_of_the_store() {
    let mut run = Run::start(
        [Reply::Stream(
            vec![
                event("ADDED", cm("a", "1")),
                event("ADDED", cm("b", "2")),
                event("DELETED", cm("a", "3")),
                bookmark("3", true),
            ],
            End::Hang,
        )],
        Config::default().streaming_lists(),
    )
    .await;
    assert_eq!(
        run.take(5, |_| true).await,
        [
            "Init",
            "InitApply(a)",
            "InitApply(b)",
            "Delete(a)",
            "InitDone"
        ]
    );
    run.assert_store(&[("b", "2")]).await;
}

#[tokio::test]
async fn broken_relist_after_ready_keeps_the_previous_generation_until_a_complete_one() {
    let mut run = Run::list_watch([
        list(vec![cm("a", "1"), cm("b", "2")], Some("5"), None),
        Reply::Stream(
            vec![event("ERROR", status(410, "Expired", "too old"))],
            End::Hang,
        ),
        list(vec![cm("a", "1"), cm("c", "6")], Some("6"), Some("page-2")),
        Reply::Json(500, status(500, "InternalError", "etcd hiccup")),
        list(vec![cm("b", "2"), cm("d", "7")], Some("7"), None),
    ])
    .await;
    let first = BTreeMap::from([
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "2".to_owned()),
    ]);
    let last = BTreeMap::from([
        ("b".to_owned(), "2".to_owned()),
        ("d".to_owned(), "7".to_owned()),
    ]);
    let items = run
        .take(13, |contents| {
            contents.is_empty() || *contents == first || *contents == last
        })
        .await;
    assert_eq!(
        items,
        [
            "Init",
            "InitApply(a)",
            "InitApply(b)",
            "InitDone",
            "WatchError 410",
            "Init",
            "InitApply(a)",
            "InitApply(c)",
            "InitialListFailed 500",
            "Init",
            "InitApply(b)",
            "InitApply(d)",
            "InitDone"
        ]
    );
    run.assert_store(&[("b", "2"), ("d", "7")]).await;
    // The subscriber heard the difference, and nothing of the broken attempt.
    assert_eq!(run.view.deleted(), ["ns/a"]);
    assert_eq!(run.view.inits(), 1);
}
