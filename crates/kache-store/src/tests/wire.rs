//! The table of wire-level scenarios, each checked at both layers: the watcher's items alone,
//! and `watcher(..).reflect(writer)` with what ends up in the store and in a subscriber.
//!
//! The scripted responder of kache-testenv sends what no real API server can be made to
//! send: malformed, truncated, incomplete or contradictory list/watch responses, events the
//! API promises never to send. Each must yield a clear error item (or be skipped), never a
//! panic, and leave the store, and a subscriber's view of it, exactly right; objects from a
//! broken attempt must never become visible. What a real server can show is tested against
//! both real servers in the workspace's `tests` crate; the watcher's requests (paging,
//! selectors) and the points it reports are checked in kache-watch's `tests/scripted.rs`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_testenv::scripted::{End, Reply, Scripted, bookmark, cm, event, list, status};
use kache_watch::{Config, Error, InitialListStrategy, watcher};
use kube_client::Api;

use crate::testing::{Replay, key_of, stored_versions};
use crate::{Event, ReflectExt, Store, Writer};

/// name → resourceVersion, for objects in namespace `ns`.
type Contents = BTreeMap<String, String>;

/// One scenario: a script, and what must come of it.
struct Scenario {
    config: Config,
    script: Vec<Reply>,
    /// The items, as [`show`] renders them.
    items: &'static [&'static str],
    /// Items a client may or may not report (a stream cut mid-chunk ends as an error or as an
    /// end): left out of what is compared.
    maybe: &'static [&'static str],
    /// `resourceVersion` asked for by the request at each index.
    resumes: &'static [(usize, &'static str)],
    /// How many requests the watcher made by the last item, when that matters (no relist).
    requests: Option<usize>,
    /// The store (and a drained subscriber's view) after the last item.
    store: &'static [(&'static str, &'static str)],
    /// What must hold of the store after every item.
    always: fn(&Contents) -> bool,
    /// The keys of the deletes a subscriber hears, in order.
    deleted: Option<&'static [&'static str]>,
    /// The snapshots a subscriber receives (1: no resync).
    inits: Option<u64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            config: Config::default().initial_list_strategy(InitialListStrategy::ListWatch),
            script: Vec::new(),
            items: &[],
            maybe: &[],
            resumes: &[],
            requests: None,
            store: &[],
            always: |_| true,
            deleted: None,
            inits: None,
        }
    }
}

/// A compact, comparable rendering of one item: the event's `Display`, or the error's kind
/// with its status code (or its field, for an invalid object).
fn show(item: Result<Event<ConfigMap>, &Error>) -> String {
    match item {
        Ok(event) => event.to_string(),
        Err(Error::InvalidObject { field, .. }) => format!("InvalidObject {field}"),
        Err(err) => match err.status_code() {
            Some(code) => format!("{} {code}", err.kind()),
            None => err.kind().to_owned(),
        },
    }
}

/// The next item of `items`, within a bound.
async fn next<T>(items: &mut Pin<Box<dyn Stream<Item = T> + Send>>, after: &[String]) -> T {
    tokio::time::timeout(Duration::from_secs(10), items.next())
        .await
        .unwrap_or_else(|_| panic!("no item after {after:?}"))
        .expect("the watcher never ends")
}

fn api(server: &Scripted) -> Api<ConfigMap> {
    Api::namespaced(server.client(), "ns")
}

impl Scenario {
    /// Whether `shown` counts: it is not one of the items a client may leave out.
    fn counts(&self, shown: &str) -> bool {
        !self.maybe.contains(&shown)
    }

    fn check_requests(&self, server: &Scripted) {
        let requests = server.requests();
        for (index, version) in self.resumes {
            assert_eq!(
                requests[*index].param("resourceVersion"),
                Some(*version),
                "request {index} of {requests:?}"
            );
        }
        if let Some(count) = self.requests {
            assert_eq!(requests.len(), count, "{requests:?}");
        }
    }

    /// The watcher alone: its items.
    async fn at_the_watcher(self) {
        let server = Scripted::start(self.script.clone()).await;
        let mut items: Pin<Box<dyn Stream<Item = _> + Send>> =
            Box::pin(watcher(api(&server), self.config.clone()));
        let mut seen = Vec::new();
        while seen.len() < self.items.len() {
            let item: Result<Event<ConfigMap>, Error> = next(&mut items, &seen).await;
            let shown = show(item.as_ref().map(Clone::clone));
            if self.counts(&shown) {
                seen.push(shown);
            }
        }
        assert_eq!(seen, self.items);
        self.check_requests(&server);
    }

    /// The watcher into a store: the same items, and after each, the store and a subscriber.
    async fn at_the_store(self) {
        let server = Scripted::start(self.script.clone()).await;
        let writer = Writer::<ConfigMap>::new();
        let store = writer.as_reader();
        let mut subscriber = writer.subscribe();
        let mut view = Replay::default();
        let mut deleted = Vec::new();
        let mut items: Pin<Box<dyn Stream<Item = _> + Send>> =
            Box::pin(watcher(api(&server), self.config.clone()).reflect(writer));
        let mut seen = Vec::new();
        let mut synced = false;
        while seen.len() < self.items.len() {
            let item: Result<Event<Arc<ConfigMap>>, Error> = next(&mut items, &seen).await;
            let shown = show(item.as_ref().map(|e| e.clone().map(|cm| (*cm).clone())));
            synced |= matches!(item, Ok(Event::InitDone));
            if self.counts(&shown) {
                seen.push(shown);
            }
            let contents = contents(&store);
            assert!(
                (self.always)(&contents),
                "store after {seen:?}: {contents:?}"
            );
            assert_eq!(store.is_synced(), synced, "ready after {seen:?}");
            // The subscriber follows as it goes, so it hears every change, not just the end.
            while let Some(Some(event)) = subscriber.next().now_or_never() {
                if let Event::Delete(cm) = &event {
                    deleted.push(key_of(cm.as_ref()));
                }
                view.apply(&event);
            }
        }
        assert_eq!(seen, self.items);
        self.check_requests(&server);
        let expected: Contents = self
            .store
            .iter()
            .map(|(name, rv)| ((*name).to_owned(), (*rv).to_owned()))
            .collect();
        assert_eq!(contents(&store), expected);
        assert!(store.is_synced());
        assert_eq!(
            view.versions(),
            stored_versions(&store),
            "the subscriber's view"
        );
        if let Some(keys) = self.deleted {
            assert_eq!(deleted, keys, "the deletes the subscriber heard");
        }
        if let Some(inits) = self.inits {
            assert_eq!(view.inits(), inits, "the snapshots the subscriber received");
        }
    }
}

/// name → resourceVersion of the store (every object is in namespace `ns`).
fn contents<K: kube_client::Resource>(store: &Store<K>) -> Contents {
    stored_versions(store)
        .into_iter()
        .map(|(key, rv)| (key.trim_start_matches("ns/").to_owned(), rv))
        .collect()
}

/// `cm(name, rv)` without the metadata `field`.
fn without(field: &str, name: &str, rv: &str) -> serde_json::Value {
    let mut object = cm(name, rv);
    object["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove(field);
    object
}

/// Defines, for each scenario, the module `name` with the tests `name::watcher` and
/// `name::store`.
macro_rules! scenarios {
    ($($(#[$meta:meta])* $name:ident => $scenario:expr;)*) => {$(
        $(#[$meta])*
        mod $name {
            use super::*;

            fn scenario() -> Scenario {
                $scenario
            }

            #[tokio::test]
            async fn watcher() {
                scenario().at_the_watcher().await;
            }

            #[tokio::test]
            async fn store() {
                scenario().at_the_store().await;
            }
        }
    )*};
}

scenarios! {
    /// A line that is not JSON fails the watch; it resumes from the last good version.
    malformed_json_line_mid_watch => Scenario {
        script: vec![
            list(vec![cm("x", "1"), cm("y", "2")], Some("5"), None),
            Reply::Stream(
                vec![event("ADDED", cm("a", "6")), event("MODIFIED", cm("x", "7")), "{not json".into()],
                End::Hang,
            ),
            Reply::Stream(
                vec![event("DELETED", cm("y", "8")), event("ADDED", cm("b", "9"))],
                End::Hang,
            ),
        ],
        items: &[
            "Init", "InitApply(x)", "InitApply(y)", "InitDone", "Apply(a)", "Apply(x)",
            "WatchFailed", "Delete(y)", "Apply(b)",
        ],
        resumes: &[(2, "7")],
        store: &[("a", "6"), ("b", "9"), ("x", "7")],
        ..Scenario::default()
    };

    /// A stream cut mid-chunk ends the watch (as an error or as an end); it resumes from the
    /// last good version.
    truncated_watch_stream => Scenario {
        script: vec![
            list(vec![cm("x", "1")], Some("5"), None),
            Reply::Stream(vec![event("ADDED", cm("a", "6"))], End::Truncate),
            Reply::Stream(
                vec![event("MODIFIED", cm("a", "7")), event("DELETED", cm("x", "8"))],
                End::Hang,
            ),
        ],
        items: &["Init", "InitApply(x)", "InitDone", "Apply(a)", "Apply(a)", "Delete(x)"],
        maybe: &["WatchFailed"],
        resumes: &[(2, "6")],
        store: &[("a", "7")],
        ..Scenario::default()
    };

    /// An event type the API does not define is an error item; its object is never stored.
    unknown_event_type => Scenario {
        script: vec![
            list(vec![cm("x", "1")], Some("5"), None),
            Reply::Stream(vec![event("EXPLODED", cm("a", "6"))], End::Hang),
            Reply::Stream(vec![event("ADDED", cm("b", "7"))], End::Hang),
        ],
        items: &["Init", "InitApply(x)", "InitDone", "WatchFailed", "Apply(b)"],
        store: &[("b", "7"), ("x", "1")],
        always: |contents| !contents.contains_key("a"),
        ..Scenario::default()
    };

    /// An ERROR event other than `410 Gone` keeps the store and resumes without a relist.
    non_gone_error_event => Scenario {
        script: vec![
            list(vec![cm("x", "1")], Some("5"), None),
            Reply::Stream(
                vec![event("ERROR", status(500, "InternalError", "etcd hiccup"))],
                End::Hang,
            ),
            Reply::Stream(
                vec![event("ADDED", cm("b", "7")), event("DELETED", cm("x", "8"))],
                End::Hang,
            ),
        ],
        items: &["Init", "InitApply(x)", "InitDone", "WatchError 500", "Apply(b)", "Delete(x)"],
        resumes: &[(2, "5")],
        requests: Some(3),
        store: &[("b", "7")],
        deleted: Some(&["ns/x"]),
        ..Scenario::default()
    };

    /// "Too large resource version" (an API server behind a load balancer whose watch cache
    /// lags the one that served the version) is answered again and again at one point: each
    /// time the watch resumes from it, never a relist (another error twice at one point
    /// relists), and the store never goes back.
    too_large_resource_version => Scenario {
        script: vec![
            list(vec![cm("x", "1")], Some("5"), None),
            Reply::Stream(
                vec![event("ERROR", status(504, "Timeout", "Too large resource version: 5, current: 3"))],
                End::Hang,
            ),
            Reply::Stream(
                vec![event("ERROR", status(504, "Timeout", "Too large resource version: 5, current: 4"))],
                End::Hang,
            ),
            Reply::Stream(
                vec![event("ERROR", status(504, "Timeout", "Too large resource version: 5, current: 4"))],
                End::Hang,
            ),
            Reply::Stream(vec![event("ADDED", cm("b", "7"))], End::Hang),
        ],
        items: &[
            "Init", "InitApply(x)", "InitDone", "WatchError 504", "WatchError 504",
            "WatchError 504", "Apply(b)",
        ],
        resumes: &[(2, "5"), (3, "5"), (4, "5")],
        requests: Some(5),
        store: &[("b", "7"), ("x", "1")],
        ..Scenario::default()
    };

    /// Objects without a name (listed or watched) are skipped with an error item; a watched
    /// object without a resourceVersion makes the watcher relist.
    objects_without_name_or_resource_version => Scenario {
        script: vec![
            list(vec![without("name", "", "6"), cm("a", "1")], Some("5"), None),
            Reply::Stream(vec![event("ADDED", without("name", "", "6"))], End::Hang),
            list(vec![cm("a", "1")], Some("6"), None),
            Reply::Stream(vec![event("ADDED", without("resourceVersion", "x", ""))], End::Hang),
            list(vec![cm("a", "1"), cm("x", "9")], Some("9"), None),
        ],
        items: &[
            "Init", "InvalidObject metadata.name", "InitApply(a)", "InitDone",
            "InvalidObject metadata.name", "Init", "InitApply(a)", "InitDone",
            "InvalidObject metadata.resourceVersion", "Init", "InitApply(a)", "InitApply(x)",
            "InitDone",
        ],
        store: &[("a", "1"), ("x", "9")],
        // No nameless object, and `x` only with a version.
        always: |contents| {
            !contents.contains_key("") && contents.get("x").is_none_or(|rv| rv == "9")
        },
        deleted: Some(&[]),
        ..Scenario::default()
    };

    /// A list with neither a resourceVersion nor a continue token is no sync: the store is
    /// not ready until a usable list.
    list_without_resource_version_or_continue => Scenario {
        script: vec![
            list(vec![cm("a", "1")], None, None),
            list(vec![cm("a", "1"), cm("b", "2")], Some("3"), None),
        ],
        items: &[
            "Init", "InitApply(a)", "NoResourceVersion", "Init", "InitApply(a)", "InitApply(b)",
            "InitDone",
        ],
        store: &[("a", "1"), ("b", "2")],
        ..Scenario::default()
    };

    /// A failing first page sends no `Init`; the retry lists.
    failing_first_page => Scenario {
        script: vec![
            Reply::Json(403, status(403, "Forbidden", "configmaps is forbidden")),
            list(vec![cm("a", "1")], Some("5"), None),
        ],
        items: &["InitialListFailed 403", "Init", "InitApply(a)", "InitDone"],
        store: &[("a", "1")],
        ..Scenario::default()
    };

    /// A streaming list that never sends its end bookmark times out and falls back to a paged
    /// list; its objects never become visible.
    streaming_list_without_end_bookmark => Scenario {
        config: Config::default()
            .streaming_lists()
            .initial_events_timeout(Duration::from_millis(300)),
        script: vec![
            Reply::Stream(vec![event("ADDED", cm("a", "1"))], End::Hang),
            list(vec![cm("b", "2")], Some("5"), None),
        ],
        items: &[
            "Init", "InitApply(a)", "InitialEventsTimeout", "Init", "InitApply(b)", "InitDone",
        ],
        store: &[("b", "2")],
        always: |contents| !contents.contains_key("a"),
        inits: Some(1),
        ..Scenario::default()
    };

    /// A delete among a streaming list's initial events (the API promises none) is passed on
    /// and keeps the object out of the store.
    delete_during_streaming_initial_events => Scenario {
        config: Config::default().streaming_lists(),
        script: vec![Reply::Stream(
            vec![
                event("ADDED", cm("a", "1")),
                event("ADDED", cm("b", "2")),
                event("DELETED", cm("a", "3")),
                bookmark("3", true),
            ],
            End::Hang,
        )],
        items: &["Init", "InitApply(a)", "InitApply(b)", "Delete(a)", "InitDone"],
        store: &[("b", "2")],
        ..Scenario::default()
    };

    /// A relist after `410 Gone` whose second page fails is discarded: the store keeps the
    /// previous generation until a complete list replaces it, and a subscriber hears only the
    /// difference.
    broken_relist_after_ready => Scenario {
        script: vec![
            list(vec![cm("a", "1"), cm("b", "2")], Some("5"), None),
            Reply::Stream(vec![event("ERROR", status(410, "Expired", "too old"))], End::Hang),
            list(vec![cm("a", "1"), cm("c", "6")], Some("6"), Some("page-2")),
            Reply::Json(500, status(500, "InternalError", "etcd hiccup")),
            list(vec![cm("b", "2"), cm("d", "7")], Some("7"), None),
        ],
        items: &[
            "Init", "InitApply(a)", "InitApply(b)", "InitDone", "WatchError 410", "Init",
            "InitApply(a)", "InitApply(c)", "InitialListFailed 500", "Init", "InitApply(b)",
            "InitApply(d)", "InitDone",
        ],
        store: &[("b", "2"), ("d", "7")],
        always: |contents| {
            let first = [("a", "1"), ("b", "2")];
            let last = [("b", "2"), ("d", "7")];
            let is = |expected: &[(&str, &str)]| {
                contents.len() == expected.len()
                    && expected.iter().all(|(k, v)| contents.get(*k).map(String::as_str) == Some(*v))
            };
            contents.is_empty() || is(&first) || is(&last)
        },
        deleted: Some(&["ns/a"]),
        inits: Some(1),
        ..Scenario::default()
    };
}
