//! Read-your-writes: how far the store has reached, and the waits of stores and subscribers.
//!
//! Each wait is polled by hand (`now_or_never` on a pinned future), so every step is exact:
//! a wait is pending until the event that satisfies it is applied, and done right after.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;

use super::subscriber::cm;
use crate::{Error, Event, ResourceVersion, Store, Subscriber, Writer, store};

fn with_uid(mut obj: ConfigMap, uid: &str) -> ConfigMap {
    obj.metadata.uid = Some(uid.to_owned());
    obj
}

fn rv(version: &str) -> ResourceVersion {
    ResourceVersion::parse(version).unwrap()
}

/// Polls a pinned wait once: `None` while it is pending.
fn poll<T>(wait: &mut Pin<&mut impl Future<Output = T>>) -> Option<T> {
    wait.as_mut().now_or_never()
}

/// Asserts that `wait` is pending until `sub` yields its next event and done right after;
/// returns that event.
fn done_with_next_event<F: Future<Output = crate::Result<()>>>(
    wait: &mut Pin<&mut F>,
    sub: &mut Subscriber<ConfigMap>,
) -> Event<Arc<ConfigMap>> {
    assert_eq!(poll(wait), None, "done before the subscriber yielded");
    let event = sub.next().now_or_never().flatten().expect("an event");
    assert_eq!(poll(wait), Some(Ok(())), "not done after {event:?}");
    event
}

fn ready(writer: &mut Writer<ConfigMap>) {
    writer.apply(Event::Init);
    writer.apply(Event::InitDone);
}

fn waiters(store: &Store<ConfigMap>) -> usize {
    store.waiters()
}

#[test]
fn a_wait_resolves_at_once_when_the_store_is_already_there() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    assert_eq!(
        store.wait_for_version(&rv("3")).now_or_never(),
        Some(Ok(()))
    );
    assert_eq!(
        store.wait_for_version(&rv("5")).now_or_never(),
        Some(Ok(()))
    );
    assert_eq!(store.wait_for(&cm("a", "5")).now_or_never(), Some(Ok(())));
    assert_eq!(store.resource_version(), Ok(Some(rv("5"))));
}

#[test]
fn a_wait_resolves_with_the_event_that_makes_the_write_visible_and_not_before() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    let written = cm("a", "7");
    let mut wait = std::pin::pin!(store.wait_for(&written));
    assert_eq!(poll(&mut wait), None);
    writer.apply(Event::Apply(cm("b", "6")));
    assert_eq!(poll(&mut wait), None, "6 is not 7");
    writer.apply(Event::Apply(written.clone()));
    assert_eq!(poll(&mut wait), Some(Ok(())));
    let cached = store.get(Some("ns"), "a").unwrap();
    assert_eq!(cached.metadata.resource_version.as_deref(), Some("7"));
}

#[test]
fn a_newer_version_satisfies_a_wait_for_an_older_one() {
    let (store, mut writer) = store();
    let mut wait = std::pin::pin!(store.wait_for(&cm("a", "7")));
    writer.apply(Event::Apply(cm("b", "9")));
    assert_eq!(poll(&mut wait), Some(Ok(())));
}

#[test]
fn a_wait_fails_when_the_writer_is_dropped_first() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    let mut wait = std::pin::pin!(store.wait_for_version(&rv("6")));
    assert_eq!(poll(&mut wait), None);
    drop(writer);
    assert_eq!(poll(&mut wait), Some(Err(Error::WriterDropped)));
    assert_eq!(
        store.wait_for_version(&rv("5")).now_or_never(),
        Some(Ok(())),
        "a wait the store already meets succeeds after the writer is gone"
    );
    assert_eq!(
        store.wait_for_version(&rv("6")).now_or_never(),
        Some(Err(Error::WriterDropped))
    );
}

#[test]
fn versions_that_are_not_comparable_are_typed_errors() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    let not_comparable = |version: &str| {
        Some(Err(Error::NotComparable {
            version: version.to_owned(),
        }))
    };
    assert_eq!(
        store.wait_for(&cm("b", "abc")).now_or_never(),
        not_comparable("abc")
    );
    assert_eq!(
        store.wait_for(&cm("b", "05")).now_or_never(),
        not_comparable("05")
    );
    assert_eq!(
        store.wait_for(&ConfigMap::default()).now_or_never(),
        not_comparable(""),
        "an object without a version"
    );

    // A server whose versions cannot be ordered: the store cannot tell how far it is.
    writer.apply(Event::Apply(cm("b", "x17")));
    assert_eq!(
        store.resource_version(),
        Err(Error::NotComparable {
            version: "x17".to_owned()
        })
    );
    assert_eq!(
        store.wait_for_version(&rv("1")).now_or_never(),
        not_comparable("x17")
    );
    writer.apply(Event::Apply(cm("c", "99")));
    assert_eq!(
        store.wait_for_version(&rv("1")).now_or_never(),
        not_comparable("99"),
        "a store that saw a version it cannot order never orders again"
    );
}

#[test]
fn dropping_a_wait_leaves_nothing_behind() {
    let (store, mut writer) = store();
    let mut wait = Box::pin(store.wait_for_version(&rv("10")));
    assert_eq!(wait.as_mut().now_or_never(), None);
    let mut other = Box::pin(store.wait_for_version(&rv("11")));
    assert_eq!(other.as_mut().now_or_never(), None);
    assert_eq!(waiters(&store), 2);
    drop(wait);
    assert_eq!(waiters(&store), 1);
    writer.apply(Event::Apply(cm("a", "11")));
    assert_eq!(other.as_mut().now_or_never(), Some(Ok(())));
    drop(other);
    assert_eq!(waiters(&store), 0);
}

#[test]
fn progress_advances_the_version_with_no_object_change() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    let outside_the_selector = rv("9");
    let mut wait = std::pin::pin!(store.wait_for_version(&outside_the_selector));
    assert_eq!(poll(&mut wait), None);
    writer.apply_progress("12");
    assert_eq!(poll(&mut wait), Some(Ok(())));
    assert_eq!(store.len(), 1);
    assert_eq!(store.resource_version(), Ok(Some(rv("12"))));
    writer.apply_progress("");
    writer.apply_progress("8");
    assert_eq!(
        store.resource_version(),
        Ok(Some(rv("12"))),
        "never goes back"
    );
}

#[test]
fn a_relist_moves_the_version_only_when_it_becomes_visible() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("a", "8")));
    writer.apply(Event::Delete(cm("b", "9")));
    writer.apply_progress("12");
    assert_eq!(
        store.resource_version(),
        Ok(Some(rv("5"))),
        "readers still see the previous generation"
    );
    let mut wait = std::pin::pin!(store.wait_for(&cm("a", "8")));
    assert_eq!(poll(&mut wait), None);
    writer.apply(Event::InitDone);
    assert_eq!(poll(&mut wait), Some(Ok(())));
    assert_eq!(store.resource_version(), Ok(Some(rv("12"))));
}

#[test]
fn an_older_relist_never_moves_the_version_back() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("a", "5")));
    writer.apply(Event::Delete(cm("b", "20")));
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("a", "5")));
    writer.apply(Event::InitDone);
    assert_eq!(store.resource_version(), Ok(Some(rv("20"))));
}

#[test]
fn a_deletion_wait_needs_the_object_gone_after_the_version_it_was_known_at() {
    let (store, mut writer) = store();
    writer.apply(Event::Apply(cm("x", "3")));
    // The caller created `a` at 5 and deleted it; the store has seen neither yet.
    let created = cm("a", "5");
    let mut wait = std::pin::pin!(store.wait_for_deletion(&created));
    assert_eq!(poll(&mut wait), None, "absent only because not yet created");
    writer.apply(Event::Apply(created.clone()));
    assert_eq!(poll(&mut wait), None);
    writer.apply(Event::Apply(cm("x", "6")));
    assert_eq!(
        poll(&mut wait),
        None,
        "the store is past 5 but still holds it"
    );
    writer.apply(Event::Delete(cm("a", "7")));
    assert_eq!(poll(&mut wait), Some(Ok(())));
    assert!(store.get(Some("ns"), "a").is_none());
}

#[test]
fn a_deletion_wait_ignores_a_new_object_under_the_same_name() {
    let (store, mut writer) = store();
    let old = with_uid(cm("a", "5"), "first");
    writer.apply(Event::Apply(old.clone()));
    let mut wait = std::pin::pin!(store.wait_for_deletion(&old));
    writer.apply(Event::Delete(old.clone()));
    writer.apply(Event::Apply(with_uid(cm("a", "8"), "second")));
    assert_eq!(poll(&mut wait), Some(Ok(())));
    assert_eq!(
        store.wait_for_deletion(&old).now_or_never(),
        Some(Ok(())),
        "the name is taken again, but not by the deleted object"
    );
}

#[test]
fn a_set_of_writes_waits_for_the_newest() {
    let (store, mut writer) = store();
    let written = [cm("a", "3"), cm("b", "9"), cm("c", "5")];
    let mut wait = std::pin::pin!(store.wait_for_all(&written));
    writer.apply(Event::Apply(cm("a", "8")));
    assert_eq!(poll(&mut wait), None);
    writer.apply(Event::Apply(cm("b", "9")));
    assert_eq!(poll(&mut wait), Some(Ok(())));
    drop(writer);
    assert_eq!(
        store.wait_for_all(&[]).now_or_never(),
        Some(Ok(())),
        "no write: nothing to wait for"
    );
    assert_eq!(
        store
            .wait_for_all(&[cm("a", "1"), cm("b", "x")])
            .now_or_never(),
        Some(Err(Error::NotComparable {
            version: "x".to_owned()
        }))
    );
}

#[test]
fn a_subscriber_wait_resolves_when_the_write_is_yielded() {
    let (store, mut writer) = store();
    let mut sub = store.subscribe();
    let handle = sub.handle();
    ready(&mut writer);
    let written = cm("a", "4");
    writer.apply(Event::Apply(written.clone()));
    let mut wait = std::pin::pin!(handle.wait_for(&written));
    assert_eq!(poll(&mut wait), None, "nothing yielded yet");
    // The first snapshot already holds the write: its `InitDone` hands it over.
    assert_eq!(sub.next().now_or_never(), Some(Some(Event::Init)));
    assert!(matches!(
        sub.next().now_or_never(),
        Some(Some(Event::InitApply(_)))
    ));
    assert_eq!(poll(&mut wait), None);
    assert_eq!(sub.next().now_or_never(), Some(Some(Event::InitDone)));
    assert_eq!(poll(&mut wait), Some(Ok(())));

    let next = cm("b", "5");
    let mut wait = std::pin::pin!(handle.wait_for(&next));
    writer.apply(Event::Apply(next.clone()));
    let event = done_with_next_event(&mut wait, &mut sub);
    assert!(matches!(event, Event::Apply(_)), "{event:?}");
}

#[test]
fn a_subscriber_wait_on_a_relist_resolves_with_the_last_event_of_its_difference() {
    let (store, mut writer) = store();
    let mut sub = store.subscribe();
    let handle = sub.handle();
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("a", "1")));
    writer.apply(Event::InitDone);
    while sub.next().now_or_never() != Some(Some(Event::InitDone)) {}

    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("b", "2")));
    writer.apply(Event::InitApply(cm("c", "3")));
    writer.apply(Event::InitDone);
    let mut wait = std::pin::pin!(handle.wait_for_version(&rv("3")));
    // The difference is three events: `Apply` b and c, `Delete` a.
    for _ in 0..2 {
        assert!(sub.next().now_or_never().flatten().is_some());
        assert_eq!(poll(&mut wait), None);
    }
    done_with_next_event(&mut wait, &mut sub);
}

#[test]
fn a_subscriber_wait_on_a_deletion_resolves_when_the_delete_is_yielded() {
    let (store, mut writer) = store();
    let mut sub = store.subscribe();
    let handle = sub.handle();
    ready(&mut writer);
    let created = cm("a", "2");
    writer.apply(Event::Apply(created.clone()));
    while sub.next().now_or_never().is_some() {}
    let mut wait = std::pin::pin!(handle.wait_for_deletion(&created));
    writer.apply(Event::Delete(cm("a", "3")));
    let event = done_with_next_event(&mut wait, &mut sub);
    assert!(matches!(event, Event::Delete(_)), "{event:?}");
}

#[test]
fn a_subscriber_wait_fails_when_the_subscriber_is_dropped() {
    let (store, mut writer) = store();
    let sub = store.subscribe();
    let handle = sub.handle();
    ready(&mut writer);
    let mut wait = std::pin::pin!(handle.wait_for_all(&[cm("a", "1"), cm("b", "2")]));
    writer.apply(Event::Apply(cm("b", "2")));
    assert_eq!(poll(&mut wait), None);
    drop(sub);
    assert_eq!(poll(&mut wait), Some(Err(Error::SubscriberDropped)));
}

#[test]
fn waits_can_be_spawned() {
    fn spawnable<T: Send + 'static>(_: T) {}
    let (store, writer) = store();
    let handle = writer.subscribe().handle();
    // `Send` only if every wait it holds across an `.await` is.
    spawnable(async move {
        let obj = cm("a", "1");
        let _ = store.wait_for(&obj).await;
        let _ = store.wait_for_all([&obj]).await;
        let _ = store.wait_for_deletion(&obj).await;
        let _ = store.wait_for_version(&rv("1")).await;
        let _ = handle.wait_for(&obj).await;
        let _ = handle.wait_for_all([&obj]).await;
        let _ = handle.wait_for_deletion(&obj).await;
        let _ = handle.wait_for_version(&rv("1")).await;
    });
    drop(writer);
}

#[tokio::test]
async fn waits_on_other_tasks_are_woken_by_the_writer() {
    let (store, mut writer) = store();
    let waits: Vec<_> = (1..=20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for_version(&rv(&i.to_string())).await })
        })
        .collect();
    for i in 1..=20 {
        writer.apply(Event::Apply(cm(&format!("o{i}"), i)));
        tokio::task::yield_now().await;
    }
    for wait in waits {
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("woken")
            .unwrap()
            .unwrap();
    }
    assert_eq!(waiters(&store), 0);
    let _: Arc<ConfigMap> = store.get(Some("ns"), "o20").unwrap();
}

#[test]
fn a_wait_on_an_object_counts_only_that_object_held_at_its_version_or_newer() {
    let (mut sources, store) = super::sources::synced_sources(&["busy", "quiet"]);
    sources.apply_progress("quiet", "2");
    sources.apply("busy", Event::Apply(with_uid(cm("a", "9"), "a1")));
    assert_eq!(
        store.resource_version(),
        Ok(Some(rv("2"))),
        "the quiet source holds it back"
    );
    let mut shown = std::pin::pin!(store.wait_for(&with_uid(cm("a", "9"), "a1")));
    assert_eq!(
        poll(&mut shown),
        Some(Ok(())),
        "held at the written version"
    );
    let mut older = std::pin::pin!(store.wait_for(&with_uid(cm("a", "7"), "a1")));
    assert_eq!(poll(&mut older), Some(Ok(())), "held at a newer version");
    let mut other = std::pin::pin!(store.wait_for(&with_uid(cm("a", "8"), "a0")));
    assert_eq!(poll(&mut other), None, "another uid under the same name");
    let mut newer = std::pin::pin!(store.wait_for(&with_uid(cm("a", "10"), "a1")));
    assert_eq!(poll(&mut newer), None, "held at an older version");
    let mut all = std::pin::pin!(
        store.wait_for_all(&[with_uid(cm("a", "9"), "a1"), with_uid(cm("b", "4"), "b1"),])
    );
    assert_eq!(
        poll(&mut all),
        None,
        "b is neither held nor passed store-wide"
    );
    sources.apply("busy", Event::Apply(with_uid(cm("b", "4"), "b1")));
    assert_eq!(poll(&mut all), Some(Ok(())), "each shown");
    sources.apply_progress("quiet", "10");
    assert_eq!(poll(&mut other), Some(Ok(())), "passed store-wide (9)");
    assert_eq!(poll(&mut newer), None, "busy is at 9");
    sources.apply_progress("busy", "10");
    assert_eq!(poll(&mut newer), Some(Ok(())), "passed store-wide (10)");
}

#[test]
fn a_deletion_wait_resolves_once_the_object_held_at_its_version_is_gone() {
    let (mut sources, store) = super::sources::synced_sources(&["busy", "quiet"]);
    sources.apply_progress("quiet", "2");
    let known = with_uid(cm("a", "5"), "a1");
    sources.apply("busy", Event::Apply(known.clone()));
    let mut wait = std::pin::pin!(store.wait_for_deletion(&known));
    assert_eq!(poll(&mut wait), None, "still held");
    sources.apply("busy", Event::Delete(with_uid(cm("a", "6"), "a1")));
    assert_eq!(
        store.resource_version(),
        Ok(Some(rv("2"))),
        "the quiet source holds it back"
    );
    assert_eq!(
        poll(&mut wait),
        Some(Ok(())),
        "held at 5, then gone: deleted, whatever the quiet source"
    );
    // A fresh wait that never saw the object held cannot tell a deletion from an object not
    // yet delivered: it waits for the store-wide version.
    let mut fresh = std::pin::pin!(store.wait_for_deletion(&known));
    assert_eq!(poll(&mut fresh), None);
    sources.apply_progress("quiet", "6");
    assert_eq!(poll(&mut fresh), Some(Ok(())));
}
