//! Replicas of an operator that split a collection between them, with Kubernetes Leases as the
//! only coordination: each replica renews a `coordination.k8s.io/v1` Lease of its own, reads
//! the group's Leases, and watches the shard of the uid space that its rank among the live
//! holders gives it ([`kache_watch::Shard::nth`]). When a replica stops renewing, the others
//! see its Lease go stale and take over its range; when one joins, they hand part of theirs
//! over. No leader, no coordination service: the API server is the shared state.
//!
//! # Liveness without trusting clocks
//!
//! A Lease is live while its holder keeps changing it. Each replica notes, on its own clock,
//! when it last saw each Lease's resourceVersion change, and counts a Lease as gone once that
//! is older than the lease duration. So clocks need not agree (the `renewTime` a holder writes
//! is for people reading `kubectl get lease`), as in client-go's leader election.
//!
//! # What replicas can see
//!
//! - **A replica that stops renewing** (crashed, partitioned, paused) keeps its range until
//!   its Lease goes stale in the others' eyes, one lease duration after its last renewal at
//!   most plus one renewal interval: during that time nobody else watches its range, and
//!   changes there wait. A replica that is partitioned but alive keeps serving its (aging)
//!   store: it cannot know it was replaced until it reaches the API server again, and its
//!   first failed renewal is the moment to stop acting on its cache.
//! - **Two replicas briefly owning one range**: the replicas do not see membership change at
//!   the same instant, and a replica moving to a new range keeps its old one until the new
//!   one has synced ([`kache_store::Sources`]). So for a moment a range can be held by two
//!   replicas (or, between one replica's view and another's, by none). Use the shard for
//!   *caching and dividing work*, not for mutual exclusion: work that must never run twice
//!   needs its own guard (a Lease per object, or optimistic concurrency on the object).
//! - Ranks follow the sorted identities, so a membership change moves most ranges a little
//!   rather than a few ranges a lot; each replica keeps, without a relist, the objects its new
//!   range shares with its old one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kache_store::{Sources, Store, Writer};
use kache_watch::{Config, Shard, WatchStreamExt, watcher};
use kube_client::{
    Api, Resource,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// The label that marks the Leases of one group of replicas.
pub const GROUP_LABEL: &str = "kache.rs/replica-group";

/// One replica's view of its group: its own Lease, and the live holders of the others.
#[derive(Debug)]
pub struct Membership {
    api: Api<Lease>,
    group: String,
    identity: String,
    lease_duration: Duration,
    /// Each Lease's last resourceVersion, and when this replica saw it change.
    seen: HashMap<String, (String, Instant)>,
}

impl Membership {
    /// A member of `group` named `identity`, whose Leases live in `api`'s namespace. A Lease
    /// unchanged for `lease_duration` counts as gone; renew well within it (a third is usual).
    #[must_use]
    pub fn new(api: Api<Lease>, group: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api,
            group: group.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            seen: HashMap::new(),
        }
    }

    /// This replica's identity.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lease_name(&self) -> String {
        format!("{}-{}", self.group, self.identity)
    }

    /// Creates or renews this replica's Lease (one server-side apply).
    ///
    /// # Errors
    /// When the API server does not take it.
    pub async fn renew(&self) -> Result<(), kube_client::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.lease_name()),
                labels: Some(BTreeMap::from([(
                    GROUP_LABEL.to_owned(),
                    self.group.clone(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply("kache-replica").force();
        self.api
            .patch(&self.lease_name(), &params, &Patch::Apply(&lease))
            .await?;
        Ok(())
    }

    /// Deletes this replica's Lease, so that the others take over at once rather than after
    /// the lease duration. Call it on an orderly shutdown.
    ///
    /// # Errors
    /// When the API server does not take it (a Lease already gone is fine).
    pub async fn leave(&self) -> Result<(), kube_client::Error> {
        match self
            .api
            .delete(&self.lease_name(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube_client::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The identities of the group's live holders, sorted.
    ///
    /// # Errors
    /// When the Leases cannot be listed.
    pub async fn members(&mut self) -> Result<Vec<String>, kube_client::Error> {
        let selector = format!("{GROUP_LABEL}={}", self.group);
        let leases = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await?;
        let now = Instant::now();
        let mut live = Vec::new();
        let mut seen = HashMap::new();
        for lease in leases {
            let (Some(name), Some(version)) = (
                lease.metadata.name.clone(),
                lease.metadata.resource_version.clone(),
            ) else {
                continue;
            };
            let changed = match self.seen.remove(&name) {
                Some((last, when)) if last == version => when,
                // New to this replica, or renewed since: alive as of now.
                _ => now,
            };
            let holder = lease.spec.and_then(|spec| spec.holder_identity);
            if now.duration_since(changed) < self.lease_duration
                && let Some(holder) = holder
            {
                live.push(holder);
            }
            seen.insert(name, (version, changed));
        }
        self.seen = seen;
        live.sort();
        live.dedup();
        Ok(live)
    }

    /// Renews this replica's Lease and returns its shard among the live holders: `None` if
    /// it does not count itself among them (its renewals keep failing).
    ///
    /// # Errors
    /// When the Lease cannot be renewed or the Leases cannot be listed.
    pub async fn shard(&mut self) -> Result<Option<Shard>, kube_client::Error> {
        self.renew().await?;
        let members = self.members().await?;
        let Some(rank) = members.iter().position(|m| *m == self.identity) else {
            return Ok(None);
        };
        // Both fit: `rank < members.len()`, and a group has far fewer than 2^32 replicas.
        let (rank, count) = (
            u32::try_from(rank).unwrap_or(u32::MAX - 1),
            u32::try_from(members.len()).unwrap_or(u32::MAX),
        );
        Ok(Shard::nth(rank, count).ok())
    }
}

/// Starts replica `identity` of `group` over the objects of kind `K` in `namespace`, its Lease
/// in the same namespace, renewed every `renew` and stale after `lease`: the parts a
/// namespaced operator needs, in one call. Returns the replica and the future that runs it.
pub fn namespaced_replica<K>(
    client: kube_client::Client,
    namespace: &str,
    group: &str,
    identity: &str,
    (lease, renew): (Duration, Duration),
) -> (
    Replica<K>,
    impl std::future::Future<Output = ()> + Send + use<K>,
)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    let membership = Membership::new(
        Api::<Lease>::namespaced(client.clone(), namespace),
        group,
        identity,
        lease,
    );
    Replica::start(
        Api::namespaced(client, namespace),
        Config::default(),
        membership,
        renew,
    )
}

/// A replica: a store of its shard of `api`'s objects, which moves with the membership.
///
/// Every `renew_every` it renews its Lease and recomputes its shard; when the shard changes,
/// it watches the new one as a new source of its store and drops the old source once the new
/// one has synced, so objects in both stay in the store throughout. The future runs until
/// dropped (abort its task to kill the replica: its Lease then goes stale).
pub struct Replica<K> {
    /// The replica's store: the objects of its current shard (and, while it moves, of its
    /// previous one).
    pub store: Store<K>,
    /// The shard it watches now, if any.
    pub shard: tokio::sync::watch::Receiver<Option<Shard>>,
}

impl<K> std::fmt::Debug for Replica<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("shard", &*self.shard.borrow())
            .finish_non_exhaustive()
    }
}

impl<K> Replica<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    /// Starts a replica: returns it, and the future that runs it (spawn it).
    pub fn start(
        api: Api<K>,
        config: Config,
        mut membership: Membership,
        renew_every: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let sources = Sources::new(Writer::<K>::new());
        let store = sources.store();
        let (set, reflector) = sources.into_reflector::<kache_watch::Error>();
        let (shard_tx, shard) = tokio::sync::watch::channel(None);
        let run = async move {
            let identity = membership.identity().to_owned();
            let drive = reflector.for_each(|_| async {});
            let follow = async move {
                let mut current: Option<Shard> = None;
                // Shards still watched while the current one syncs.
                let mut retiring: Vec<Shard> = Vec::new();
                loop {
                    match membership.shard().await {
                        Ok(next) if next != current => {
                            tracing::info!(replica = %identity, shard = ?next.as_ref().map(Shard::selector), "shard changes");
                            retiring.extend(current.take());
                            retiring.retain(|old| Some(old) != next.as_ref());
                            if let Some(to) = &next
                                && !set.synced().contains_key(to.selector().as_str())
                            {
                                let config = config.clone().shard(to.clone());
                                set.add(&to.selector(), source(api.clone(), config));
                            }
                            shard_tx.send_replace(next.clone());
                            current = next;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(replica = %identity, error = %err, "lease renewal failed");
                        }
                    }
                    // The old shards go once the new one has synced (at once when there is
                    // none): objects in both never leave the store.
                    let synced = match &current {
                        Some(shard) => {
                            tokio::time::timeout(renew_every, set.wait_synced(&shard.selector()))
                                .await
                                .is_ok_and(|synced| synced.is_ok())
                        }
                        None => true,
                    };
                    if synced {
                        for old in retiring.drain(..) {
                            set.remove(&old.selector());
                        }
                    }
                    tokio::time::sleep(renew_every).await;
                }
            };
            futures::future::join(drive, follow).await;
        };
        (Self { store, shard }, run)
    }
}

fn source<K>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<kache_watch::Event<K>, kache_watch::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, config).default_backoff()
}
