//! Model-based property test of a store fed by several sources: a cluster of objects, sources
//! that select overlapping parts of it by label and deliver its changes with their own lag,
//! relists, and sources added and removed at random. The store must hold exactly the objects
//! the sources' own views hold (each once, never older than the newest view), keep its index
//! and subscribers in step, and equal the cluster's selection once every source has caught up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_client::api::ObjectMeta;
use proptest::prelude::*;

use crate::{Event, ResourceVersion, Sources, Store, Writer};

const KEYS: usize = 6;
const LABELS: [&str; 3] = ["x", "y", "z"];
/// The labels each source selects: overlapping, as namespaces never do but selectors can.
const SELECTS: [&[usize]; 3] = [&[0, 1], &[1, 2], &[2]];
const NAMES: [&str; 3] = ["s0", "s1", "s2"];

fn cm(key: usize, rv: u64, label: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(format!("k{key}")),
            uid: Some(format!("uid-{key}")),
            resource_version: Some(rv.to_string()),
            labels: Some(BTreeMap::from([(
                "tier".to_owned(),
                LABELS[label].to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn key_of(cm: &ConfigMap) -> usize {
    cm.metadata.name.as_ref().unwrap()[1..].parse().unwrap()
}

fn rv_of(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    /// Creates, updates or relabels an object (`Some(label)`), or deletes it (`None`).
    Change(usize, Option<usize>),
    /// Delivers up to this many queued events of a source.
    Deliver(usize, usize),
    /// The source's watch relists: its queue is replaced by a fresh list.
    Relist(usize),
    /// Adds the source if absent (it starts with a list), removes it if present.
    Toggle(usize),
    /// A bookmark at the cluster's version, for a source whose queue is empty.
    Bookmark(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let source = 0..NAMES.len();
    prop_oneof![
        4 => (0..KEYS, proptest::option::weighted(0.8, 0..LABELS.len()))
            .prop_map(|(k, l)| Op::Change(k, l)),
        5 => (source.clone(), 1..6_usize).prop_map(|(s, n)| Op::Deliver(s, n)),
        1 => source.clone().prop_map(Op::Relist),
        1 => source.clone().prop_map(Op::Toggle),
        1 => source.prop_map(Op::Bookmark),
    ]
}

/// One source: its pending events, and its own view by the single-stream protocol.
#[derive(Default)]
struct Src {
    present: bool,
    queue: VecDeque<Event<ConfigMap>>,
    view: BTreeMap<usize, u64>,
    relist: Option<BTreeMap<usize, u64>>,
}

impl Src {
    fn selects(index: usize, label: usize) -> bool {
        SELECTS[index].contains(&label)
    }

    fn apply(&mut self, event: &Event<ConfigMap>) {
        match event {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(cm) => {
                self.relist
                    .get_or_insert_default()
                    .insert(key_of(cm), rv_of(cm));
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.view = relist;
                }
            }
            Event::Apply(cm) => {
                self.view.insert(key_of(cm), rv_of(cm));
                if let Some(relist) = &mut self.relist {
                    relist.insert(key_of(cm), rv_of(cm));
                }
            }
            Event::Delete(cm) => {
                self.view.remove(&key_of(cm));
                if let Some(relist) = &mut self.relist {
                    relist.remove(&key_of(cm));
                }
            }
        }
    }
}

struct Harness {
    /// key → (resourceVersion, label)
    world: BTreeMap<usize, (u64, usize)>,
    rv: u64,
    srcs: Vec<Src>,
    /// Each source that has completed a list since it was added.
    synced: [bool; 3],
    ready: bool,
    sources: Sources<ConfigMap>,
    store: Store<ConfigMap>,
    subscriber: crate::Subscriber<ConfigMap>,
    seen: BTreeMap<String, String>,
    seen_deletes: Vec<String>,
}

impl Harness {
    fn new() -> Self {
        let writer = Writer::new()
            .with_buffer(1 << 16)
            .with_index("tier", super::model::tier);
        let store = writer.as_reader();
        let subscriber = store.subscribe();
        Self {
            world: BTreeMap::new(),
            rv: 0,
            srcs: (0..NAMES.len()).map(|_| Src::default()).collect(),
            synced: [false; 3],
            ready: false,
            sources: Sources::new(writer),
            store,
            subscriber,
            seen: BTreeMap::new(),
            seen_deletes: Vec::new(),
        }
    }

    fn full_list(&self, index: usize) -> VecDeque<Event<ConfigMap>> {
        let mut queue = VecDeque::from([Event::Init]);
        for (key, (rv, label)) in &self.world {
            if Src::selects(index, *label) {
                queue.push_back(Event::InitApply(cm(*key, *rv, *label)));
            }
        }
        queue.push_back(Event::InitDone);
        queue
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Change(key, label) => {
                self.rv += 1;
                let before = self.world.get(&key).copied();
                let after = label.map(|label| (self.rv, label));
                match after {
                    Some(now) => self.world.insert(key, now),
                    None => self.world.remove(&key),
                };
                for (index, src) in self.srcs.iter_mut().enumerate() {
                    if !src.present {
                        continue;
                    }
                    let was = before.is_some_and(|(_, l)| Src::selects(index, l));
                    match after {
                        Some((rv, l)) if Src::selects(index, l) => {
                            src.queue.push_back(Event::Apply(cm(key, rv, l)));
                        }
                        // Gone from the source's selection (deleted, or relabelled): a real
                        // watch sends the last state, at the version of the change.
                        _ if was => {
                            let l = after.map_or(before.unwrap().1, |(_, l)| l);
                            src.queue.push_back(Event::Delete(cm(key, self.rv, l)));
                        }
                        _ => {}
                    }
                }
            }
            Op::Deliver(index, n) => {
                for _ in 0..n {
                    let Some(event) = self.srcs[index].queue.pop_front() else {
                        break;
                    };
                    self.srcs[index].apply(&event);
                    if matches!(event, Event::InitDone) {
                        self.synced[index] = true;
                    }
                    assert!(self.sources.apply(NAMES[index], event));
                }
            }
            Op::Relist(index) => {
                if self.srcs[index].present {
                    self.srcs[index].queue = self.full_list(index);
                }
            }
            Op::Toggle(index) => {
                if self.srcs[index].present {
                    self.srcs[index] = Src::default();
                    self.synced[index] = false;
                    assert!(self.sources.remove(NAMES[index]));
                } else {
                    let queue = self.full_list(index);
                    self.srcs[index] = Src {
                        present: true,
                        queue,
                        ..Src::default()
                    };
                    assert!(self.sources.add(NAMES[index]));
                }
            }
            Op::Bookmark(index) => {
                // Version 0 is no version (not comparable): nothing has happened yet.
                if self.srcs[index].present && self.srcs[index].queue.is_empty() && self.rv > 0 {
                    self.sources
                        .apply_progress(NAMES[index], &self.rv.to_string());
                }
            }
        }
        let present: Vec<usize> = (0..NAMES.len()).filter(|i| self.srcs[*i].present).collect();
        if !present.is_empty() && present.iter().all(|i| self.synced[*i]) {
            self.ready = true;
        }
    }

    fn stored(&self) -> BTreeMap<usize, u64> {
        self.store
            .state()
            .iter()
            .map(|cm| (key_of(cm), rv_of(cm)))
            .collect()
    }

    /// The invariants that hold after every step.
    fn check(&mut self) {
        let stored = self.stored();
        let mut expected: BTreeMap<usize, u64> = BTreeMap::new();
        for src in self.srcs.iter().filter(|src| src.present) {
            for (key, rv) in &src.view {
                let newest = expected.entry(*key).or_default();
                *newest = (*newest).max(*rv);
            }
        }
        for key in stored.keys() {
            assert!(expected.contains_key(key), "k{key}: held by no source");
        }
        for (key, rv) in &expected {
            match stored.get(key) {
                Some(stored) => assert!(*stored >= *rv, "k{key}: never older than a source's copy"),
                // Withheld only if every source's copy is stale: the store dropped the
                // object at a newer version and never puts an older copy back.
                None => assert!(
                    self.world.get(key).is_none_or(|(current, _)| current > rv),
                    "k{key}: a source holds the current copy, the store none"
                ),
            }
        }
        assert_eq!(self.store.is_synced(), self.ready);
        for (label, name) in LABELS.iter().enumerate() {
            let indexed: BTreeSet<usize> = self
                .store
                .by_index("tier", name)
                .unwrap()
                .iter()
                .map(|cm| key_of(cm))
                .collect();
            let by_scan: BTreeSet<usize> = self
                .store
                .state()
                .iter()
                .filter(|cm| cm.metadata.labels.as_ref().unwrap()["tier"] == LABELS[label])
                .map(|cm| key_of(cm))
                .collect();
            assert_eq!(indexed, by_scan, "index {name}");
        }
        while let Some(Some(event)) = self.subscriber.next().now_or_never() {
            let key = |cm: &ConfigMap| cm.metadata.name.clone().unwrap();
            match &event {
                Event::Init => self.seen.clear(),
                Event::InitApply(cm) | Event::Apply(cm) => {
                    self.seen.insert(key(cm), rv_of(cm).to_string());
                }
                Event::Delete(cm) => {
                    self.seen.remove(&key(cm));
                    self.seen_deletes.push(key(cm));
                }
                Event::InitDone => {}
            }
        }
        if self.store.is_synced() {
            let stored: BTreeMap<String, String> = stored
                .iter()
                .map(|(k, rv)| (format!("k{k}"), rv.to_string()))
                .collect();
            assert_eq!(self.seen, stored, "the subscriber follows the store");
        }
    }

    /// Delivers everything and bookmarks every source at the cluster's version.
    fn drain(&mut self) {
        for index in 0..NAMES.len() {
            let pending = self.srcs[index].queue.len();
            self.step(&Op::Deliver(index, pending));
            self.step(&Op::Bookmark(index));
        }
        self.check();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sources_match_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        h.step(&Op::Toggle(0));
        for op in &ops {
            h.step(op);
            h.check();
        }
        h.drain();
        let present: Vec<usize> = (0..NAMES.len()).filter(|i| h.srcs[*i].present).collect();
        let expected: BTreeMap<usize, u64> = h
            .world
            .iter()
            .filter(|(_, (_, label))| present.iter().any(|i| Src::selects(*i, *label)))
            .map(|(key, (rv, _))| (*key, *rv))
            .collect();
        prop_assert_eq!(h.stored(), expected, "caught up: the cluster's selection, once each");
        if !present.is_empty() && h.rv > 0 {
            let version = h.store.resource_version().unwrap();
            prop_assert_eq!(version, ResourceVersion::parse(&h.rv.to_string()).ok());
        }
    }
}

/// Resharding: the new range's source is added before the old one is removed, and the
/// objects both hold are never deleted and re-added.
#[test]
fn resharding_keeps_the_objects_that_stay() {
    let mut h = Harness::new();
    h.step(&Op::Toggle(0)); // s0: x, y
    for key in 0..KEYS {
        h.step(&Op::Change(key, Some(key % 3)));
    }
    h.drain();
    assert_eq!(h.stored().len(), 4, "x and y objects");
    // Move from s0 (x, y) to s1 (y, z).
    h.step(&Op::Toggle(1));
    h.drain();
    h.step(&Op::Toggle(0));
    h.drain();
    let deleted: BTreeSet<String> = h.seen_deletes.iter().cloned().collect();
    // Only the x objects left; no y object was deleted on the way.
    assert_eq!(deleted, BTreeSet::from(["k0".to_owned(), "k3".to_owned()]));
    assert_eq!(h.stored().len(), 4, "y and z objects");
}

/// A source's relist that misses an object another source holds does not remove it.
#[test]
fn a_relist_never_removes_what_another_source_holds() {
    let mut h = Harness::new();
    h.step(&Op::Toggle(0));
    h.step(&Op::Toggle(1));
    h.step(&Op::Change(0, Some(1))); // y: both hold it
    h.drain();
    assert!(h.store.is_synced());
    // s0 relists while the object has moved to z: s0's list lacks it, s1 still holds it.
    h.step(&Op::Change(0, Some(2)));
    h.step(&Op::Deliver(1, 1));
    h.step(&Op::Relist(0));
    h.step(&Op::Deliver(0, 10));
    h.check();
    assert!(h.store.get(Some("ns"), "k0").is_some());
    assert!(h.seen_deletes.is_empty());
}

type Item = Result<Event<ConfigMap>, std::convert::Infallible>;

/// An event stream fed from a channel, as a watcher would be.
fn channel() -> (
    tokio::sync::mpsc::UnboundedSender<Item>,
    impl futures::Stream<Item = Item> + Send,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (tx, stream)
}

#[tokio::test]
async fn reflector_adds_and_removes_sources_at_runtime() {
    let sources = Sources::new(Writer::<ConfigMap>::new());
    let store = sources.store();
    let (set, reflector) = sources.into_reflector::<std::convert::Infallible>();
    let task = tokio::spawn(reflector.collect::<Vec<_>>());
    let (a_tx, a) = channel();
    let (b_tx, b) = channel();
    assert!(set.add("a", a));
    assert!(set.add("b", b));
    for event in [
        Event::Init,
        Event::InitApply(cm(0, 1, 0)),
        Event::InitApply(cm(1, 2, 1)),
        Event::InitDone,
    ] {
        a_tx.send(Ok(event)).unwrap();
    }
    set.wait_synced("a").await.unwrap();
    assert!(!store.is_synced(), "b has not synced");
    assert_eq!(store.len(), 2);
    for event in [Event::Init, Event::InitApply(cm(1, 2, 1)), Event::InitDone] {
        b_tx.send(Ok(event)).unwrap();
    }
    store.wait_synced().await.unwrap();
    assert!(set.is_synced("a") && set.is_synced("b"));
    let mut names = set.names();
    names.sort();
    assert_eq!(
        names,
        [std::sync::Arc::from("a"), std::sync::Arc::from("b")]
    );

    // A live change from one source, then `a` goes: only what `a` alone held leaves.
    b_tx.send(Ok(Event::Apply(cm(2, 3, 2)))).unwrap();
    let changes = store.subscribe();
    assert!(set.remove("a"));
    assert!(!set.remove("a"), "gone already");
    let mut changes = std::pin::pin!(changes.skip_while(|event| {
        let snapshot = !matches!(event, Event::Delete(_));
        async move { snapshot }
    }));
    let deleted = changes.next().await.unwrap();
    assert!(matches!(&deleted, Event::Delete(cm) if key_of(cm) == 0));
    let mut left: Vec<usize> = store.state().iter().map(|cm| key_of(cm)).collect();
    left.sort_unstable();
    assert_eq!(left, [1, 2]);

    // The reflector ends once the handles are gone and the last source has ended.
    drop((set, a_tx, b_tx));
    let items = task.await.unwrap();
    assert_eq!(items.len(), 8, "every item of both sources, each named");
    assert!(
        items
            .iter()
            .all(|(name, item)| item.is_ok() && ["a", "b"].contains(&&**name))
    );
}

#[test]
fn the_version_is_the_lowest_point_the_sources_have_reached() {
    let mut sources = Sources::new(Writer::<ConfigMap>::new());
    let store = sources.store();
    sources.add("a");
    sources.add("b");
    for (name, rv) in [("a", 6), ("b", 5)] {
        sources.apply(name, Event::Init);
        sources.apply(name, Event::InitApply(cm(usize::from(name == "b"), rv, 0)));
        sources.apply(name, Event::InitDone);
    }
    let version = |store: &Store<ConfigMap>| store.resource_version().unwrap().unwrap().as_u64();
    assert_eq!(version(&store), Some(5));
    // A write at 8 seen by `a` is not yet a version every read reflects: `b` is at 5.
    let written = cm(0, 8, 1);
    sources.apply("a", Event::Apply(written.clone()));
    assert_eq!(version(&store), Some(5));
    let v8 = ResourceVersion::parse("8").unwrap();
    assert!(store.wait_for_version(&v8).now_or_never().is_none());
    // But the store shows the written object itself, and never puts back an older copy: a
    // wait on it is met without waiting for `b`'s next bookmark.
    assert!(matches!(
        store.wait_for(&written).now_or_never(),
        Some(Ok(()))
    ));
    // A write at 7 that no source has delivered yet is not.
    let unseen = cm(1, 7, 1);
    let mut unseen_wait = std::pin::pin!(store.wait_for(&unseen));
    assert!(unseen_wait.as_mut().now_or_never().is_none());
    // `b`'s bookmark passes both: every source is at 8 or later.
    sources.apply_progress("b", "9");
    assert_eq!(version(&store), Some(8));
    assert!(store.wait_for_version(&v8).now_or_never().is_some());
    assert!(matches!(unseen_wait.now_or_never(), Some(Ok(()))));
    // Without `b`, the version is `a`'s alone.
    sources.remove("b");
    assert_eq!(version(&store), Some(8));
    sources.apply_progress("a", "12");
    assert_eq!(version(&store), Some(12));
}

#[test]
fn a_lagging_source_never_puts_back_an_older_copy_of_a_dropped_object() {
    let (mut sources, store) = synced_sources(&["a", "b"]);
    // `b` selects the object at 5 but lags; `a` delivers the write at 9, then its delete at 10.
    let written = cm(0, 9, 0);
    sources.apply("a", Event::Apply(written.clone()));
    assert!(matches!(
        store.wait_for(&written).now_or_never(),
        Some(Ok(()))
    ));
    let mut gone = std::pin::pin!(store.wait_for_deletion(&written));
    assert!(gone.as_mut().now_or_never().is_none(), "held at 9");
    sources.apply("a", Event::Delete(cm(0, 10, 0)));
    assert!(matches!(gone.as_mut().now_or_never(), Some(Ok(()))));
    // `b` catches up with the old copy: the store does not go back.
    sources.apply("b", Event::Apply(cm(0, 5, 1)));
    assert!(
        store.is_empty(),
        "an older copy of a dropped object came back"
    );
    // Once every source has passed the delete, a newer copy is an ordinary change.
    sources.apply_progress("a", "11");
    sources.apply_progress("b", "11");
    sources.apply("b", Event::Apply(cm(0, 12, 1)));
    assert_eq!(store.len(), 1);
}

/// A store fed by sources named `names`, each synced empty.
pub(super) fn synced_sources(names: &[&str]) -> (Sources<ConfigMap>, Store<ConfigMap>) {
    let mut sources = Sources::new(Writer::<ConfigMap>::new());
    let store = sources.store();
    for name in names {
        sources.add(name);
        sources.apply(name, Event::Init);
        sources.apply(name, Event::InitDone);
    }
    (sources, store)
}
