//! The model of the store, the one executable spec of what applying events does: plain
//! `BTreeMap`s, as the store is documented. Used here by a property test (random event
//! sequences applied to the store and to the model must leave the same visible state, lengths,
//! index lookups and reached version) and by `subscriber.rs` and `reflect_model.rs`.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Event, ResourceVersion, Store, Writer};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_client::api::ObjectMeta;
use proptest::prelude::*;

const NAMESPACES: [Option<&str>; 3] = [None, Some("a"), Some("b")];
const NAMES: [&str; 4] = ["n0", "n1", "n2", "n3"];
const LABELS: [&str; 3] = ["x", "y", "z"];

pub(super) type Key = (Option<String>, String);

/// What the model remembers of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Obj {
    pub(super) key: Key,
    pub(super) rv: u64,
    pub(super) label: String,
}

impl Obj {
    pub(super) fn to_cm(&self) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: self.key.0.clone(),
                name: Some(self.key.1.clone()),
                uid: Some(format!("{:?}", self.key)),
                resource_version: Some(self.rv.to_string()),
                labels: Some(BTreeMap::from([("tier".to_owned(), self.label.clone())])),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    pub(super) fn from_cm(cm: &ConfigMap) -> Self {
        Self {
            key: (
                cm.metadata.namespace.clone(),
                cm.metadata.name.clone().unwrap(),
            ),
            rv: cm
                .metadata
                .resource_version
                .as_ref()
                .unwrap()
                .parse()
                .unwrap(),
            label: cm.metadata.labels.as_ref().unwrap()["tier"].clone(),
        }
    }
}

pub(super) fn tier(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| *k == "tier")
        .map(|(_, v)| v.clone())
        .collect()
}

#[derive(Clone, Debug)]
pub(super) enum Op {
    Apply(usize, usize, usize),
    Delete(usize, usize),
    Init,
    /// `unchanged`: resend the visible object as-is (same uid and resourceVersion).
    InitApply(usize, usize, usize, bool),
    InitDone,
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let ns = 0..NAMESPACES.len();
    let name = 0..NAMES.len();
    let label = 0..LABELS.len();
    prop_oneof![
        4 => (ns.clone(), name.clone(), label.clone()).prop_map(|(n, m, l)| Op::Apply(n, m, l)),
        2 => (ns.clone(), name.clone()).prop_map(|(n, m)| Op::Delete(n, m)),
        1 => Just(Op::Init),
        4 => (ns, name, label, any::<bool>()).prop_map(|(n, m, l, u)| Op::InitApply(n, m, l, u)),
        1 => Just(Op::InitDone),
    ]
}

#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) visible: BTreeMap<Key, Obj>,
    relist: Option<BTreeMap<Key, Obj>>,
    pub(super) ready: bool,
    rv: u64,
    /// The newest version the visible state reflects (0: none): only events applied while
    /// no relist is being built move it, and a relist moves it when it becomes visible.
    reached: u64,
    /// Where the relist being built will have reached.
    relist_reached: u64,
}

impl Model {
    /// Turns an op into the event to send, updating the model.
    pub(super) fn step(&mut self, op: &Op) -> Event<ConfigMap> {
        self.rv += 1;
        let make = |n: usize, m: usize, l: usize, rv: u64| Obj {
            key: (NAMESPACES[n].map(str::to_owned), NAMES[m].to_owned()),
            rv,
            label: LABELS[l].to_owned(),
        };
        match *op {
            Op::Apply(n, m, l) => {
                let obj = make(n, m, l, self.rv);
                self.visible.insert(obj.key.clone(), obj.clone());
                self.reach(obj.rv);
                // An apply also goes into the generation being built, so `InitDone` keeps it.
                if let Some(relist) = &mut self.relist {
                    relist.insert(obj.key.clone(), obj.clone());
                }
                Event::Apply(obj.to_cm())
            }
            Op::Delete(n, m) => {
                let obj = make(n, m, 0, self.rv);
                self.visible.remove(&obj.key);
                self.reach(obj.rv);
                // A delete also leaves the generation being built (a streaming list may
                // report one during its initial events).
                if let Some(relist) = &mut self.relist {
                    relist.remove(&obj.key);
                }
                Event::Delete(obj.to_cm())
            }
            Op::Init => {
                self.relist = Some(BTreeMap::new());
                self.relist_reached = 0;
                Event::Init
            }
            Op::InitApply(n, m, l, unchanged) => {
                let mut obj = make(n, m, l, self.rv);
                if unchanged && let Some(current) = self.visible.get(&obj.key) {
                    obj = current.clone();
                }
                if self.relist.is_none() {
                    self.relist_reached = 0;
                }
                self.relist
                    .get_or_insert_default()
                    .insert(obj.key.clone(), obj.clone());
                self.reach(obj.rv);
                Event::InitApply(obj.to_cm())
            }
            Op::InitDone => {
                if let Some(relist) = self.relist.take() {
                    self.visible = relist;
                    self.reached = self.reached.max(self.relist_reached);
                }
                self.ready = true;
                Event::InitDone
            }
        }
    }

    /// An event at `rv` was applied: it counts for the relist being built, if any.
    fn reach(&mut self, rv: u64) {
        let reached = if self.relist.is_some() {
            &mut self.relist_reached
        } else {
            &mut self.reached
        };
        *reached = (*reached).max(rv);
    }

    /// `namespace/name` → resourceVersion of the visible objects, as
    /// [`stored_versions`](crate::testing::stored_versions) reads a store.
    pub(super) fn versions(&self) -> BTreeMap<String, String> {
        self.visible
            .values()
            .map(|obj| (crate::testing::key_of(&obj.to_cm()), obj.rv.to_string()))
            .collect()
    }

    fn get(&self, ns: Option<&str>, name: &str) -> Option<&Obj> {
        self.visible
            .get(&(ns.map(str::to_owned), name.to_owned()))
            .or_else(|| {
                ns?;
                self.visible.get(&(None, name.to_owned()))
            })
    }
}

fn set(objs: &[std::sync::Arc<ConfigMap>]) -> BTreeSet<Obj> {
    objs.iter().map(|cm| Obj::from_cm(cm)).collect()
}

fn check(store: &Store<ConfigMap>, model: &Model) -> Result<(), TestCaseError> {
    check_asking(store, model, true)
}

/// [`check`], asking by namespace only if `by_namespace` (the first ask builds the index).
fn check_asking(
    store: &Store<ConfigMap>,
    model: &Model,
    by_namespace: bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.stale_index_entries(), 0, "stale index entries");
    let expected: BTreeSet<Obj> = model.visible.values().cloned().collect();
    prop_assert_eq!(set(&store.state()), expected.clone());
    prop_assert_eq!(store.len(), model.visible.len());
    prop_assert_eq!(store.is_empty(), model.visible.is_empty());
    prop_assert_eq!(store.is_synced(), model.ready);
    let reached = (model.reached > 0).then(|| ResourceVersion::parse(&model.reached.to_string()));
    prop_assert_eq!(store.resource_version(), reached.transpose());
    for ns in NAMESPACES.iter().flatten().filter(|_| by_namespace) {
        let want: BTreeSet<Obj> = expected
            .iter()
            .filter(|o| o.key.0.as_deref() == Some(*ns))
            .cloned()
            .collect();
        prop_assert_eq!(set(&store.by_namespace(ns)), want, "namespace {}", ns);
    }
    for label in LABELS {
        let want: BTreeSet<Obj> = expected
            .iter()
            .filter(|o| o.label == label)
            .cloned()
            .collect();
        prop_assert_eq!(
            set(&store.by_index("tier", label).unwrap()),
            want,
            "tier {}",
            label
        );
    }
    for ns in NAMESPACES {
        for name in NAMES {
            let got = store.get(ns, name).map(|cm| Obj::from_cm(&cm));
            prop_assert_eq!(got.as_ref(), model.get(ns, name), "get {:?}/{}", ns, name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn store_matches_model_after_every_event(ops in proptest::collection::vec(op(), 0..80)) {
        let mut writer = Writer::<ConfigMap>::new().with_index("tier", tier);
        let store = writer.as_reader();
        let mut model = Model::default();
        for op in &ops {
            let event = model.step(op);
            writer.apply(event);
            check(&store, &model)?;
        }
    }

    /// The namespace index is built by the first ask, at a random step: before it, relists and
    /// changes go by with no index; after it, the writer keeps it and rebuilds it per relist.
    #[test]
    fn the_namespace_index_matches_the_model_whenever_first_asked(
        ops in proptest::collection::vec((op(), proptest::bool::weighted(0.1)), 0..80),
    ) {
        let mut writer = Writer::<ConfigMap>::new().with_index("tier", tier);
        let store = writer.as_reader();
        let mut model = Model::default();
        for (op, ask) in &ops {
            let event = model.step(op);
            writer.apply(event);
            check_asking(&store, &model, *ask)?;
            writer.assert_indexes_exact();
        }
        check(&store, &model)?;
        writer.assert_indexes_exact();
    }
}
