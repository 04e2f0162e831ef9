//! The watcher's requests and the points it reports, over the real wire format from a
//! scripted responder: what exact timing shows (bookmarks, paging parameters).
//!
//! Malformed and truncated streams and events the API promises never to send are one table
//! of scenarios in kache-store (`src/tests/wire.rs`), checked there at both layers: the
//! watcher's items, and what reaches a store and a subscriber. Everything a server can show
//! (paging, `410 Gone` on a watch and on a continue token, streaming lists and their end
//! bookmark, the fallback where they are refused, partitions) is tested against both real
//! servers in the workspace's `tests` crate.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list};
use kache_watch::plumbing::{Progress, observe_progress};
use kache_watch::{Config, Error, Event, InitialListStrategy, watcher};
use kube_client::Api;

type Events = Pin<Box<dyn Stream<Item = Result<Event<ConfigMap>, Error>> + Send>>;

fn start(server: &Scripted, config: Config) -> Events {
    let api: Api<ConfigMap> = Api::namespaced(server.client(), "ns");
    Box::pin(watcher(api, config))
}

fn list_watch() -> Config {
    Config::default().initial_list_strategy(InitialListStrategy::ListWatch)
}

/// One item, as the event's `Display` or the error's kind.
fn show(item: Result<Event<ConfigMap>, Error>) -> String {
    match item {
        Ok(event) => event.to_string(),
        Err(err) => err.kind().to_owned(),
    }
}

/// Keeps the watcher running (so it makes its next requests) after a test has read enough.
fn keep_polling(mut events: Events) {
    tokio::spawn(async move { while events.next().await.is_some() {} });
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
            "InitApply(a)",
            "InitApply(b)",
            "InitApply(c)",
            "InitDone",
            "Apply(d)",
            "Apply(a)",
            "Delete(b)",
            "Apply(e)"
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

/// Polls `events` inside `observe_progress` until a point at `until` is reported, for at most
/// 10 s; returns every item and every point, in the order they came.
async fn observe_until(events: &mut Events, until: &str) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (item, reached) = std::future::poll_fn(|cx| {
                let (poll, reached) = observe_progress(|| events.as_mut().poll_next(cx));
                match (poll, reached) {
                    (std::task::Poll::Pending, None) => std::task::Poll::Pending,
                    (std::task::Poll::Pending, Some(reached)) => {
                        std::task::Poll::Ready((None, Some(reached)))
                    }
                    (std::task::Poll::Ready(item), reached) => {
                        std::task::Poll::Ready((item, reached))
                    }
                }
            })
            .await;
            let done = reached
                .as_ref()
                .is_some_and(|p| p.resource_version == until);
            if let Some(Progress {
                resource_version,
                after_items,
                ..
            }) = reached
            {
                seen.push(format!("reached {resource_version} after {after_items}"));
            }
            if let Some(item) = item {
                seen.push(show(item));
            }
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no point at {until} after {seen:?}"));
    seen
}

#[tokio::test]
async fn list_completions_and_bookmarks_are_reported_to_the_polling_consumer() {
    let server = Scripted::start([
        list(vec![cm("a", "1")], Some("10"), None),
        Reply::Stream(
            vec![
                bookmark("20", false),
                event("MODIFIED", cm("a", "21")),
                bookmark("30", false),
            ],
            End::Hang,
        ),
    ])
    .await;
    let mut events = start(&server, list_watch());
    assert_eq!(
        observe_until(&mut events, "30").await,
        [
            "Init",
            "InitApply(a)",
            "reached 10 after 3",
            "InitDone",
            // The bookmark came before the event polled in the same call: it holds after the
            // three items before it.
            "reached 20 after 3",
            "Apply(a)",
            "reached 30 after 4",
        ]
    );
}

#[tokio::test]
async fn a_streaming_list_reports_its_end_bookmark_with_init_done() {
    let server = Scripted::start([Reply::Stream(
        vec![
            event("ADDED", cm("a", "1")),
            bookmark("2", false),
            bookmark("30", true),
            bookmark("40", false),
        ],
        End::Hang,
    )])
    .await;
    let mut events = start(&server, Config::default().streaming_lists());
    assert_eq!(
        observe_until(&mut events, "40").await,
        [
            "Init",
            "InitApply(a)",
            // The bookmark inside the initial events is no point: the list is not complete.
            "reached 30 after 3",
            "InitDone",
            "reached 40 after 3",
        ]
    );
}
