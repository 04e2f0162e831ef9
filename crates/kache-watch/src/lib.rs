//! A Kubernetes list/watch event stream.
//!
//! [`watcher`] lists and then watches a kind of object and yields [`Event`]s that describe the
//! full set of matching objects over time: an initial sync (`Init`, `InitApply`*, `InitDone`),
//! then live `Apply` and `Delete`. It resumes dropped watches from the last seen
//! resourceVersion, relists on `410 Gone`, reports every error as a stream item and keeps
//! going. It is the event source of `kache-store`, and works alone for code that only needs
//! to react to changes.
//!
//! ```
//! use futures::{StreamExt, executor::block_on, stream};
//! use kache_watch::{Event, WatchStreamExt};
//!
//! // Any stream of events works with the adapters; a real one comes from `watcher(api, config)`.
//! let events = stream::iter([
//!     Ok::<_, kache_watch::Error>(Event::Init),
//!     Ok(Event::InitApply("a")),
//!     Ok(Event::InitDone),
//!     Ok(Event::Apply("b")),
//!     Ok(Event::Delete("a")),
//! ]);
//! let touched: Vec<_> = block_on(events.touched_objects().map(Result::unwrap).collect());
//! assert_eq!(touched, ["a", "b", "a"]);
//! ```
//!
//! # Initial list strategies
//! [`InitialListStrategy::Auto`] (the default) asks for a streaming list (Kubernetes 1.27+) and,
//! if the server refuses it, uses paged LIST + WATCH from then on. Either way the stream speaks
//! the same protocol.
//!
//! # managedFields
//! The watcher leaves each object's `metadata.managedFields` out by default: it skips the
//! field while decoding, so a cache of small objects holds less than half the memory (the
//! server keeps the record; server-side apply needs nothing from the cache). A controller that
//! reads `managedFields` from watched objects opts out with [`Config::keep_managed_fields()`].
//!
//! # Shards
//! [`Config::shard`] watches one part of a collection: the objects whose [`uid_hash`] falls in
//! a [`Shard`]'s ranges (KEP-5866). A Kubernetes 1.36+ server with the `ShardedListAndWatch`
//! gate sends only those; any other server sends everything and the watcher drops the rest
//! with the same hash, so the stream is the same either way (only the bandwidth differs).
//!
//! # Starting from a version
//! A consumer that already holds every object as of a version (kache-store's warm restart, a
//! store restored from a snapshot) skips the initial list with
//! [`Config::resume_from`](Config#structfield.resume_from): the stream opens with the changes
//! made since, and falls back to the initial list if the server answers `410 Gone`.
//!
//! # Protobuf on the wire
//! With the `protobuf` feature, [`protobuf_watcher`] lists and watches a built-in type in
//! Kubernetes' protobuf encoding instead of JSON (fewer bytes, and faster to encode on the
//! server and to decode here), for the same [`Config`], strategies and errors. Its objects are
//! [`Proto<T>`](Proto): a k8s-pb message with its metadata as k8s-openapi's `ObjectMeta`, a
//! `kube_client::Resource` that kache-store holds like any other. Custom resources have no
//! protobuf encoding: they stay on [`watcher`] and JSON.
//!
//! # Progress without events
//! Bookmarks and the resourceVersion of a completed list advance how far a watch has reached
//! without any object changing. They are not [`Event`]s: the watcher reports them to the
//! consumer that polls it, beside its items, and kache-store's reflectors ask for them (so a
//! store's resource version moves with bookmarks). In the same way the reflectors learn which
//! WATCH requests started or resumed and how many bookmarks arrived, for metrics. This is
//! plumbing between the two crates, hidden from these docs.
//!
//! # Errors
//! Every [`Error`] is yielded as an item and the stream continues: a LIST failure restarts the
//! list (with a new `Init`), a WATCH failure resumes from the last resourceVersion, a `410 Gone`
//! relists. The request that follows an error waits first, with an exponential backoff
//! ([`Config::retry_backoff`], on by default, as client-go's reflector; kube-runtime's watcher
//! retries at once unless given a backoff), so a persistent error is retried at a gentle pace
//! whoever polls the stream. [`WatchStreamExt::backoff`] chooses other delays: the adapter's
//! wait then replaces the watcher's own. Before each request the stream returns to the
//! runtime, so a task driving it can be aborted whatever the server does.
//! [`Error::class`] sorts errors for metrics and health checks ([`ErrorClass`]): `403` and
//! `404` do not heal by retrying.

mod activity;
mod backoff;
mod class;
mod config;
mod decode;
mod error;
mod event;
mod ext;
mod progress;
mod retry;
mod server;
mod shard;
mod watcher;

pub use backoff::{Backoff, StreamBackoff};
pub use class::ErrorClass;
pub use config::{Config, InitialListStrategy};
#[cfg(feature = "protobuf")]
pub use error::ProtoError;
pub use error::{Error, Result};
pub use event::Event;
pub use ext::WatchStreamExt;
pub use server::{ServerPoint, cluster_uid, server_point};
pub use shard::{Shard, ShardRange, uid_hash};
#[cfg(feature = "protobuf")]
pub use watcher::{Proto, ProtoObject, ProtoScope, protobuf_watcher};
pub use watcher::{metadata_watcher, server_shards, watch_object, watcher};

/// How a watcher reports to the cache it feeds, beside its items: the progress points it
/// reaches (bookmarks, the ends of lists) and the requests it makes. kache-store reads them
/// around each poll of a watcher's stream; they are not for applications and may change in
/// any release.
#[doc(hidden)]
pub mod plumbing {
    pub use crate::activity::{Activity, observe_activity};
    pub use crate::progress::{Progress, ProgressScope, StreamId, observe_progress};
}

/// Re-exported so users can name `PartialObjectMeta` without a direct kube dependency.
pub use kube_client::core::PartialObjectMeta;
