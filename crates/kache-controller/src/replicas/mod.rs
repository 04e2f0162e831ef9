//! Replicas of an operator that divide its objects, and its work, through Kubernetes Leases:
//! each replica caches and reconciles only the uid-hash ranges it holds, and a range moves
//! from one replica to another only through an ordered hand-off, so that no object is ever
//! reconciled by two replicas at once.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use futures::StreamExt;
//! use k8s_openapi::api::coordination::v1::Lease;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kache_controller::replicas::Replicas;
//! use kache_controller::{Action, Config, Controller};
//! use kube_client::{Api, Client};
//!
//! async fn reconcile(_: Arc<ConfigMap>, _: Arc<()>) -> kube_client::Result<Action> {
//!     Ok(Action::await_change())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::try_default().await?;
//! let identity = std::env::var("POD_NAME")?; // unique per replica
//! let (replica, membership) = Replicas::new(Api::<Lease>::namespaced(client.clone(), "ops"), "config-maps", &identity)
//!     .start(Api::<ConfigMap>::namespaced(client, "apps"), kache_watch::Config::default())?;
//! let membership = tokio::spawn(membership);
//! let controller = Controller::new(replica.store(), Config::default())
//!     .within(replica.ownership())
//!     .run(reconcile, kache_controller::backoff, Arc::new(()))
//!     .for_each(|_| async {});
//! tokio::select! {
//!     () = controller => {}
//!     _ = tokio::signal::ctrl_c() => {}
//! }
//! replica.leave(); // hands its ranges over now rather than after the lease duration
//! membership.await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Membership
//!
//! Each replica server-side-applies a `coordination.k8s.io/v1` Lease of its own, labelled
//! with its group ([`GROUP_LABEL`]), every renewal interval, and lists the group's Leases. A
//! Lease is live while its holder keeps changing it: each replica notes, **on its own clock**,
//! when it saw each Lease's resourceVersion change, and counts a Lease as expired once that is
//! a lease duration ago. The `renewTime` a holder writes is for people; no replica reads
//! another's clock. A replica's target is `Shard::nth(rank, live)`, its rank among the sorted
//! live identities.
//!
//! # Hand-offs
//!
//! A replica's Lease claims the ranges it holds or is taking ([`CLAIM_ANNOTATION`]). Each write
//! of it is conditional on the replica's previous one: a late write never lands over a newer
//! one, and a replica whose Lease changed under it gives up its ranges and claims anew.
//!
//! - **Release.** A range leaving a replica's target stops taking new reconciles at once
//!   (queued keys there are dropped); the running ones get the drain timeout to finish, then
//!   are stopped (their futures dropped); only then does the replica write its Lease without
//!   the range.
//! - **Take.** A replica claims a part of its target that no live Lease claims (a released
//!   range, or one whose holder's Lease has expired in its eyes), once its cache of that part
//!   has synced. It writes the claim, then lists the Leases again: it holds the part only if
//!   no other live Lease claims any of it in that list, which started after its claim was
//!   acknowledged; otherwise it withdraws. Two replicas claiming one range at once both
//!   withdraw, or the later one does: never both hold it. Keys of a range taken are queued.
//! - **Renew deadline.** A replica holds its ranges only while its last successful renewal was
//!   sent less than the renew deadline ago (on its own clock). Past it, it starts no
//!   reconcile, stops the running ones, and gives up every range: after it reaches the API
//!   server again it claims anew, as any replica does (a renewal acknowledged only after the
//!   deadline restores nothing). The others take its ranges only after its Lease has been
//!   unchanged for the lease duration on their clocks, which is longer. Each poll of a
//!   reconcile checks its range and the authority first.
//! - **Leaving.** [`Replica::leave`] drains, writes the Lease without claims and marked
//!   [`LEAVING_ANNOTATION`], then deletes it. A Lease deleted by anyone else keeps its last
//!   claims for a lease duration in the others' eyes.
//! - **One identity, two processes.** A replica that finds another process's nonce
//!   ([`INSTANCE_ANNOTATION`]) in its own Lease, changed within a lease duration, writes and
//!   holds nothing until that Lease expires (a restart under the same name after a crash waits
//!   out its predecessor's Lease).
//!
//! The one clock assumption is **bounded rate drift**: while one replica's clock measures the
//! renew deadline, another's must measure less than the lease duration. With client-go's
//! defaults (15 s and 10 s) clocks may run 20% apart; clock *offsets* do not matter at all.
//! The API server's linearizable reads and writes (a LIST without a resourceVersion reads
//! from etcd, or from a watch cache that has caught up with it) are the other assumption.
//!
//! A reconcile stopped by the drain timeout or by a lapse is dropped at an `.await`: a request
//! it had already sent may still reach the server after another replica's reconcile has
//! started. Keep reconciles idempotent (as every reconcile must be), and the drain timeout
//! above your reconciles' usual time.
//!
//! # Caching
//!
//! A replica's store holds its target and the ranges it still holds (one source per segment,
//! [`kache_store::Sources`]): moving, it keeps every segment inside its new ranges without a
//! relist, and retires the rest once the new segments have synced. Where the server does not
//! shard lists and watches (`kache_watch::server_shards`), every watch receives every object
//! and the watcher filters; a replica then keeps one source and relists on each move.

mod membership;
mod segments;

use std::future::Future;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kache_store::{Sources, Store, Writer};
use kache_watch::{Shard, WatchStreamExt};
use kube_client::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use crate::ranges::Ranges;
pub use membership::{CLAIM_ANNOTATION, GROUP_LABEL, INSTANCE_ANNOTATION, LEAVING_ANNOTATION};

use crate::ownership::Ownership;
use membership::{Membership, View, WriteError};
use segments::{MAX_SEGMENTS, Segments};

/// The longest lease duration and drain timeout accepted: longer ones are mistakes (and would
/// overflow the clock's arithmetic).
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Whether `s` is a DNS label (RFC 1123): 1 to 63 lowercase letters, digits and '-',
/// starting and ending with a letter or digit.
fn is_label(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(*b) || *b == b'-')
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
}

/// A replica's settings that cannot work: see [`Replicas::start`].
#[derive(Debug, thiserror::Error)]
#[error("invalid replica settings: {0}")]
pub struct InvalidReplica(String);

/// The settings of one replica of a group; [`start`](Self::start) starts it.
#[derive(Clone, Debug)]
pub struct Replicas {
    leases: Api<Lease>,
    group: String,
    identity: String,
    lease_duration: Duration,
    renew_deadline: Duration,
    renew_every: Duration,
    drain_timeout: Duration,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Metrics>,
}

impl Replicas {
    /// Replica `identity` (unique in the group: a pod's name) of `group`, whose Leases live in
    /// `leases`' namespace. Timing as client-go's leader election: a lease of 15 s, a renew
    /// deadline of 10 s, renewals every 2 s; the drain timeout is 5 s.
    #[must_use]
    pub fn new(leases: Api<Lease>, group: &str, identity: &str) -> Self {
        Self {
            leases,
            group: group.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(5),
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// The lease duration (after which the others count a silent replica gone, on their
    /// clocks), the renew deadline (after which a replica that could not renew stops, on its
    /// own), and the renewal interval: `renew_every < renew_deadline < lease_duration`.
    #[must_use]
    pub fn timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        renew_every: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.renew_every = renew_every;
        self
    }

    /// How long the reconciles running in a range being released may go on before they are
    /// stopped.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Reports the ranges held, hand-offs and time without an owner through `metrics`
    /// (`group` label).
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    fn check(&self) -> Result<(), InvalidReplica> {
        let name = membership::lease_name(&self.group, &self.identity);
        if !is_label(&self.group) {
            return Err(InvalidReplica(format!(
                "the group {:?} must be a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
                self.group
            )));
        }
        if !self.identity.split('.').all(is_label) || name.len() > 253 {
            return Err(InvalidReplica(format!(
                "the identity {:?} must be a DNS name (labels joined by '.'), and the Lease name {name:?} at most 253 characters",
                self.identity
            )));
        }
        if !(self.renew_every < self.renew_deadline && self.renew_deadline < self.lease_duration)
            || self.renew_every.is_zero()
        {
            return Err(InvalidReplica(format!(
                "need 0 < renew interval ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.renew_every, self.renew_deadline, self.lease_duration
            )));
        }
        if self.lease_duration > MAX_DURATION || self.drain_timeout > MAX_DURATION {
            return Err(InvalidReplica(format!(
                "the lease duration ({:?}) and the drain timeout ({:?}) must be at most {MAX_DURATION:?}",
                self.lease_duration, self.drain_timeout
            )));
        }
        Ok(())
    }

    /// Starts the replica over `api`'s objects, watched with `config` (its shard is the
    /// replica's): returns the replica, and the future that runs its membership (spawn it; it
    /// ends after [`Replica::leave`]).
    ///
    /// # Errors
    /// [`InvalidReplica`] if the identity or group is not a DNS name, or the timing breaks
    /// `renew_every < renew_deadline < lease_duration`.
    pub fn start<K>(
        self,
        api: Api<K>,
        config: kache_watch::Config,
    ) -> Result<(Replica<K>, impl Future<Output = ()> + Send + use<K>), InvalidReplica>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    {
        let shards = api.clone();
        self.start_with(
            Writer::new(),
            move || {
                let api = shards.clone();
                async move { kache_watch::server_shards(&api).await.unwrap_or(false) }
            },
            move |shard| {
                kache_watch::watcher(api.clone(), config.clone().shard(shard)).default_backoff()
            },
        )
    }

    /// [`start`](Self::start) with a writer of your own (indexes, a transform, metrics) and a
    /// source per shard of your own (a protobuf or metadata watcher); `server_shards` tells
    /// whether the server shards lists and watches (see `kache_watch::server_shards`).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with<K, S, F, Fut, G>(
        self,
        writer: Writer<K>,
        server_shards: F,
        source: G,
    ) -> Result<
        (
            Replica<K>,
            impl Future<Output = ()> + Send + use<K, S, F, Fut, G>,
        ),
        InvalidReplica,
    >
    where
        G: Fn(Shard) -> S + Send + 'static,
        K: Resource + Clone + Send + Sync + 'static,
        S: Stream<Item = Result<kache_watch::Event<K>, kache_watch::Error>> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.check()?;
        let sources = Sources::new(writer);
        let store = sources.store();
        let (set, reflector) = sources.into_reflector::<kache_watch::Error>();
        let ownership = Ownership::new();
        let (leave_tx, leave) = watch::channel(false);
        let replica = Replica {
            store,
            ownership: ownership.clone(),
            leave: leave_tx,
        };
        let run = async move {
            let drive = reflector.for_each(|_| async {});
            let max = if server_shards().await {
                MAX_SEGMENTS
            } else {
                1
            };
            let round = Rounds::new(self, ownership, set, max, source);
            futures::future::select(std::pin::pin!(drive), std::pin::pin!(round.run(leave))).await;
        };
        Ok((replica, run))
    }
}

/// A running replica: its store (its target's objects, and those of the ranges it still
/// holds) and its [`Ownership`] (what it may reconcile now), for its controllers.
pub struct Replica<K> {
    store: Store<K>,
    ownership: Ownership,
    leave: watch::Sender<bool>,
}

impl<K> std::fmt::Debug for Replica<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("held", &self.ownership.held())
            .finish_non_exhaustive()
    }
}

impl<K> Replica<K> {
    /// The replica's store.
    #[must_use]
    pub fn store(&self) -> Store<K>
    where
        K: Clone,
    {
        self.store.clone()
    }

    /// What the replica may reconcile now: give it to its controllers
    /// ([`Controller::within`](crate::Controller::within)).
    #[must_use]
    pub fn ownership(&self) -> Ownership {
        self.ownership.clone()
    }

    /// Leaves the group in order: the replica releases every range (its running reconciles
    /// get the drain timeout), deletes its Lease, and its membership future ends. The others
    /// take its ranges at once, rather than after the lease duration. Dropping the `Replica`
    /// does not leave; aborting the membership future's task stops the replica without a
    /// goodbye (the others take over once its Lease expires).
    pub fn leave(&self) {
        self.leave.send_replace(true);
    }
}

/// Ranges given up by the reconcilers but still claimed until their reconciles end.
#[derive(Debug)]
struct Drain {
    ranges: Ranges,
    /// When the reconciles still running there are stopped.
    deadline: Instant,
    /// Past the deadline: the reconciles there are being stopped.
    revoked: bool,
}

/// The membership's state between rounds.
struct Rounds<K, F> {
    settings: Replicas,
    membership: Membership,
    ownership: Ownership,
    set: kache_store::SourceSet<K, kache_watch::Error>,
    segments: Segments,
    source: F,
    /// The ranges this replica's rank gives it.
    target: Ranges,
    /// What the store caches.
    cached: Ranges,
    /// Ranges held: reconciles may start there.
    held: Ranges,
    drains: Vec<Drain>,
    /// Claims not yet written.
    claiming: Ranges,
    /// Claims written, to be confirmed by the next list.
    written: Ranges,
    /// What the Lease said at the last successful write.
    last_written: Option<Ranges>,
    /// When the last renewal that holds was sent.
    last_renewal: Option<Instant>,
    /// When this replica's Lease was first written.
    first_written: Option<Instant>,
    /// When this replica first saw each part of its claims without an owner.
    unowned_since: Vec<(Ranges, Instant)>,
    leaving: bool,
    /// Its leaving write (no claims, marked leaving) was acknowledged.
    announced_leaving: bool,
    /// Another process writes this replica's Lease (the same identity twice): this one holds
    /// and writes nothing meanwhile.
    blocked: bool,
    #[cfg(feature = "metrics")]
    reporter: Option<crate::metrics::ReplicaReporter>,
}

impl<K, F, S> Rounds<K, F>
where
    K: Resource + Clone + Send + Sync + 'static,
    F: Fn(Shard) -> S + Send + 'static,
    S: Stream<Item = Result<kache_watch::Event<K>, kache_watch::Error>> + Send + 'static,
{
    fn new(
        settings: Replicas,
        ownership: Ownership,
        set: kache_store::SourceSet<K, kache_watch::Error>,
        max: usize,
        source: F,
    ) -> Self {
        let membership = Membership::new(
            settings.leases.clone(),
            &settings.group,
            &settings.identity,
            settings.lease_duration,
            // A request still unanswered at the renew deadline is of no use.
            settings.renew_deadline,
        );
        #[cfg(feature = "metrics")]
        let reporter = settings
            .metrics
            .as_ref()
            .map(|metrics| metrics.replica(&settings.group));
        Self {
            membership,
            ownership,
            set,
            segments: Segments {
                max,
                ..Segments::default()
            },
            source,
            target: Ranges::empty(),
            cached: Ranges::empty(),
            held: Ranges::empty(),
            drains: Vec::new(),
            claiming: Ranges::empty(),
            written: Ranges::empty(),
            last_written: None,
            last_renewal: None,
            first_written: None,
            unowned_since: Vec::new(),
            leaving: false,
            announced_leaving: false,
            blocked: false,
            #[cfg(feature = "metrics")]
            reporter,
            settings,
        }
    }

    fn id(&self) -> &str {
        self.membership.identity()
    }

    /// The ranges draining.
    fn draining(&self) -> Ranges {
        self.drains
            .iter()
            .fold(Ranges::empty(), |all, drain| all.union(&drain.ranges))
    }

    /// Tells the controllers what they may start (the held ranges) and what may go on running
    /// (those and the drains not yet revoked).
    fn publish(&self) {
        let run = self
            .drains
            .iter()
            .filter(|drain| !drain.revoked)
            .fold(self.held.clone(), |all, drain| all.union(&drain.ranges));
        self.ownership.set(self.held.clone(), &run);
    }

    async fn run(mut self, mut leave: watch::Receiver<bool>) {
        let identity = self.id().to_owned();
        info!(replica = %identity, group = %self.settings.group, "replica starts");
        let mut hints = std::pin::pin!(membership::claim_changes(
            self.settings.leases.clone(),
            &self.settings.group,
            &identity,
            self.settings.renew_every,
        ));
        let mut next_renewal = Instant::now();
        let mut wake_at = Instant::now();
        let mut handle_dropped = false;
        loop {
            let (ownership, draining) = (self.ownership.clone(), self.draining());
            let drained = async move { ownership.idle_in(&draining).await };
            let mut synced = self.set.clone();
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                Some(()) = hints.next() => {
                    // Hints that arrive together make one round.
                    while let Some(Some(())) = hints.next().now_or_never() {}
                }
                () = drained, if !self.drains.is_empty() => {}
                () = self.wait_synced(&mut synced), if !self.synced() => {}
                changed = leave.changed(), if !self.leaving && !handle_dropped => {
                    if changed.is_err() {
                        // The `Replica` was dropped: the replica goes on (only `leave` leaves).
                        handle_dropped = true;
                    } else if *leave.borrow() {
                        info!(replica = %identity, "replica leaves its group");
                        self.leaving = true;
                    }
                }
            }
            let renew = Instant::now() >= next_renewal;
            let next_expiry = self.round(renew).await;
            if renew {
                next_renewal = Instant::now() + self.settings.renew_every;
            }
            if self.leaving && self.done_leaving() {
                // The others see the Lease without claims, marked leaving, within a round;
                // deleting it before they do would make them wait a lease duration.
                tokio::time::sleep(self.settings.renew_every).await;
                match self.membership.leave().await {
                    Ok(()) => info!(replica = %identity, "replica left its group"),
                    Err(err) => {
                        warn!(replica = %identity, error = %err, "could not delete the replica's Lease; it claims nothing, and expires");
                    }
                }
                self.report();
                return;
            }
            // The next round: the next renewal, or sooner when a Lease would expire (so that a
            // dead replica's ranges are taken as soon as it counts as gone), a drain's
            // deadline passes, or the replica settles.
            let now = Instant::now();
            wake_at = next_expiry.map_or(next_renewal, |expiry| expiry.min(next_renewal));
            if let Some(first) = self.first_written
                && !self.settled()
            {
                wake_at = wake_at.min(first + self.settings.renew_every);
            }
            for drain in self.drains.iter().filter(|drain| !drain.revoked) {
                wake_at = wake_at.min(drain.deadline);
            }
            wake_at = wake_at.max(now + Duration::from_millis(10));
        }
    }

    /// Waits until the cache's live segments have synced (claims wait for it).
    fn wait_synced(
        &self,
        set: &mut kache_store::SourceSet<K, kache_watch::Error>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let names: Vec<String> = self.segments.live.iter().map(ToString::to_string).collect();
        let set = set.clone();
        async move {
            for name in names {
                if set.wait_synced(&name).await.is_err() {
                    // A source that stopped: the next renewal round looks again.
                    futures::future::pending::<()>().await;
                }
            }
        }
    }

    fn done_leaving(&self) -> bool {
        self.announced_leaving
            && self.held.is_empty()
            && self.drains.is_empty()
            && self.claiming.is_empty()
            && self.written.is_empty()
    }

    /// One round: observe, release, confirm, claim, cache, write. Returns when the next Lease
    /// would expire.
    async fn round(&mut self, renew: bool) -> Option<Instant> {
        self.check_authority();
        let view = match self.membership.observe().await {
            Ok(view) => Some(view),
            Err(err) => {
                warn!(replica = %self.id(), error = %err, "could not list the group's Leases");
                None
            }
        };
        let next_expiry = view.as_ref().and_then(|view| view.next_expiry);
        if let Some(view) = &view
            && self.own_lease_is_sound(view)
        {
            self.decide(view);
        }
        self.finish_drain();
        self.cache();
        if !self.blocked {
            self.write(renew).await;
        }
        if !self.written.is_empty() && !self.blocked {
            // Confirm at once: a list that started after the claim's write was acknowledged.
            match self.membership.observe().await {
                Ok(view) if self.own_lease_is_sound(&view) => self.confirm(&view),
                Ok(_) => {}
                Err(err) => {
                    debug!(replica = %self.id(), error = %err, "could not list the Leases to confirm a claim");
                }
            }
        }
        self.report();
        next_expiry
    }

    /// Checks this replica's own Lease in `view`: written by another process with the same
    /// identity (recently), or deleted by someone else, the replica holds nothing.
    fn own_lease_is_sound(&mut self, view: &View) -> bool {
        match &view.own {
            Some(own)
                if !own.ours
                    && own
                        .foreign_until
                        .is_some_and(|until| Instant::now() < until) =>
            {
                if !self.blocked {
                    error!(replica = %self.id(), "another process renews this replica's Lease: two replicas share one identity (or this one restarted within a lease duration); this one holds nothing until that Lease expires");
                }
                self.blocked = true;
                self.lapse();
                false
            }
            None if self.membership.has_written() => {
                warn!(replica = %self.id(), "this replica's Lease was deleted by someone else: it holds nothing and claims anew");
                self.membership.forget_write();
                self.blocked = false;
                self.lapse();
                false
            }
            _ => {
                self.blocked = false;
                true
            }
        }
    }

    /// Past the renew deadline: stop everything and give up every range.
    fn check_authority(&mut self) {
        let lapsed = self
            .last_renewal
            .is_some_and(|sent| Instant::now() >= sent + self.settings.renew_deadline);
        let holds = !(self.held.is_empty()
            && self.claiming.is_empty()
            && self.written.is_empty()
            && self.drains.iter().all(|drain| drain.revoked));
        if lapsed && holds {
            warn!(replica = %self.id(), "no renewal within the renew deadline: the replica stops reconciling and gives up its ranges");
            self.lapse();
        }
    }

    /// Gives up everything at once: the reconcilers stop now, and every range is claimed anew.
    fn lapse(&mut self) {
        let all = self.held.union(&self.draining());
        self.drains.clear();
        if !all.is_empty() {
            self.drains.push(Drain {
                ranges: all,
                deadline: Instant::now(),
                revoked: true,
            });
        }
        self.held = Ranges::empty();
        self.claiming = Ranges::empty();
        self.written = Ranges::empty();
        self.publish();
    }

    fn target(&self, view: &View) -> Ranges {
        if self.leaving {
            return Ranges::empty();
        }
        let mut members: Vec<&str> = view.members.iter().map(String::as_str).collect();
        let me = self.id();
        if !members.contains(&me) {
            members.push(me);
            members.sort_unstable();
        }
        let rank = members.iter().position(|m| *m == me).unwrap_or(0);
        let (rank, count) = (
            u32::try_from(rank).unwrap_or(u32::MAX - 1),
            u32::try_from(members.len()).unwrap_or(u32::MAX),
        );
        Shard::nth(rank, count).map_or_else(|_| Ranges::empty(), |shard| Ranges::of(shard.ranges()))
    }

    /// Confirms the written claims that no other live Lease claims; withdraws the rest.
    fn confirm(&mut self, view: &View) {
        if self.written.is_empty() {
            return;
        }
        let taken = self.written.minus(&view.others);
        let lost = self.written.intersection(&view.others);
        if !lost.is_empty() {
            info!(replica = %self.id(), ranges = %lost, "another replica claims these ranges too: withdrawn");
        }
        self.written = Ranges::empty();
        if taken.is_empty() {
            return;
        }
        info!(replica = %self.id(), ranges = %taken, "ranges taken");
        let (ended, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unowned_since)
            .into_iter()
            .partition(|(ranges, _)| ranges.overlaps(&taken));
        self.unowned_since = open;
        #[cfg(feature = "metrics")]
        if let Some(reporter) = &self.reporter {
            let now = Instant::now();
            for (_, since) in &ended {
                reporter.taken(now.saturating_duration_since(*since));
            }
        }
        drop(ended);
        self.held = self.held.union(&taken);
        self.publish();
    }

    fn decide(&mut self, view: &View) {
        self.confirm(view);
        let target = self.target(view);
        let now = Instant::now();
        // Release what left the target: no new reconciles there; the running ones drain.
        let leaving = self.held.minus(&target);
        if !leaving.is_empty() {
            info!(replica = %self.id(), ranges = %leaving, "releasing ranges: no new reconciles there");
            self.held = self.held.minus(&leaving);
            self.drains.push(Drain {
                ranges: leaving,
                deadline: now + self.settings.drain_timeout,
                revoked: false,
            });
            self.publish();
            #[cfg(feature = "metrics")]
            if let Some(reporter) = &self.reporter {
                reporter.released();
            }
        }
        self.claiming = self.claiming.intersection(&target);
        self.target = target.clone();
        // Claim the free parts of the target, once the cache of the target has synced.
        let free = target
            .minus(&self.held)
            .minus(&self.draining())
            .minus(&self.written)
            .minus(&view.others);
        // Only what stays unowned counts: a part claimed again by someone is no longer free.
        self.unowned_since
            .retain(|(ranges, _)| ranges.overlaps(&free));
        let noted = self
            .unowned_since
            .iter()
            .fold(Ranges::empty(), |all, (ranges, _)| all.union(ranges));
        let new = free.minus(&noted);
        if !new.is_empty() {
            // A part an expired Lease still claims lost its owner when that Lease last changed.
            for (claims, changed) in &view.expired {
                let part = new.intersection(claims);
                if !part.is_empty() {
                    self.unowned_since.push((part, *changed));
                }
            }
            let expired = view
                .expired
                .iter()
                .fold(Ranges::empty(), |all, (claims, _)| all.union(claims));
            self.unowned_since.push((new.minus(&expired), now));
        }
        if self.settled() && self.synced() {
            self.claiming = self.claiming.union(&free);
        } else if !free.is_empty() {
            debug!(replica = %self.id(), "free ranges wait for the cache to sync");
        }
    }

    /// Releases the drained ranges; past a drain's deadline, stops its reconciles.
    fn finish_drain(&mut self) {
        if self.drains.is_empty() {
            return;
        }
        let now = Instant::now();
        let before = self.drains.len();
        let ownership = self.ownership.clone();
        self.drains.retain(|drain| {
            let idle = ownership.running_in(&drain.ranges) == 0;
            if idle {
                debug!(ranges = %drain.ranges, "ranges drained");
            }
            !idle
        });
        let mut revoked = false;
        for drain in &mut self.drains {
            if !drain.revoked && now >= drain.deadline {
                warn!(ranges = %drain.ranges, running = ownership.running_in(&drain.ranges), "drain timeout: stopping the reconciles still running in released ranges");
                drain.revoked = true;
                revoked = true;
            }
        }
        if revoked || self.drains.len() != before {
            self.publish();
        }
    }

    /// Whether a renewal interval has passed since this replica's Lease was first written:
    /// by then the replicas that started with it see it, and it sees them.
    fn settled(&self) -> bool {
        self.first_written
            .is_some_and(|first| Instant::now() >= first + self.settings.renew_every)
    }

    /// Whether every live segment of the cache has synced.
    fn synced(&self) -> bool {
        self.segments
            .live
            .iter()
            .all(|segment| self.set.is_synced(&segment.to_string()))
    }

    /// Caches the target and what is still held; retires old segments once the new synced.
    fn cache(&mut self) {
        if !self.settled() {
            // Replicas that start together see one another only after a renewal round: a
            // target chosen before that would list too much and move at once.
            return;
        }
        let want = self
            .target
            .union(&self.held)
            .union(&self.draining())
            .union(&self.claiming)
            .union(&self.written);
        if want != self.cached {
            for added in self.segments.move_to(&want) {
                let Ok(shard) = Shard::new([added]) else {
                    continue;
                };
                self.set.add(&added.to_string(), (self.source)(shard));
            }
            self.cached = want;
        }
        // The old segments go once the new ones have synced: objects in both never leave
        // the store.
        if !self.segments.retiring.is_empty() && self.synced() {
            for old in self.segments.retiring.drain(..) {
                self.set.remove(&old.to_string());
            }
        }
    }

    /// Writes the Lease: on a renewal round, or when the claims changed.
    async fn write(&mut self, renew: bool) {
        let claims = self
            .held
            .union(&self.draining())
            .union(&self.claiming)
            .union(&self.written);
        if !renew && self.last_written.as_ref() == Some(&claims) {
            return;
        }
        let sent = Instant::now();
        match self.membership.renew(&claims, self.leaving).await {
            Ok(()) => {
                let acked = Instant::now();
                if self
                    .ownership
                    .valid_until()
                    .is_some_and(|until| acked >= until)
                {
                    // The authority lapsed before this write was acknowledged: the others may
                    // have taken the ranges meanwhile. Hold nothing; claim anew.
                    warn!(replica = %self.id(), "renewal acknowledged after the renew deadline: the replica gives up its ranges and claims anew");
                    self.lapse();
                }
                self.last_renewal = Some(sent);
                self.first_written.get_or_insert(acked);
                self.ownership.extend(sent + self.settings.renew_deadline);
                self.written = self.written.union(&self.claiming);
                self.claiming = Ranges::empty();
                self.announced_leaving = self.leaving && claims.is_empty();
                self.last_written = Some(claims);
            }
            Err(WriteError::Lost(err)) => {
                warn!(replica = %self.id(), error = %err, "the replica's Lease is not what it last wrote: it gives up its ranges and claims anew");
                self.lapse();
                self.last_written = None;
            }
            Err(WriteError::Failed(err)) => {
                warn!(replica = %self.id(), error = %err, "lease renewal failed");
            }
        }
    }

    #[cfg_attr(
        not(feature = "metrics"),
        allow(clippy::unused_self, reason = "reports only with metrics")
    )]
    fn report(&self) {
        #[cfg(feature = "metrics")]
        if let Some(reporter) = &self.reporter {
            reporter.held(&self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_label, membership::lease_name};

    #[test]
    fn groups_are_dns_labels_and_lease_names_tell_group_and_identity_apart() {
        for good in ["a", "config-maps", "a1", &"x".repeat(63)] {
            assert!(is_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"x".repeat(64)] {
            assert!(!is_label(bad), "{bad}");
        }
        // The group has no dot: "a-b" + "c" and "a" + "b-c" are two Leases.
        assert_ne!(lease_name("a-b", "c"), lease_name("a", "b-c"));
    }
}
