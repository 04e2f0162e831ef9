//! A shared, always-consistent in-memory cache of Kubernetes objects, with change streams.
//!
//! A [`Writer`] applies the [`Event`]s of a list/watch stream (usually
//! `kache_watch::watcher`, through [`reflect`](ReflectExt::reflect)); any number of cheap
//! [`Store`] clones read the result, and any number of [`Subscriber`]s follow its changes.
//!
//! ```
//! use futures::{StreamExt, stream};
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kache_store::{Event, ReflectExt, Writer};
//! use kube_client::api::ObjectMeta;
//!
//! fn config_map(name: &str, app: &str) -> ConfigMap {
//!     let mut cm = ConfigMap::default();
//!     cm.metadata = ObjectMeta {
//!         name: Some(name.into()),
//!         namespace: Some("default".into()),
//!         labels: Some([("app".to_owned(), app.to_owned())].into()),
//!         ..ObjectMeta::default()
//!     };
//!     cm
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kache_store::Error> {
//! // An index on the `app` label, and a transform that drops what the cache does not need.
//! let writer = Writer::<ConfigMap>::new()
//!     .with_index("app", |cm: &ConfigMap| {
//!         let labels = cm.metadata.labels.iter().flatten();
//!         labels.filter(|(k, _)| *k == "app").map(|(_, v)| v.clone()).collect()
//!     })
//!     .with_transform(|cm| cm.metadata.managed_fields = None);
//! let store = writer.as_reader();
//! let changes = store.subscribe();
//!
//! // Events by hand; in an operator they come from `kache_watch::watcher`.
//! let events = stream::iter([
//!     Event::Init,
//!     Event::InitApply(config_map("a", "web")),
//!     Event::InitApply(config_map("b", "db")),
//!     Event::InitDone,
//!     Event::Delete(config_map("b", "db")),
//! ])
//! .map(Ok::<_, std::convert::Infallible>);
//! let applied: Vec<_> = events.reflect(writer).collect().await;
//! assert_eq!(applied.len(), 5);
//!
//! store.wait_synced().await?;
//! assert!(store.get(Some("default"), "a").is_some());
//! assert_eq!(store.by_index("app", "web")?.len(), 1);
//! assert_eq!(store.by_namespace("default").len(), 1);
//!
//! // The subscriber is first polled now: it gets a snapshot of the current state, then
//! // ends, because the writer (moved into the finished stream) is gone.
//! let seen: Vec<_> = changes.map(|event| event.map(|cm| cm.metadata.name.clone())).collect().await;
//! assert_eq!(seen, [Event::Init, Event::InitApply(Some("a".to_owned())), Event::InitDone]);
//! # Ok(())
//! # }
//! ```
//!
//! The [`consistency`] module explains the rules below with the situations an operator
//! meets; [`architecture`] follows one event through the crates and lays out this crate's
//! modules.
//!
//! # Many sources
//!
//! [`Sources`] feeds one store from several event streams (one per namespace, selector or
//! shard), each with its own initial sync; sources come and go at runtime
//! ([`SourceSet`]). A relist of one source replaces only that source's objects, an object is
//! stored once whichever sources hold it, and removing a source deletes exactly what no other
//! source holds. Its documentation gives the rules.
//!
//! # Health and metrics
//!
//! [`Store::health`] says whether the cache has synced and, when its watch keeps failing,
//! why: the last error and its class, since when, how many attempts in a row. A watch that
//! the API server refuses (`403`, `404`) logs one warning per streak rather than one line
//! per retry, and [`Store::wait_synced_or_fail`] lets start-up fail fast on it. With the
//! `metrics` feature, `Metrics` reports every cache on a `prometheus-client` registry
//! (events, relists by cause, errors by class, objects, ages, subscribers' lag); without it,
//! none of that code is compiled. The metrics are listed in `docs/observability.md`.
//!
//! # Warm restart
//!
//! A store can be saved to a local file ([`SnapshotFile::save`], on demand,
//! [`SnapshotFile::save_every`], or [`Writer::save_on_drop`]) and a new process can start
//! from it ([`Writer::restore`]): the snapshot becomes the first generation and the watcher
//! resumes with a WATCH from its version ([`Restored::resume`]), so a restart costs the
//! changes made while the process was down rather than a LIST of every object. A snapshot
//! that does not match (another watch or schema tag) or is damaged is one warning and a cold
//! start. A snapshot holds the objects as stored: a snapshot of Secrets puts Secrets on disk.
//! See the `snapshot` notes on [`SnapshotFile`] and `docs/warm-restart.md`.
//!
//! # Consistency
//!
//! **Readers.** Every [`Store`] read (`get`, `state`, `find`, `len`, `by_namespace`,
//! `by_index`) runs under a shared lock and sees one *generation* of the store: the state
//! after some prefix of the events applied so far. A relist (`Init`, `InitApply`*,
//! `InitDone`) is built off to the side, objects and indexes together, and made visible by
//! one pointer swap at `InitDone`, so a read sees the whole previous list or the whole new
//! one, never a mix; objects absent from the new list disappear at that instant. `Apply`
//! and `Delete` are visible as soon as [`Writer::apply`] returns; during a relist they also
//! apply to the generation being built, so its `InitDone` keeps them (see
//! [`Writer::apply`]). Two separate reads may see different generations. The old generation
//! is freed after the swap, outside the lock, so readers wait only for the swap itself (and
//! for single-key
//! updates). Long reads (`state`, `find`) hold the shared lock while they copy `Arc`s, and
//! the writer waits for them.
//!
//! **User code and the lock.** No user code runs while the store's lock is held, so none can
//! deadlock on it: a [`Store::find`] predicate runs on a snapshot of one generation after the
//! lock is released, and the transform and index functions run in the writer before it takes
//! the lock; each may read the store. (The lock is fair: a read made under it would queue
//! behind a waiting writer, which waits for that very read.) What still runs under a shared
//! lock is `K`'s [`Resource::meta`](kube_client::Resource::meta), to compare an object's uid
//! or resourceVersion: an implementation that read a store could deadlock, and the derived
//! ones never do.
//!
//! **Panics in user code** never corrupt the store or lose an event silently. A transform or
//! index function that panics leaves the event (or the index being added) unapplied, every
//! object and index exactly as before, and the panic propagates to whoever applied the event;
//! through [`reflect`](ReflectExt::reflect) it fails the task polling the stream, and the
//! dropped writer ends the subscribers and fails pending waits. See [`Writer`]'s User code
//! section. A panicking `find` predicate holds no lock and changes nothing.
//!
//! **Staleness.** The store is as current as the events applied to it: it lags the API
//! server by the watch latency, and may miss deletes while the watch is down until the next
//! relist repairs it. Act on it as a cache; re-check with the API server when it matters.
//!
//! **Reading your own writes.** The store knows how far it has reached: [`Store::resource_version`]
//! is the newest resourceVersion such that every read sees every change up to it. It
//! advances, under the same lock as the change, with each `Apply` and `Delete` and each
//! completed relist, and with each bookmark the watcher reports to
//! [`reflect`](ReflectExt::reflect) (bookmarks are not events: `kache_watch::plumbing::Progress` says
//! how they travel, and why). It never goes back (save once: the first list after a
//! [`Writer::restore`] replaces the snapshot's version), and it stands still while a relist is
//! being built, since readers still see the previous generation. After a create, update or
//! patch returns an object, [`Store::wait_for`] resolves once every later read sees that
//! object at its version or a newer one: as soon as the store holds that object at that
//! version or newer (it never puts back an older copy), or once [`Store::resource_version`] passes it,
//! so a quiet source of a store fed by several does not hold it back.
//! [`Store::wait_for_version`] takes a bare version and waits for the store-wide version,
//! [`Store::wait_for_all`] several writes, [`Store::wait_for_deletion`] a delete. A
//! [`SubscriberHandle`] has the same waits for what its subscriber has *yielded* to its
//! consumer. Versions compare as Kubernetes defines since 1.35 (KEP-5504, see
//! [`ResourceVersion`]); one that is not a decimal integer is [`Error::NotComparable`],
//! never a guess. Every wait resolves at once when already met, fails with
//! [`Error::WriterDropped`] when it can no longer be met, is cancel safe, and is bounded by
//! the caller (`tokio::time::timeout`).
//!
//! What a wait cannot promise: it is as fast as the watch. A write the watch does not show
//! (an object outside the store's label or field selector, or namespace) is passed only by a
//! bookmark, which current servers send about once a minute and a 1.20 server only shortly
//! before each watch times out ([`Config::timeout`](kache_watch::Config::timeout)); a server
//! without a watch cache sends none. Waiting on such a write takes that long. While the watch
//! is down, waits wait: bound them. And a wait orders your write only against what came
//! before it: other clients may have changed the object since.
//!
//! **Readiness** ([`Store::is_synced`], [`Store::wait_synced`]) turns on at the first
//! `InitDone` and never turns off: during a later relist readers keep the previous
//! generation. When `is_synced` returns `true`, the generation that made it so is
//! visible. A store restored from a snapshot is ready at once: it serves a real past state of
//! the server, consistent at the snapshot's version and stale by the downtime until the
//! resumed watch has replayed the changes made since; [`Health::replaying`] says so until the
//! server confirms a point (a bookmark, or a list).
//!
//! **Subscribers** ([`Store::subscribe`]) speak the same [`Event`] protocol. A subscriber
//! first receives a snapshot of one generation (`Init`, `InitApply` per object, `InitDone`),
//! taken when it is first polled once the store is ready (a subscriber that joins earlier
//! receives nothing until the first sync). Then it receives every later change in the order
//! the store made it: `Apply` for an added or changed object, `Delete` for a removed one, and
//! for a relist exactly the difference between the two generations (unchanged objects, same
//! uid and resourceVersion, produce nothing). It never receives a relist's raw
//! `Init`/`InitApply`. Applying the events it has received to a map gives a generation the
//! store has had, and the current one once it has drained its stream. Its objects are the
//! store's own `Arc`s.
//!
//! **Slow subscribers.** Changes wait for a subscriber in a bounded buffer
//! ([`Writer::with_buffer`]). With [`Delivery::Resync`] (the default), a subscriber that falls
//! a full buffer behind skips ahead: on its next poll it receives a fresh snapshot of the
//! current generation, then live changes again ([`Subscriber::resyncs`] counts this). It loses
//! no state, the writer never waits, and memory stays bounded. With
//! [`Delivery::Backpressure`], the writer waits for it instead and every change is delivered
//! in order, but only on the asynchronous paths ([`reflect`](ReflectExt::reflect),
//! [`Writer::apply_async`]): the synchronous [`Writer::apply`] cannot wait, so it resyncs a
//! full backpressure subscriber. [`SubscriberHandle::wait_synced`] tells when a subscriber has
//! consumed its first snapshot.
//!
//! **End.** When the [`Writer`] is dropped, each subscriber receives what was already
//! buffered for it and then ends; a pending [`Store::wait_synced`], and any wait for a
//! write the store has not reached, fails with [`Error::WriterDropped`]; stores keep serving
//! the last generation.
//!
//! # Vocabulary
//!
//! One word for one idea, in every type of this crate:
//!
//! | word | means | where |
//! |---|---|---|
//! | **synced** | has completed a first list: holds a whole state of the server | [`Store::is_synced`], [`Subscriber::is_synced`] (has yielded its first snapshot), [`Sources::is_synced`] and [`SourceSet::is_synced`] (one source), [`Health::synced`] |
//! | `wait_synced` | waits until synced | [`Store::wait_synced`] (and [`Store::wait_synced_or_fail`], which also fails once the watch is refused or stopped), [`SubscriberHandle::wait_synced`], [`SourceSet::wait_synced`] |
//! | **ready** | what a readiness probe answers: synced, and the watch neither refused nor stopped | [`Health::is_ready`] only |
//! | **resource version** | how far a store has reached, as a [`ResourceVersion`] | [`Store::resource_version`]; the waits [`Store::wait_for_version`] and friends |
//! | `with_name` | names a cache or a subscriber in logs, health and metrics | [`Writer::with_name`], `Subscriber::with_name` |
//! | `with_metrics` | reports a cache on a `Metrics` collector, under a name | `Writer::with_metrics` |
//! | `add` / `remove` | change a set; `false` when there was nothing to change | [`Sources::add`], [`SourceSet::add`], and their `remove` |
//! | `restore` | `Ok(None)` when there is no snapshot yet (a first start), an error when one is refused | [`Writer::restore`] |
//!
//! (`Subscriber::with_name`, `Writer::with_metrics` and `Metrics` come with the `metrics`
//! feature.)

// The modules form layers without an import cycle (tests/tests/module_cycles.rs checks it):
// see the `architecture` module.
#[cfg(feature = "metrics")]
mod counters;
mod error;
mod fanout;
mod health;
mod identity;
mod index;
mod key;
#[cfg(feature = "metrics")]
mod metrics;
mod observer;
mod origin;
mod reflect;
mod shared;
mod snapshot;
mod sources;
mod state;
mod store;
mod subscriber;
mod version;
mod wait;
mod writer;

pub use error::{Error, IoError, Rejected, Result};
pub use health::{Failing, Health};
pub use identity::WatchIdentity;
pub use kache_watch::Event;
pub use key::ObjectKey;
#[cfg(feature = "metrics")]
pub use metrics::Metrics;
pub use reflect::{Reflect, ReflectExt, reflector};
pub use snapshot::{Restored, SNAPSHOT_FORMAT_VERSION, Saved, SnapshotFile};
pub use sources::{SourceSet, Sources, SourcesReflector};
pub use store::Store;
pub use subscriber::{DEFAULT_BUFFER, Delivery, Subscriber, SubscriberHandle};
pub use version::ResourceVersion;
pub use writer::{Writer, store};

#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing;

// Design notes, rendered by rustdoc (their code is compiled and run as doctests).

#[doc = include_str!("docs/architecture.md")]
pub mod architecture {}

#[doc = include_str!("docs/consistency.md")]
pub mod consistency {}

#[cfg(test)]
mod tests;
