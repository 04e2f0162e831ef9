//! Read-your-writes fences: what a reconcile wrote, and the wait, before the object's next
//! reconcile, until the caches show it.
//!
//! A reconcile records its writes with [`record`] and [`record_deletion`] (or through
//! [`Recorded`]); the controller keeps them per object and, before that object's next
//! reconcile, waits (holding no worker, woken by the stores) until every store of the
//! controller that holds their kind shows them, or the fence times out.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use kache_store::Store;
use kube_client::Resource;
use tracing::debug;

/// One write a reconcile made: the object the server returned (or, for a delete, the object
/// as the reconcile last knew it).
#[derive(Clone)]
pub(crate) struct Written {
    type_id: TypeId,
    object: Arc<dyn Any + Send + Sync>,
    deleted: bool,
    /// The `(apiVersion, kind)` of the object's controller, from its ownerReferences.
    owner: Option<(String, String)>,
}

impl fmt::Debug for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Written")
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

tokio::task_local! {
    /// The writes of the reconcile that runs in this task.
    static WRITES: RefCell<Vec<Written>>;
}

/// Runs `future` with a place for [`record`] to write to; its output and what was recorded.
/// (The controller's futures catch their panics inside: the writes made before one are kept.)
pub(crate) async fn recording<F: Future>(future: F) -> (F::Output, Vec<Written>) {
    let mut scoped = std::pin::pin!(WRITES.scope(RefCell::new(Vec::new()), future));
    let output = scoped.as_mut().await;
    let writes = scoped
        .as_mut()
        .take_value()
        .map(RefCell::into_inner)
        .unwrap_or_default();
    (output, writes)
}

fn push<K: Resource + Clone + Send + Sync + 'static>(object: &K, deleted: bool) -> bool {
    let owner = object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| (owner.api_version.clone(), owner.kind.clone()));
    WRITES
        .try_with(|writes| {
            writes.borrow_mut().push(Written {
                type_id: TypeId::of::<K>(),
                object: Arc::new(object.clone()),
                deleted,
                owner: owner.clone(),
            });
        })
        .is_ok()
}

/// Records, for the reconcile running in this task, that it wrote `object`: pass what the
/// create, replace or patch returned (its resourceVersion is the write's). The object's next
/// reconcile waits until the controller's stores show it at that version or newer: those that
/// hold the object; for a new object, the stores of `owns` if this controller's kind is its
/// controller, else every store of `K`. `false` (and nothing recorded) outside a reconcile.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube_client::Api;
/// use kube_client::api::PostParams;
///
/// # async fn reconcile(api: Api<ConfigMap>, child: ConfigMap) -> Result<(), kube_client::Error> {
/// let created = api.create(&PostParams::default(), &child).await?;
/// kache_controller::record(&created);
/// # Ok(())
/// # }
/// ```
pub fn record<K: Resource + Clone + Send + Sync + 'static>(object: &K) -> bool {
    push(object, false)
}

/// Records, for the reconcile running in this task, that it deleted `object` (the object as
/// it last knew it: its uid and resourceVersion). The object's next reconcile waits until
/// every store of the controller holding `K` no longer holds it; a delete that only marks the
/// object (finalizers) waits until it is really gone, or the fence times out. `false` (and
/// nothing recorded) outside a reconcile.
pub fn record_deletion<K: Resource + Clone + Send + Sync + 'static>(object: &K) -> bool {
    push(object, true)
}

/// An `Api` whose writes are recorded as [`record`] and [`record_deletion`] do.
///
/// ```no_run
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kache_controller::Recorded;
/// use kube_client::Api;
/// use kube_client::api::PostParams;
///
/// # async fn reconcile(api: Api<ConfigMap>, child: ConfigMap) -> Result<(), kube_client::Error> {
/// let api = Recorded::new(api);
/// api.create(&PostParams::default(), &child).await?; // recorded
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Recorded<K> {
    api: kube_client::Api<K>,
}

impl<K> Recorded<K>
where
    K: Resource + Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
    K: fmt::Debug,
{
    /// Records the writes made through `api`.
    #[must_use]
    pub fn new(api: kube_client::Api<K>) -> Self {
        Self { api }
    }

    /// The `Api` underneath, for reads (and writes left unrecorded).
    #[must_use]
    pub fn api(&self) -> &kube_client::Api<K> {
        &self.api
    }

    /// `Api::create`, recorded.
    ///
    /// # Errors
    ///
    /// The request's.
    pub async fn create(
        &self,
        params: &kube_client::api::PostParams,
        object: &K,
    ) -> kube_client::Result<K> {
        let created = self.api.create(params, object).await?;
        record(&created);
        Ok(created)
    }

    /// `Api::replace`, recorded.
    ///
    /// # Errors
    ///
    /// The request's.
    pub async fn replace(
        &self,
        name: &str,
        params: &kube_client::api::PostParams,
        object: &K,
    ) -> kube_client::Result<K> {
        let replaced = self.api.replace(name, params, object).await?;
        record(&replaced);
        Ok(replaced)
    }

    /// `Api::patch`, recorded.
    ///
    /// # Errors
    ///
    /// The request's.
    pub async fn patch<P: serde::Serialize + fmt::Debug>(
        &self,
        name: &str,
        params: &kube_client::api::PatchParams,
        patch: &kube_client::api::Patch<P>,
    ) -> kube_client::Result<K> {
        let patched = self.api.patch(name, params, patch).await?;
        record(&patched);
        Ok(patched)
    }

    /// `Api::delete` of `object` (as the reconcile knows it), recorded: a deletion, or, when
    /// the server only marks the object, the marked object as a write.
    ///
    /// # Errors
    ///
    /// The request's.
    pub async fn delete(
        &self,
        object: &K,
        params: &kube_client::api::DeleteParams,
    ) -> kube_client::Result<()> {
        let name = object.meta().name.clone().unwrap_or_default();
        match self.api.delete(&name, params).await?.left() {
            Some(marked) => record(&marked),
            None => record_deletion(object),
        };
        Ok(())
    }
}

/// A store a fence looks in, whatever its type.
pub(crate) trait FenceStore: Send + Sync {
    /// Whether this store holds the written object's key now; `None` if it is of another kind.
    fn holds(&self, written: &Written) -> Option<bool>;
    /// The wait for `written`, if this store is of its kind.
    fn wait(&self, written: &Written) -> Option<BoxFuture<'static, ()>>;
}

impl<K> FenceStore for Store<K>
where
    K: Resource + Send + Sync + 'static,
{
    fn holds(&self, written: &Written) -> Option<bool> {
        let object = written.object.downcast_ref::<K>()?;
        Some(
            self.get_key(&kache_store::ObjectKey::from_object(object))
                .is_some(),
        )
    }

    fn wait(&self, written: &Written) -> Option<BoxFuture<'static, ()>> {
        if written.type_id != TypeId::of::<K>() {
            return None;
        }
        let object = Arc::clone(&written.object).downcast::<K>().ok()?;
        let store = self.clone();
        let deleted = written.deleted;
        Some(
            async move {
                let waited = if deleted {
                    store.wait_for_deletion(&object).await
                } else {
                    store.wait_for(&object).await
                };
                if let Err(err) = waited {
                    // An object without a comparable version, or a store whose writer is gone:
                    // nothing to wait for.
                    debug!(error = %err, "a fence's wait ends early");
                }
            }
            .boxed(),
        )
    }
}

/// A store of the controller, as fences see it.
pub(crate) struct Fenced {
    pub(crate) store: Arc<dyn FenceStore>,
    /// For a store of owned objects (`owns`): the `(apiVersion, kind)` of their controller.
    pub(crate) owner: Option<(String, String)>,
}

/// The waits that show one write.
///
/// Several stores may hold one kind, each with its own selector, and a wait in a store that
/// does not select the object resolves only when that store's version passes the write's, at
/// whatever event or bookmark comes next: it shows nothing. So the stores that hold the
/// object's key now must show the write (for a delete, drop the object); a write to an object
/// no store holds yet (a create) must be shown by the stores of the objects this controller
/// owns if the object names this controller's kind as its controller, and otherwise by every
/// store of its kind.
fn waits(stores: &[Fenced], written: &Written) -> Vec<BoxFuture<'static, ()>> {
    let of_kind = || {
        stores
            .iter()
            .filter(|fenced| fenced.store.holds(written).is_some())
    };
    let holders: Vec<_> = of_kind()
        .filter(|fenced| fenced.store.holds(written) == Some(true))
        .collect();
    let chosen: Vec<_> = if !holders.is_empty() {
        holders
    } else if written.deleted {
        // No store holds it: already gone from every cache.
        Vec::new()
    } else {
        let owned: Vec<_> = of_kind()
            .filter(|fenced| fenced.owner.is_some() && fenced.owner == written.owner)
            .collect();
        if owned.is_empty() {
            of_kind().collect()
        } else {
            owned
        }
    };
    chosen
        .into_iter()
        .filter_map(|fenced| fenced.store.wait(written))
        .collect()
}

/// The wait until the stores show every write of `writes` (see [`waits`]); `true` if it
/// timed out. `None` when there is nothing to wait for.
pub(crate) fn fence(
    stores: &[Fenced],
    writes: &[Written],
    timeout: Duration,
) -> Option<BoxFuture<'static, bool>> {
    let shown: Vec<BoxFuture<'static, ()>> = writes
        .iter()
        .flat_map(|written| waits(stores, written))
        .collect();
    if shown.is_empty() {
        return None;
    }
    Some(
        async move {
            tokio::time::timeout(timeout, futures::future::join_all(shown))
                .await
                .is_err()
        }
        .boxed(),
    )
}

/// Whether the stores show `writes` already: a reconcile that starts otherwise acts on a
/// cache older than its object's last writes (counted, fences on or off).
pub(crate) fn visible(stores: &[Fenced], writes: &[Written]) -> bool {
    writes.iter().all(|written| {
        waits(stores, written)
            .into_iter()
            .all(|mut wait| wait.as_mut().now_or_never().is_some())
    })
}
