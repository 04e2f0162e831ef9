//! The watcher's state machine, driven over the real wire format by a scripted responder.
//!
//! These cover only what no real API server can be made to show: malformed and truncated
//! streams, events the API promises never to send (a delete among a streaming list's initial
//! events, a streaming list with no end bookmark), and exact timing (bookmarks, a failing
//! first page). Everything a server can show (paging, `410 Gone` on a watch and on a continue
//! token, streaming lists and their end bookmark, the fallback where they are refused,
//! partitions) is tested against both real servers in the workspace's `tests` crate.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list, status};
use kache_watch::{Config, Error, Event, InitialListStrategy, watcher};
use kube_client::Api;
use serde_json::json;

type Events = Pin<Box<dyn Stream<Item = Result<Event<ConfigMap>, Error>> + Send>>;

fn start(server: &Scripted, config: Config) -> Events {
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    Box::pin(watcher(api, config))
}

fn list_watch() -> Config {
    Config::default().initial_list_strategy(InitialListStrategy::ListWatch)
}

/// A compact, comparable rendering of one item.
fn show(item: Result<Event<ConfigMap>, Error>) -> String {
    let name = |cm: &ConfigMap| cm.metadata.name.clone().unwrap_or_default();
    match item {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(cm)) => format!("InitApply {}", name(&cm)),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(cm)) => format!("Apply {}", name(&cm)),
        Ok(Event::Delete(cm)) => format!("Delete {}", name(&cm)),
        Err(Error::WatchError(s)) => format!("WatchError {}", s.code),
        Err(Error::InitialListFailed(e)) => format!("InitialListFailed {:?}", status_code(&e)),
        Err(Error::WatchStartFailed(e)) => format!("WatchStartFailed {:?}", status_code(&e)),
        Err(Error::WatchFailed(_)) => "WatchFailed".into(),
        Err(Error::InvalidObject { field, .. }) => format!("InvalidObject {field}"),
        Err(Error::NoResourceVersion) => "NoResourceVersion".into(),
        Err(Error::InitialEventsTimeout(_)) => "InitialEventsTimeout".into(),
        // `Error` is non-exhaustive: a variant added later shows as its message.
        Err(other) => other.to_string(),
    }
}

/// Keeps the watcher running (so it makes its next requests) after a test has read enough.
fn keep_polling(mut events: Events) {
    tokio::spawn(async move { while events.next().await.is_some() {} });
}

fn status_code(err: &kube_client::Error) -> Option<u16> {
    match err {
        kube_client::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The next `n` items, each within a bound.
async fn take(events: &mut Events, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let item = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("no item after {out:?}"))
            .expect("the watcher never ends");
        out.push(show(item));
    }
    out
}

#[tokio::test]
async fn paged_list_then_watch_resumes_from_bookmark_without_relist() {
    let server = Scripted::start([
        list(vec![cm("a", "1"), cm("b", "2")], Some("10"), Some("page2")),
        list(vec![cm("c", "3")], Some("10"), None),
        Reply::Stream(
            vec![
                event("ADDED", cm("d", "11")),
                event("MODIFIED", cm("a", "12")),
                event("DELETED", cm("b", "13")),
                bookmark("20", false),
            ],
            End::Close,
        ),
        Reply::Stream(vec![event("ADDED", cm("e", "21"))], End::Hang),
    ])
    .await;
    let mut events = start(&server, list_watch().page_size(2));
    assert_eq!(
        take(&mut events, 9).await,
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitDone",
            "Apply d",
            "Apply a",
            "Delete b",
            "Apply e"
        ]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    assert_eq!(requests[0].param("limit"), Some("2"));
    assert_eq!(requests[0].param("continue"), None);
    assert_eq!(requests[1].param("continue"), Some("page2"));
    assert!(requests[2].is_watch());
    assert_eq!(requests[2].param("resourceVersion"), Some("10"));
    assert_eq!(requests[2].param("allowWatchBookmarks"), Some("true"));
    assert_eq!(
        requests[3].param("resourceVersion"),
        Some("20"),
        "resumes from the bookmark"
    );
}

#[tokio::test]
async fn selectors_and_timeout_reach_the_server() {
    let server = Scripted::start([list(vec![], Some("1"), None)]).await;
    let config = list_watch()
        .labels("app=web")
        .fields("metadata.name=x")
        .timeout(30);
    let mut events = start(&server, config);
    assert_eq!(take(&mut events, 2).await, ["Init", "InitDone"]);
    keep_polling(events);
    let requests = server.wait_for_requests(2).await;
    for r in &requests {
        assert_eq!(r.param("labelSelector"), Some("app=web"));
        assert_eq!(r.param("fieldSelector"), Some("metadata.name=x"));
    }
    assert_eq!(requests[1].param("timeoutSeconds"), Some("30"));
}

#[tokio::test]
async fn a_failing_first_page_sends_no_init() {
    let server = Scripted::start([
        Reply::Json(403, status(403, "Forbidden", "configmaps is forbidden")),
        list(vec![cm("a", "1")], Some("5"), None),
    ])
    .await;
    let mut events = start(&server, list_watch());
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.as_ref().is_err_and(Error::is_forbidden), "{first:?}");
    assert_eq!(
        take(&mut events, 3).await,
        ["Init", "InitApply a", "InitDone"]
    );
}

#[tokio::test]
async fn streaming_list_passes_on_a_delete_during_initial_events() {
    let server = Scripted::start([Reply::Stream(
        vec![
            event("ADDED", cm("a", "1")),
            event("ADDED", cm("b", "2")),
            event("DELETED", cm("a", "3")),
            bookmark("3", true),
        ],
        End::Hang,
    )])
    .await;
    let mut events = start(&server, Config::default().streaming_lists());
    assert_eq!(
        take(&mut events, 5).await,
        ["Init", "InitApply a", "InitApply b", "Delete a", "InitDone"]
    );
}

#[tokio::test]
async fn streaming_list_without_end_bookmark_falls_back_to_a_paged_list() {
    let server = Scripted::start([
        Reply::Stream(vec![event("ADDED", cm("a", "1"))], End::Hang),
        list(vec![cm("b", "2")], Some("5"), None),
    ])
    .await;
    let config = Config::default()
        .streaming_lists()
        .initial_events_timeout(Duration::from_millis(300));
    let mut events = start(&server, config);
    assert_eq!(
        take(&mut events, 6).await,
        [
            "Init",
            "InitApply a",
            "InitialEventsTimeout",
            "Init",
            "InitApply b",
            "InitDone"
        ]
    );
}

#[tokio::test]
async fn malformed_line_is_reported_and_the_watch_resumes_from_the_last_good_version() {
    let server = Scripted::start([
        list(vec![], Some("5"), None),
        Reply::Stream(
            vec![event("ADDED", cm("a", "6")), "{not json".into()],
            End::Hang,
        ),
        Reply::Stream(vec![event("MODIFIED", cm("a", "7"))], End::Hang),
    ])
    .await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        take(&mut events, 5).await,
        ["Init", "InitDone", "Apply a", "WatchFailed", "Apply a"]
    );
    assert_eq!(server.requests()[2].param("resourceVersion"), Some("6"));
}

#[tokio::test]
async fn unknown_event_type_is_an_error_item() {
    let server = Scripted::start([
        list(vec![], Some("5"), None),
        Reply::Stream(vec![event("EXPLODED", cm("a", "6"))], End::Hang),
        Reply::Stream(vec![event("ADDED", cm("b", "7"))], End::Hang),
    ])
    .await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        take(&mut events, 4).await,
        ["Init", "InitDone", "WatchFailed", "Apply b"]
    );
}

#[tokio::test]
async fn non_gone_error_event_resumes_without_relist() {
    let server = Scripted::start([
        list(vec![], Some("5"), None),
        Reply::Stream(
            vec![event("ERROR", status(500, "InternalError", "etcd hiccup"))],
            End::Hang,
        ),
        Reply::Stream(vec![event("ADDED", cm("b", "7"))], End::Hang),
    ])
    .await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        take(&mut events, 4).await,
        ["Init", "InitDone", "WatchError 500", "Apply b"]
    );
    let requests = server.requests();
    assert!(requests[2].is_watch() && requests[2].param("resourceVersion") == Some("5"));
}

#[tokio::test]
async fn objects_without_name_are_skipped_with_an_error() {
    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "ns", "resourceVersion": "1"}});
    let server = Scripted::start([list(vec![nameless, cm("a", "1")], Some("5"), None)]).await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        take(&mut events, 4).await,
        [
            "Init",
            "InvalidObject metadata.name",
            "InitApply a",
            "InitDone"
        ]
    );
}

#[tokio::test]
async fn watch_event_without_resource_version_relists() {
    let versionless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}});
    let server = Scripted::start([
        list(vec![], Some("5"), None),
        Reply::Stream(vec![event("ADDED", versionless)], End::Hang),
        list(vec![cm("x", "9")], Some("9"), None),
    ])
    .await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        take(&mut events, 6).await,
        [
            "Init",
            "InitDone",
            "InvalidObject metadata.resourceVersion",
            "Init",
            "InitApply x",
            "InitDone"
        ]
    );
}

#[tokio::test]
async fn list_without_resource_version_or_continue_relists() {
    let server = Scripted::start([
        list(vec![cm("a", "1")], None, None),
        list(vec![cm("a", "1")], Some("3"), None),
    ])
    .await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        take(&mut events, 6).await,
        [
            "Init",
            "InitApply a",
            "NoResourceVersion",
            "Init",
            "InitApply a",
            "InitDone"
        ]
    );
}
