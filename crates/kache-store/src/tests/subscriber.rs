//! Subscriber behaviour: replay, relist diffs, resync of slow subscribers, backpressure,
//! drop semantics, and a property test against the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_client::api::ObjectMeta;
use proptest::prelude::*;

use super::model::{Model, Obj, Op, op, tier};
use crate::testing::Replay;
use crate::{Delivery, Error, Event, ReflectExt, Store, Subscriber, Writer};

/// A `ConfigMap` in namespace `ns`, with uid `uid-<name>`.
pub(super) fn cm(name: &str, rv: impl std::fmt::Display) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("ns".to_owned()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(rv.to_string()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// An event as its `Display` and, when it carries an object, the object's version:
/// `Apply(name)@rv`, for readable assertions.
pub(super) fn show(event: &Event<Arc<ConfigMap>>) -> String {
    let shown = event.clone().map(|obj| (*obj).clone());
    match event.object() {
        Some(obj) => format!("{shown}@{}", at(obj)),
        None => shown.to_string(),
    }
}

/// The resourceVersion of an object.
fn at(obj: &ConfigMap) -> &str {
    obj.metadata.resource_version.as_deref().unwrap_or_default()
}

/// The store's objects as sorted `name@rv`.
pub(super) fn versions(store: &Store<ConfigMap>) -> Vec<String> {
    let mut objs: Vec<_> = store
        .state()
        .iter()
        .map(|obj| {
            format!(
                "{}@{}",
                obj.metadata.name.as_deref().unwrap_or_default(),
                at(obj)
            )
        })
        .collect();
    objs.sort();
    objs
}

/// Everything the subscriber can yield without waiting, and whether it ended.
pub(super) fn drain(sub: &mut Subscriber<ConfigMap>) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    loop {
        match sub.next().now_or_never() {
            Some(Some(event)) => out.push(show(&event)),
            Some(None) => return (out, true),
            None => return (out, false),
        }
    }
}

/// The snapshot part of a drained sequence, sorted (snapshot order is unspecified).
fn snapshot(events: &[String]) -> Vec<String> {
    assert_eq!(
        events.first().map(String::as_str),
        Some("Init"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("InitDone"),
        "{events:?}"
    );
    let mut middle = events[1..events.len() - 1].to_vec();
    middle.sort();
    middle
}

/// A complete relist of `objs`: `Init`, one `InitApply` each, `InitDone`.
pub(super) fn relist(writer: &mut Writer<ConfigMap>, objs: impl IntoIterator<Item = ConfigMap>) {
    writer.apply(Event::Init);
    for obj in objs {
        writer.apply(Event::InitApply(obj));
    }
    writer.apply(Event::InitDone);
}

#[test]
fn late_subscriber_replays_current_state_then_changes() {
    let mut writer = Writer::new();
    relist(&mut writer, [cm("a", 1), cm("b", 2)]);
    let mut sub = writer.as_reader().subscribe();
    let (events, ended) = drain(&mut sub);
    assert!(!ended);
    assert_eq!(snapshot(&events), ["InitApply(a)@1", "InitApply(b)@2"]);
    assert!(sub.is_synced());
    writer.apply(Event::Apply(cm("c", 3)));
    assert_eq!(drain(&mut sub).0, ["Apply(c)@3"]);
}

#[test]
fn subscriber_before_ready_gets_the_first_sync() {
    let mut writer = Writer::new();
    let mut sub = writer.subscribe();
    let handle = sub.handle();
    writer.apply(Event::Apply(cm("early", 1)));
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("a", 2)));
    assert_eq!(
        drain(&mut sub).0,
        Vec::<String>::new(),
        "nothing before the store is ready"
    );
    assert!(!handle.is_synced());
    writer.apply(Event::InitDone);
    assert_eq!(drain(&mut sub).0, ["Init", "InitApply(a)@2", "InitDone"]);
    assert!(handle.is_synced());
    assert_eq!(handle.wait_synced().now_or_never(), Some(Ok(())));
}

#[test]
fn empty_first_sync_is_delivered_to_waiting_subscriber() {
    let mut writer = Writer::new();
    let mut sub = writer.subscribe();
    writer.apply(Event::Init);
    writer.apply(Event::InitDone);
    assert_eq!(drain(&mut sub).0, ["Init", "InitDone"]);
}

#[test]
fn relist_sends_exactly_the_changed_added_and_removed_objects() {
    let mut writer = Writer::new();
    relist(
        &mut writer,
        [cm("same", 1), cm("changed", 1), cm("removed", 1)],
    );
    let mut sub = writer.subscribe();
    drain(&mut sub);
    relist(
        &mut writer,
        [cm("same", 1), cm("changed", 2), cm("added", 3)],
    );
    let (mut events, _) = drain(&mut sub);
    events.sort();
    assert_eq!(
        events,
        ["Apply(added)@3", "Apply(changed)@2", "Delete(removed)@1"]
    );
}

#[test]
fn relist_of_unchanged_world_sends_nothing() {
    let mut writer = Writer::new();
    relist(&mut writer, [cm("a", 1), cm("b", 1)]);
    let mut sub = writer.subscribe();
    drain(&mut sub);
    relist(&mut writer, [cm("a", 1), cm("b", 1)]);
    assert_eq!(drain(&mut sub).0, Vec::<String>::new());
}

#[test]
fn delete_of_unknown_object_is_not_sent() {
    let mut writer = Writer::new();
    relist(&mut writer, [cm("a", 1)]);
    let mut sub = writer.subscribe();
    drain(&mut sub);
    writer.apply(Event::Delete(cm("ghost", 2)));
    writer.apply(Event::Delete(cm("a", 3)));
    assert_eq!(drain(&mut sub).0, ["Delete(a)@3"]);
}

#[test]
fn stalled_subscriber_does_not_block_writer_or_others_and_is_resynced() {
    let mut writer = Writer::new().with_buffer(4);
    relist(&mut writer, [cm("a", 1)]);
    let mut stalled = writer.subscribe();
    let mut fast = writer.subscribe();
    drain(&mut stalled);
    drain(&mut fast);
    let mut fast_events = Vec::new();
    for rv in 2..40 {
        writer.apply(Event::Apply(cm(&format!("o{}", rv % 7), rv)));
        fast_events.extend(drain(&mut fast).0);
    }
    assert_eq!(fast_events.len(), 38, "the fast subscriber missed nothing");
    assert_eq!(fast.resyncs(), 0);

    let (events, _) = drain(&mut stalled);
    assert_eq!(stalled.resyncs(), 1);
    let store = writer.as_reader();
    let mut expected: Vec<String> = store
        .state()
        .iter()
        .map(|o| show(&Event::InitApply(Arc::clone(o))))
        .collect();
    expected.sort();
    assert_eq!(snapshot(&events), expected);
    assert_eq!(stalled.lag(), 0);
}

/// Takes up to `n` events without waiting.
fn take(sub: &mut Subscriber<ConfigMap>, n: usize) -> Vec<String> {
    std::iter::from_fn(|| sub.next().now_or_never().flatten())
        .take(n)
        .map(|event| show(&event))
        .collect()
}

/// Two subscribers a full buffer behind (buffer 8); the first has started its resync, then
/// `changes` more changes (to `b`) are made before the second resyncs. Returns what the
/// second yields, split at its `InitDone`: its snapshot (sorted) and the live events after it.
fn second_resync_after(changes: u64, first_done: bool) -> (Vec<String>, Vec<String>) {
    let mut writer = Writer::new().with_buffer(8);
    relist(&mut writer, [cm("a", 1), cm("b", 1)]);
    let store = writer.as_reader();
    let mut first = writer.subscribe();
    let mut second = writer.subscribe();
    drain(&mut first);
    drain(&mut second);
    for rv in 2..12 {
        writer.apply(Event::Apply(cm("a", rv)));
    }
    assert_eq!(take(&mut first, 2)[0], "Init");
    if first_done {
        drain(&mut first);
    }
    for rv in 12..12 + changes {
        writer.apply(Event::Apply(cm("b", rv)));
    }
    let events: Vec<_> = std::iter::from_fn(|| second.next().now_or_never().flatten()).collect();
    drain(&mut first);
    assert_eq!((first.resyncs(), second.resyncs()), (1, 1));
    // Whichever snapshot it got, the second subscriber's replay is the store.
    let mut replay = Replay::default();
    for event in &events {
        replay.apply(event);
    }
    assert_eq!(replay.versions(), crate::testing::stored_versions(&store));
    let events: Vec<String> = events.iter().map(show).collect();
    let done = events
        .iter()
        .position(|e| e == "InitDone")
        .expect("a resync");
    (snapshot(&events[..=done]), events[done + 1..].to_vec())
}

#[test]
fn resync_soon_after_another_shares_its_snapshot_and_replays_the_changes_since() {
    let (snapshot, live) = second_resync_after(3, false);
    // The first subscriber's snapshot (b still at 1), then the three changes made since.
    assert_eq!(snapshot, ["InitApply(a)@11", "InitApply(b)@1"]);
    assert_eq!(live, ["Apply(b)@12", "Apply(b)@13", "Apply(b)@14"]);
}

#[test]
fn resync_half_a_buffer_after_another_takes_a_fresh_snapshot() {
    let (snapshot, live) = second_resync_after(5, false);
    assert_eq!(snapshot, ["InitApply(a)@11", "InitApply(b)@16"]);
    assert!(live.is_empty(), "{live:?}");
}

#[test]
fn snapshot_no_subscriber_walks_any_more_is_not_shared() {
    let (snapshot, live) = second_resync_after(1, true);
    assert_eq!(snapshot, ["InitApply(a)@11", "InitApply(b)@12"]);
    assert!(live.is_empty(), "{live:?}");
}

/// A flood on two threads: subscribers that start reading only once the writer is halfway
/// through fall behind a small buffer, resync (sharing snapshots as they go), and their
/// replay still ends equal to the store; prompt subscribers of both kinds see it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_subscribers_replay_equals_the_store_after_a_flood() {
    const EVENTS: u64 = 4_000;
    let mut writer = Writer::new().with_buffer(16);
    relist(&mut writer, (0..50).map(|i| cm(&format!("o{i}"), 0)));
    let store = writer.as_reader();
    let (halfway_tx, halfway) = tokio::sync::watch::channel(false);
    let mut late_handles = Vec::new();
    let consumers: Vec<_> = (0..12)
        .map(|i| {
            let delivery = if i % 4 == 0 {
                Delivery::Backpressure
            } else {
                Delivery::Resync
            };
            let late = i % 2 == 1;
            let mut sub = writer.subscribe_with(delivery);
            if late {
                late_handles.push(sub.handle());
            }
            let mut halfway = halfway.clone();
            tokio::spawn(async move {
                let mut replay = Replay::default();
                if late {
                    // Its first snapshot, then a pause while the writer runs far ahead.
                    while !sub.is_synced() {
                        let event = sub.next().await.expect("the first snapshot");
                        replay.apply(&event);
                    }
                    halfway
                        .wait_for(|halfway| *halfway)
                        .await
                        .expect("the flood runs");
                }
                while let Some(event) = sub.next().await {
                    replay.apply(&event);
                }
                (late, sub.resyncs(), replay.versions())
            })
        })
        .collect();
    // Every change after a relist in the middle: deletes, re-creates and updates of 50 keys.
    let events = (1..=EVENTS).flat_map(|rv| {
        let name = format!("o{}", rv % 50);
        let event = if rv % 7 == 0 {
            Event::Delete(cm(&name, rv))
        } else {
            Event::Apply(cm(&name, rv))
        };
        let relist = (rv == EVENTS / 2).then(move || {
            std::iter::once(Event::Init)
                .chain((0..25).map(move |i| Event::InitApply(cm(&format!("o{i}"), rv))))
                .chain(std::iter::once(Event::InitDone))
        });
        std::iter::once(event).chain(relist.into_iter().flatten())
    });
    for handle in &late_handles {
        tokio::time::timeout(std::time::Duration::from_secs(60), handle.wait_synced())
            .await
            .expect("late subscribers take their first snapshot")
            .expect("they are alive");
    }
    let mut applied = 0;
    stream::iter(events.map(Ok::<_, ()>))
        .reflect(writer)
        .for_each(|_| {
            applied += 1;
            if applied == EVENTS / 2 {
                halfway_tx.send_replace(true);
            }
            std::future::ready(())
        })
        .await;
    let expected = crate::testing::stored_versions(&store);
    for consumer in consumers {
        let (late, resyncs, seen) =
            tokio::time::timeout(std::time::Duration::from_secs(60), consumer)
                .await
                .expect("every subscriber stream ends once the writer is gone")
                .expect("no consumer panicked");
        assert_eq!(seen, expected, "late: {late}, resyncs: {resyncs}");
        if late {
            assert!(
                resyncs >= 1,
                "a late subscriber fell {} changes behind a buffer of 16",
                EVENTS / 2
            );
        }
    }
}

#[test]
fn lag_counts_changes_not_yet_taken_in() {
    let mut writer = Writer::new();
    relist(&mut writer, [cm("a", 1)]);
    let mut sub = writer.subscribe();
    drain(&mut sub);
    assert_eq!(sub.lag(), 0);
    writer.apply(Event::Apply(cm("a", 2)));
    writer.apply(Event::Apply(cm("a", 3)));
    assert_eq!(sub.lag(), 2);
    drain(&mut sub);
    assert_eq!(sub.lag(), 0);
}

#[test]
fn backpressure_makes_reflect_wait_and_delivers_every_event_in_order() {
    let mut writer = Writer::new().with_buffer(2);
    relist(&mut writer, []);
    let store = writer.as_reader();
    let mut sub = writer.subscribe_with(Delivery::Backpressure);
    assert_eq!(drain(&mut sub).0, ["Init", "InitDone"]);

    let events = (1..=20).map(|rv| Ok::<_, ()>(Event::Apply(cm(&format!("o{rv}"), rv))));
    let mut reflect = stream::iter(events).reflect(writer);
    let mut received = Vec::new();
    let mut finished = false;
    while !finished {
        // Run the writer until it has to wait for the subscriber.
        loop {
            match reflect.next().now_or_never() {
                Some(Some(_)) => {}
                Some(None) => {
                    finished = true;
                    break;
                }
                None => break,
            }
        }
        assert!(
            store.len() <= received.len() + 3,
            "the writer ran {} changes ahead of a subscriber that took {}",
            store.len(),
            received.len()
        );
        // Take one event, freeing one slot.
        if let Some(Some(event)) = sub.next().now_or_never() {
            received.push(show(&event));
        }
    }
    drop(reflect);
    received.extend(drain(&mut sub).0);
    let expected: Vec<String> = (1..=20).map(|rv| format!("Apply(o{rv})@{rv}")).collect();
    assert_eq!(received, expected);
    assert_eq!(sub.resyncs(), 0);
}

#[tokio::test]
async fn apply_async_waits_for_backpressure_subscriber() {
    let mut writer = Writer::new().with_buffer(1);
    relist(&mut writer, []);
    let mut sub = writer.subscribe_with(Delivery::Backpressure);
    drain(&mut sub);
    writer.apply_async(Event::Apply(cm("a", 1))).await;
    {
        let mut second = Box::pin(writer.apply_async(Event::Apply(cm("b", 2))));
        assert!((&mut second).now_or_never().is_none(), "the buffer is full");
    }
    // The cancelled call left `b` applied and queued; taking `a` makes room for it.
    assert_eq!(drain(&mut sub).0, ["Apply(a)@1"]);
    let mut third = Box::pin(writer.apply_async(Event::Apply(cm("c", 3))));
    assert!(
        (&mut third).now_or_never().is_none(),
        "b went out, c waits for room"
    );
    assert_eq!(drain(&mut sub).0, ["Apply(b)@2"]);
    assert!(third.now_or_never().is_some(), "taking b made room for c");
    assert_eq!(drain(&mut sub).0, ["Apply(c)@3"]);
}

#[test]
fn sync_apply_resyncs_a_full_backpressure_subscriber() {
    let mut writer = Writer::new().with_buffer(2);
    relist(&mut writer, []);
    let mut sub = writer.subscribe_with(Delivery::Backpressure);
    drain(&mut sub);
    for rv in 1..=5 {
        writer.apply(Event::Apply(cm(&format!("o{rv}"), rv)));
    }
    let (events, _) = drain(&mut sub);
    assert_eq!(sub.resyncs(), 1);
    assert_eq!(
        snapshot(&events),
        (1..=5)
            .map(|rv| format!("InitApply(o{rv})@{rv}"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn dropped_subscriber_frees_its_buffer() {
    let mut writer = Writer::new();
    relist(&mut writer, []);
    let mut sub = writer.subscribe();
    drain(&mut sub);
    writer.apply(Event::Apply(cm("a", 1)));
    writer.apply(Event::Apply(cm("b", 2)));
    assert_eq!(writer.buffered(), (2, 0));
    drop(sub);
    assert_eq!(writer.buffered(), (0, 0));
    writer.apply(Event::Apply(cm("c", 3)));
    assert_eq!(writer.buffered(), (0, 0), "no subscriber, nothing buffered");
}

#[test]
fn dropping_a_full_backpressure_subscriber_releases_the_writer() {
    let mut writer = Writer::new().with_buffer(1);
    relist(&mut writer, []);
    let mut sub = writer.subscribe_with(Delivery::Backpressure);
    drain(&mut sub);
    let events = (1..=3).map(|rv| Ok::<_, ()>(Event::Apply(cm(&format!("o{rv}"), rv))));
    let mut reflect = stream::iter(events).reflect(writer);
    assert!(reflect.next().now_or_never().is_some());
    assert!(reflect.next().now_or_never().is_some());
    assert!(
        reflect.next().now_or_never().is_none(),
        "waiting for the subscriber"
    );
    drop(sub);
    let rest: Vec<_> = reflect.collect().now_or_never().expect("no longer waits");
    assert_eq!(rest.len(), 1);
}

#[test]
fn writer_drop_ends_streams_after_buffered_items() {
    let mut writer = Writer::new();
    relist(&mut writer, []);
    let store = writer.as_reader();
    let mut sub = writer.subscribe();
    drain(&mut sub);
    writer.apply(Event::Apply(cm("a", 1)));
    writer.apply(Event::Apply(cm("b", 2)));
    drop(writer);
    assert_eq!(
        drain(&mut sub),
        (vec!["Apply(a)@1".to_owned(), "Apply(b)@2".to_owned()], true)
    );
    // A subscriber joining after the writer is gone gets the final state, then ends.
    let (events, ended) = drain(&mut store.subscribe());
    assert!(ended);
    assert_eq!(snapshot(&events), ["InitApply(a)@1", "InitApply(b)@2"]);
}

#[test]
fn subscriber_ends_if_writer_dropped_before_ready() {
    let writer = Writer::<ConfigMap>::new();
    let mut sub = writer.subscribe();
    let handle = sub.handle();
    drop(writer);
    assert_eq!(drain(&mut sub), (vec![], true));
    drop(sub);
    assert_eq!(
        handle.wait_synced().now_or_never(),
        Some(Err(Error::SubscriberDropped))
    );
}

/// A subscriber's view rebuilt from its events.
/// A subscriber's consumer: the one replay of its events, and whether its stream ended.
#[derive(Default)]
struct View {
    replay: Replay<ConfigMap>,
    ended: bool,
}

impl View {
    fn take(&mut self, sub: &mut Subscriber<ConfigMap>, max: usize) {
        for _ in 0..max {
            match sub.next().now_or_never() {
                Some(Some(event)) => self.replay.apply(&event),
                Some(None) => {
                    self.ended = true;
                    return;
                }
                None => return,
            }
        }
    }
}

fn store_set(store: &Store<ConfigMap>) -> BTreeSet<Obj> {
    store.state().iter().map(|o| Obj::from_cm(o)).collect()
}

#[derive(Clone, Debug)]
enum Step {
    Event(Op),
    /// Let subscriber `.0` take up to `.1` events.
    Consume(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => op().prop_map(Step::Event),
        1 => (0..3usize, 0..6usize).prop_map(|(s, n)| Step::Consume(s, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn drained_subscribers_match_the_store(
        steps in proptest::collection::vec(step(), 0..120),
        buffer in 1..5usize,
    ) {
        let mut writer = Writer::<ConfigMap>::new().with_index("tier", tier).with_buffer(buffer);
        let store = writer.as_reader();
        let mut subs = [
            writer.subscribe(),
            writer.subscribe(),
            writer.subscribe_with(Delivery::Backpressure),
        ];
        let mut views: [View; 3] = Default::default();
        let mut model = Model::default();
        for step in &steps {
            match step {
                Step::Event(op) => {
                    writer.apply(model.step(op));
                }
                Step::Consume(i, n) => views[*i].take(&mut subs[*i], *n),
            }
        }
        for (sub, view) in subs.iter_mut().zip(&mut views) {
            view.take(sub, usize::MAX);
            prop_assert!(!view.ended);
            prop_assert!(!view.replay.in_snapshot());
            prop_assert_eq!(sub.is_synced(), model.ready);
            let seen: BTreeSet<Obj> = view.replay.objects().values().map(|o| Obj::from_cm(o)).collect();
            if model.ready {
                prop_assert_eq!(&seen, &store_set(&store));
            } else {
                // Before the first sync a subscriber has been told nothing.
                prop_assert!(seen.is_empty());
            }
        }
        drop(writer);
        for (sub, view) in subs.iter_mut().zip(&mut views) {
            view.take(sub, usize::MAX);
            prop_assert!(view.ended);
        }
    }
}
