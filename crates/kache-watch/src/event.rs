use std::fmt;

/// One step of a list/watch event stream.
///
/// A stream of events describes a set of objects over time. It always opens with an initial
/// sync (`Init`, any number of `InitApply`, `InitDone`), followed by live `Apply` and `Delete`
/// events. A new initial sync may start at any time (after a `410 Gone`, a failed page, or an
/// interrupted streaming list): a consumer then starts over from the new list.
///
/// The same protocol is spoken by [`watcher`](crate::watcher) and by the subscriber streams of
/// `kache-store`, so code written against one works against the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<K> {
    /// An object was added or modified.
    ///
    /// An `Apply` may arrive between `Init` and `InitDone` from a source that merges event
    /// streams (the [`watcher`](crate::watcher) sends none there): it is a change the list
    /// may predate, so a consumer keeps it in the list being built, as kache-store does.
    Apply(K),
    /// An object was deleted.
    ///
    /// A delete can be missed while the watch is down: the next `InitDone` repairs that, since
    /// an object absent from a complete list is gone. Do not use `Delete` alone to manage
    /// external state; use finalizers for that.
    ///
    /// A `Delete` may also arrive between `Init` and `InitDone` (a streaming list can report
    /// one during its initial events): the object is then not part of the list being built.
    Delete(K),
    /// The stream (re)started an initial list.
    ///
    /// `InitApply` events follow until every matching object has been listed, then `InitDone`.
    /// A consumer that keeps state should start a fresh buffer here and discard any buffer from
    /// an earlier, unfinished `Init`.
    Init,
    /// An object from the initial list (a page of a paged LIST, or an initial event of a
    /// streaming list).
    ///
    /// The set is complete only at `InitDone`: buffer these rather than treating each as live.
    InitApply(K),
    /// The initial list is complete.
    ///
    /// The objects seen as `InitApply` since the last `Init` are the whole state: an object
    /// applied before but absent from them has been deleted. No `InitApply` follows until the
    /// next `Init`.
    InitDone,
}

impl<K> Event<K> {
    /// Changes the object carried by this event in place, if it carries one.
    ///
    /// Useful for saving memory before objects reach a store, for example by dropping
    /// `metadata.managedFields`.
    ///
    /// ```
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// use kache_watch::Event;
    ///
    /// let mut cm = ConfigMap::default();
    /// cm.metadata.managed_fields = Some(vec![Default::default()]);
    /// let event = Event::Apply(cm).modify(|cm| cm.metadata.managed_fields = None);
    /// assert!(matches!(event, Event::Apply(cm) if cm.metadata.managed_fields.is_none()));
    /// ```
    #[must_use]
    pub fn modify(mut self, mut f: impl FnMut(&mut K)) -> Self {
        match &mut self {
            Self::Apply(obj) | Self::Delete(obj) | Self::InitApply(obj) => f(obj),
            Self::Init | Self::InitDone => {}
        }
        self
    }

    /// Converts the object carried by this event, keeping the kind of event.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kache_watch::Event;
    ///
    /// let shared: Event<Arc<u32>> = Event::Apply(7).map(Arc::new);
    /// assert_eq!(shared, Event::Apply(Arc::new(7)));
    /// ```
    pub fn map<T>(self, f: impl FnOnce(K) -> T) -> Event<T> {
        match self {
            Self::Apply(obj) => Event::Apply(f(obj)),
            Self::Delete(obj) => Event::Delete(f(obj)),
            Self::InitApply(obj) => Event::InitApply(f(obj)),
            Self::Init => Event::Init,
            Self::InitDone => Event::InitDone,
        }
    }

    /// The object carried by this event, if any.
    pub fn object(&self) -> Option<&K> {
        match self {
            Self::Apply(obj) | Self::Delete(obj) | Self::InitApply(obj) => Some(obj),
            Self::Init | Self::InitDone => None,
        }
    }

    /// The object carried by this event, if any, by value.
    pub fn into_object(self) -> Option<K> {
        match self {
            Self::Apply(obj) | Self::Delete(obj) | Self::InitApply(obj) => Some(obj),
            Self::Init | Self::InitDone => None,
        }
    }

    /// The objects that this event says exist: the one in `Apply` or `InitApply`.
    ///
    /// Kept for drop-in migration from kube-runtime, whose old `Event::Restarted(Vec<K>)`
    /// carried many objects; prefer matching on the event.
    #[deprecated(
        since = "0.1.0",
        note = "match on the event instead; use `applied_objects()` on a stream"
    )]
    pub fn into_iter_applied(self) -> impl Iterator<Item = K> {
        match self {
            Self::Apply(obj) | Self::InitApply(obj) => Some(obj),
            Self::Delete(_) | Self::Init | Self::InitDone => None,
        }
        .into_iter()
    }

    /// The objects this event touches: the one in `Apply`, `InitApply` or `Delete`.
    ///
    /// Kept for drop-in migration from kube-runtime; prefer matching on the event.
    #[deprecated(
        since = "0.1.0",
        note = "match on the event instead; use `touched_objects()` on a stream"
    )]
    pub fn into_iter_touched(self) -> impl Iterator<Item = K> {
        self.into_object().into_iter()
    }
}

impl<K> fmt::Display for Event<K>
where
    K: kube_client::ResourceExt,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Init => f.write_str("Init"),
            Self::InitDone => f.write_str("InitDone"),
            Self::Apply(obj) => write!(f, "Apply({})", obj.name_any()),
            Self::Delete(obj) => write!(f, "Delete({})", obj.name_any()),
            Self::InitApply(obj) => write!(f, "InitApply({})", obj.name_any()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn modify_changes_carried_object_only() {
        let add = |n: &mut u32| *n += 1;
        assert_eq!(Event::Apply(1).modify(add), Event::Apply(2));
        assert_eq!(Event::Delete(1).modify(add), Event::Delete(2));
        assert_eq!(Event::InitApply(1).modify(add), Event::InitApply(2));
        assert_eq!(Event::<u32>::Init.modify(add), Event::Init);
        assert_eq!(Event::<u32>::InitDone.modify(add), Event::InitDone);
    }

    #[test]
    #[allow(deprecated)] // the deprecated helpers are what is under test
    fn deprecated_iterators_match_kube_runtime() {
        assert_eq!(Event::Apply(1).into_iter_applied().collect::<Vec<_>>(), [1]);
        assert_eq!(
            Event::InitApply(1).into_iter_applied().collect::<Vec<_>>(),
            [1]
        );
        assert!(Event::Delete(1).into_iter_applied().next().is_none());
        assert_eq!(
            Event::Delete(1).into_iter_touched().collect::<Vec<_>>(),
            [1]
        );
        assert!(Event::<u32>::InitDone.into_iter_touched().next().is_none());
    }
}
