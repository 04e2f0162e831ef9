//! Kubernetes caches for operators: one watch per resource, a shared store that is always
//! consistent, and change streams for every reader. This crate gathers kache's two crates
//! under one name, as `kube` does for kube-rs:
//!
//! - [`watch`] ([`kache_watch`]): list/watch event streams of Kubernetes objects, with the
//!   initial list strategies, shards and (feature `protobuf`) the protobuf wire mode;
//! - [`store`] ([`kache_store`]): the store that a stream feeds, with its indexes,
//!   subscribers, waits for your own writes, health, warm restart and (feature `metrics`)
//!   Prometheus metrics.
//!
//! The names an operator reaches for first are also at the top level.
//!
//! ```no_run
//! use futures::StreamExt;
//! use k8s_openapi::api::core::v1::Pod;
//! use kache::{Config, ReflectExt, WatchStreamExt, Writer, watcher};
//! use kube_client::{Api, Client};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pods: Api<Pod> = Api::all(Client::try_default().await?);
//! let writer = Writer::<Pod>::new().with_name("pods");
//! let store = writer.as_reader();
//! // One watch feeds the store; every clone of `store` reads it, every subscriber follows it.
//! tokio::spawn(
//!     watcher(pods, Config::default())
//!         .default_backoff()
//!         .reflect(writer)
//!         .for_each(|_| async {}),
//! );
//! store.wait_synced_or_fail().await?;
//! println!("{} pods", store.len());
//! # Ok(())
//! # }
//! ```
//!
//! Without a cluster, a store is fed by hand:
//!
//! ```
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kache::{Event, Writer};
//!
//! let mut writer = Writer::<ConfigMap>::new();
//! let store = writer.as_reader();
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! cm.metadata.namespace = Some("default".into());
//! writer.apply(Event::Init);
//! writer.apply(Event::InitApply(cm));
//! writer.apply(Event::InitDone);
//! assert!(store.is_synced());
//! assert!(store.get(Some("default"), "settings").is_some());
//! ```
//!
//! # Features
//!
//! - `metrics`: `Metrics`, a `prometheus-client` collector of every cache's figures
//!   ([`store`]'s `metrics` feature).
//! - `protobuf`: `protobuf_watcher`, which reads the API in protobuf instead of JSON
//!   ([`watch`]'s `protobuf` feature).
//! - `controller`: `kache::controller`, reconcile loops on the stores with a fair, bounded
//!   queue and read-your-writes fences (the kache-controller crate).
//!
//! Both crates' errors keep their own names: [`watch::Error`] and [`store::Error`].

#[cfg(feature = "controller")]
pub use kache_controller as controller;
pub use kache_store as store;
pub use kache_watch as watch;

#[cfg(feature = "metrics")]
pub use kache_store::Metrics;
pub use kache_store::{
    Event, Health, ObjectKey, ReflectExt, ResourceVersion, SnapshotFile, SourceSet, Sources, Store,
    Subscriber, SubscriberHandle, WatchIdentity, Writer,
};
#[cfg(feature = "protobuf")]
pub use kache_watch::protobuf_watcher;
pub use kache_watch::{Config, WatchStreamExt, metadata_watcher, watcher};
