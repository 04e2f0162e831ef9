//! The sources of a store, each fed by its own stream: [`SourcesReflector`] polls them and
//! applies their events to [`Sources`], and a [`SourceSet`] adds and removes them while it runs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::Stream;
use kache_watch::Event;
use kache_watch::plumbing::{Progress, ProgressScope};
use kube_client::Resource;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use tracing::debug;

use super::Sources;
use crate::observer::Observer;
use crate::origin::Origin;

/// A source's event stream, boxed so that sources of different types share one driver.
type SourceStream<K, E> = Pin<Box<dyn Stream<Item = Result<Event<K>, E>> + Send>>;

/// What a [`SourceSet`] asks the driver to do.
enum Command<K, E> {
    Add(Arc<str>, SourceStream<K, E>),
    Remove(Arc<str>),
}

/// A source stream being polled, with the progress points its watcher reports (see
/// [`crate::Reflect`], which does the same for one stream).
struct Polled<K, E> {
    name: Arc<str>,
    stream: SourceStream<K, E>,
    received: u64,
    pending: Option<Progress>,
    observer: Observer,
    /// The one watch stream that may feed this source: see origin.rs.
    origin: Origin,
}

/// A handle that adds and removes the sources of a [`SourcesReflector`] while it runs, from
/// any task. Cheap to clone.
pub struct SourceSet<K, E> {
    commands: mpsc::UnboundedSender<Command<K, E>>,
    synced: watch::Receiver<HashMap<Arc<str>, bool>>,
    /// The sources as this set's clones added and removed them, ahead of the reflector: what
    /// `add` and `remove` answer from.
    names: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl<K, E> Clone for SourceSet<K, E> {
    fn clone(&self) -> Self {
        Self {
            commands: self.commands.clone(),
            synced: self.synced.clone(),
            names: Arc::clone(&self.names),
        }
    }
}

impl<K, E> fmt::Debug for SourceSet<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSet")
            .field("synced", &*self.synced.borrow())
            .finish_non_exhaustive()
    }
}

impl<K, E> SourceSet<K, E> {
    /// Adds a source that `stream` feeds (a `kache_watch::watcher`, say); `false` if a source
    /// of that name exists already, which then gets the new stream and keeps its objects until
    /// the stream's first list replaces them, as a relist would. It takes effect when the
    /// [`SourcesReflector`] is next polled.
    pub fn add<S>(&self, name: &str, stream: S) -> bool
    where
        S: Stream<Item = Result<Event<K>, E>> + Send + 'static,
    {
        let name: Arc<str> = Arc::from(name);
        let added = self.names.lock().insert(Arc::clone(&name));
        // A closed channel means the reflector is gone: there is nothing left to feed.
        let _ = self.commands.send(Command::Add(name, Box::pin(stream)));
        added
    }

    /// Removes the source `name`: its stream is dropped and the objects no other source holds
    /// are deleted, in one step, when the [`SourcesReflector`] is next polled; `false` if there
    /// is no such source.
    #[allow(
        clippy::must_use_candidate,
        reason = "it asks the reflector to remove the source: the answer is optional"
    )]
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.names.lock().remove(name);
        if removed {
            let _ = self.commands.send(Command::Remove(Arc::from(name)));
        }
        removed
    }

    /// The names of the sources, as added and removed through this set.
    #[must_use]
    pub fn names(&self) -> Vec<Arc<str>> {
        self.names.lock().iter().cloned().collect()
    }

    /// Whether source `name` has completed a list, as the reflector last applied (`false` for
    /// an unknown source).
    #[must_use]
    pub fn is_synced(&self, name: &str) -> bool {
        self.synced.borrow().get(name).copied().unwrap_or(false)
    }

    /// Waits until the source `name` exists and has synced.
    ///
    /// # Errors
    ///
    /// [`Error::WriterDropped`](crate::Error::WriterDropped) if the reflector is dropped
    /// first.
    pub async fn wait_synced(&self, name: &str) -> crate::Result<()> {
        let mut synced = self.synced.clone();
        synced
            .wait_for(|synced| synced.get(name).copied().unwrap_or(false))
            .await
            .map(|_| ())
            .map_err(|_| crate::Error::WriterDropped)
    }
}

/// A stream that polls every source's stream and applies their events to [`Sources`];
/// created by [`Sources::into_reflector`]. It yields each source's items after they are
/// applied, as the source name and `Ok(())` or the source's error, and ends once every
/// [`SourceSet`] is dropped and no source is left.
#[must_use = "streams do nothing unless polled"]
pub struct SourcesReflector<K, E> {
    sources: Sources<K>,
    polled: Vec<Polled<K, E>>,
    commands: mpsc::UnboundedReceiver<Command<K, E>>,
    commands_open: bool,
    /// Where the next round of polls starts, so no source starves the others.
    next: usize,
}

// Nothing in it is ever pinned (each source stream is boxed), so it moves freely whatever `K`.
impl<K, E> Unpin for SourcesReflector<K, E> {}

impl<K, E> fmt::Debug for SourcesReflector<K, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourcesReflector")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl<K> Sources<K>
where
    K: Resource + Send + Sync + 'static,
{
    /// A stream that drives these sources from their event streams, and a handle that adds
    /// and removes sources while it runs.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_store::{Sources, Writer};
    /// use kache_watch::{Config, WatchStreamExt, watcher};
    /// use kube_client::{Api, Client};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = Client::try_default().await?;
    /// let sources = Sources::new(Writer::<ConfigMap>::new());
    /// let store = sources.store();
    /// let (set, reflector) = sources.into_reflector();
    /// // One watch per namespace, one store.
    /// for ns in ["team-a", "team-b"] {
    ///     let api = Api::namespaced(client.clone(), ns);
    ///     set.add(ns, watcher(api, Config::default()).default_backoff());
    /// }
    /// tokio::spawn(reflector.for_each(|_| async {}));
    /// store.wait_synced().await?;
    /// set.remove("team-b"); // its objects leave the store, and subscribers hear it
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_reflector<E>(self) -> (SourceSet<K, E>, SourcesReflector<K, E>) {
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let set = SourceSet {
            commands: commands_tx,
            synced: self.synced_tx.subscribe(),
            names: Arc::new(Mutex::new(self.by_name.keys().cloned().collect())),
        };
        let reflector = SourcesReflector {
            sources: self,
            polled: Vec::new(),
            commands,
            commands_open: true,
            next: 0,
        };
        (set, reflector)
    }
}

impl<K, E> Stream for SourcesReflector<K, E>
where
    K: Resource + Send + Sync + 'static,
    E: 'static,
{
    type Item = (Arc<str>, Result<(), E>);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Backpressure subscribers must have room for the previous change first.
        ready!(this.sources.writer.poll_flush(cx));
        while this.commands_open {
            match this.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Add(name, stream))) => {
                    // A source added again keeps its objects: the new stream's first list
                    // replaces them as a relist would.
                    this.polled.retain(|p| p.name != name);
                    this.sources.add(&name);
                    this.polled.push(Polled {
                        name,
                        stream,
                        received: 0,
                        pending: None,
                        observer: Observer::default(),
                        origin: Origin::default(),
                    });
                }
                Poll::Ready(Some(Command::Remove(name))) => {
                    this.polled.retain(|p| p.name != name);
                    this.sources.remove_buffered(&name);
                }
                Poll::Ready(None) => this.commands_open = false,
                Poll::Pending => break,
            }
        }
        let count = this.polled.len();
        for offset in 0..count {
            let index = (this.next + offset) % count;
            let polled = &mut this.polled[index];
            // As `Reflect` does: what the watcher did around the poll (WATCH requests,
            // bookmarks) ends an error streak and feeds the metrics.
            let before = polled
                .observer
                .observes_polls()
                .then(|| polled.observer.before_poll());
            // Polled in a scope rather than through `observe_progress`: the item is written
            // here, with no copy of the event on its way out.
            let scope = ProgressScope::enter();
            let item = polled.stream.as_mut().poll_next(cx);
            let seen = Origin::seen(&scope);
            let reached = scope.finish();
            if let Some(before) = before {
                polled
                    .observer
                    .after_poll(before, &this.sources.writer.shared);
            }
            if let Err(merged) = polled.origin.check(seen, reached.as_ref()) {
                let reason = merged.reason(Some(&polled.name));
                tracing::error!(cache = %this.sources.writer.shared.health.name(), "{reason}; the source stops");
                this.sources.writer.shared.health.stop(reason);
                this.polled.remove(index);
                this.next = 0;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if reached.is_some() {
                polled.pending = reached;
            }
            let name = Arc::clone(&polled.name);
            let out = match item {
                Poll::Pending => {
                    apply_point(&mut this.sources, polled);
                    continue;
                }
                Poll::Ready(None) => {
                    debug!(source = %name, "source stream ended; its objects stay until it is removed");
                    this.polled.remove(index);
                    this.next = 0;
                    // Poll again: the remaining sources have not been polled this round.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(event))) => {
                    polled
                        .observer
                        .on_event(&event, &this.sources.writer.shared);
                    this.sources.apply_buffered(&name, event);
                    polled.received += 1;
                    Ok(())
                }
                Poll::Ready(Some(Err(err))) => {
                    polled.observer.on_error(&err, &this.sources.writer.shared);
                    Err(err)
                }
            };
            let polled = &mut this.polled[index];
            apply_point(&mut this.sources, polled);
            this.next = index + 1;
            return Poll::Ready(Some((name, out)));
        }
        if !this.commands_open && this.polled.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Applies a source's progress point once the items before it have been applied.
fn apply_point<K, E>(sources: &mut Sources<K>, polled: &mut Polled<K, E>)
where
    K: Resource + Send + Sync + 'static,
{
    let received = polled.received;
    if let Some(point) = polled
        .pending
        .take_if(|point| point.after_items <= received)
    {
        sources.apply_progress(&polled.name, &point.resource_version);
    }
}
