//! Reconcile loops on kache stores: a [`Controller`] subscribes to a [`kache_store::Store`]
//! (and to the stores of the objects it owns or watches) and reconciles each object that
//! changes. It makes no watch and keeps no copy of its own: the stores it reads are the ones
//! the rest of the operator reads, shared with any number of readers and controllers.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use futures::StreamExt;
//! use k8s_openapi::api::apps::v1::Deployment;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kache_controller::{Action, Config, Controller, Retry};
//! use kache_store::{ReflectExt, Writer};
//! use kache_watch::{WatchStreamExt, watcher};
//! use kube_client::{Api, Client};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("{0}")]
//! struct Failed(String);
//!
//! async fn reconcile(deployment: Arc<Deployment>, _ctx: Arc<()>) -> Result<Action, Failed> {
//!     // Read from the stores; write through kache_controller::Recorded (or record()).
//!     Ok(Action::requeue(Duration::from_secs(300)))
//! }
//!
//! fn error_policy(_: Arc<Deployment>, _: &Failed, _: Arc<()>, retry: Retry) -> Action {
//!     Action::requeue(retry.backoff) // grows per object, resets on success
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::try_default().await?;
//! let deployments = Writer::<Deployment>::new();
//! let configmaps = Writer::<ConfigMap>::new();
//! let (d, c) = (deployments.as_reader(), configmaps.as_reader());
//! let api = Api::<Deployment>::all(client.clone());
//! tokio::spawn(watcher(api, Default::default()).default_backoff().reflect(deployments).for_each(|_| async {}));
//! let api = Api::<ConfigMap>::all(client);
//! tokio::spawn(watcher(api, Default::default()).default_backoff().reflect(configmaps).for_each(|_| async {}));
//!
//! Controller::new(d, Config::default().name("deployments"))
//!     .owns(c)
//!     .run(reconcile, error_policy, Arc::new(()))
//!     .for_each(|result| async move {
//!         if let Err(err) = result {
//!             tracing::warn!(%err);
//!         }
//!     })
//!     .await;
//! # Ok(())
//! # }
//! ```
//!
//! # The queue
//!
//! - **Dedup, one at a time.** An object is queued at most once, and never reconciled twice
//!   at once. A change that arrives while its object is being reconciled makes it run once
//!   more, right after.
//! - **Bounded.** At most [`Config::concurrency`] reconciles run at once (8 by default).
//! - **Priorities with aging.** Live changes go before background work (the initial sync,
//!   resyncs, `reconcile_all_on`, requeues, retries), earliest deadline first: a live change's
//!   deadline is when it became ready, background work's that plus [`Config::aging`] (10 s).
//!   So live changes pass background work, but no background item waits past its deadline
//!   for live changes that arrived after it, however many arrive.
//! - **Backoff.** The error policy learns the attempt and the object's backoff
//!   ([`Retry`]: 5 ms doubling to 1,000 s by default, reset by a success). Every retry also
//!   passes a global token bucket (10 per second, burst 100), whose delay is capped at 30 s
//!   so that a storm of failures never pushes one retry minutes away.
//! - **Debounce** ([`Config::debounce`], off by default): a trigger waits for more before
//!   the reconcile starts, up to the aging bound after the first.
//!
//! # Fences: never act on a cache older than your own writes
//!
//! A reconcile records what it wrote ([`record`], [`record_deletion`], or writes through
//! [`Recorded`]). Before that object's next reconcile, the controller waits until every store
//! of the controller holding those kinds shows those writes (the object at the version the
//! write returned or newer; a deleted object gone). The object waits parked, holding no
//! worker, woken by the store; other objects are never delayed by it. A fence gives up after
//! [`Config::fences`]' timeout (10 s by default) and the reconcile runs.
//!
//! This is the guarantee a reconcile that reads its children from a cache needs: without it,
//! a reconcile that created a child and runs again before the watch delivers it finds no
//! child and creates a second one. Kubernetes 1.36's controllers (KEP-5647) skip and requeue
//! such a sync with backoff, polled; controller-runtime's read-your-writes client makes a
//! `List` wait for every pending write of the kind. kache waits per object, for exactly its
//! own writes, woken when the cache catches up.
//!
//! # Replicas
//!
//! [`replicas`] divides the work between replicas of an operator through Leases: each caches
//! and reconciles only the uid-hash ranges it holds ([`Controller::within`]), and a range moves
//! between replicas only through an ordered hand-off, so that no object is ever reconciled by
//! two replicas at once.
//!
//! # Shutdown and panics
//!
//! After [`Controller::graceful_shutdown_on`]'s signal no reconcile starts; those running get
//! [`Config::shutdown_timeout`] to finish; then the stream ends. A reconcile that panics fails
//! alone: the stream reports it, and the object is retried with its backoff.

mod action;
mod config;
mod controller;
mod error;
mod fence;
#[cfg(feature = "metrics")]
mod metrics;
mod ownership;
mod queue;
mod ranges;
pub mod replicas;

pub use action::{Action, Retry, backoff};
pub use config::Config;
pub use controller::Controller;
pub use error::Error;
pub use fence::{Recorded, record, record_deletion};
#[cfg(feature = "metrics")]
pub use metrics::Metrics;
pub use ownership::Ownership;
pub use queue::Priority;

#[cfg(test)]
mod tests;
