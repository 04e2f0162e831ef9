use futures::{Stream, TryStream, TryStreamExt, future};

use crate::{Backoff, Event, StreamBackoff};

/// Adapters for streams of watcher events.
pub trait WatchStreamExt: Stream {
    /// Waits before polling again after an error, with [`Backoff::default`]: exponential from
    /// 800 ms to 30 s, with jitter, reset after 120 s without errors.
    ///
    /// A [`watcher`](crate::watcher) already waits so by default
    /// ([`Config::retry_backoff`](crate::Config::retry_backoff)); polled through this adapter,
    /// it leaves the waiting to the adapter, so the two never add up (see [`StreamBackoff`]).
    fn default_backoff(self) -> StreamBackoff<Self>
    where
        Self: TryStream + Sized,
    {
        StreamBackoff::new(self, Backoff::default())
    }

    /// Waits before polling again after an error, with the given backoff: the way to give a
    /// [`watcher`](crate::watcher) other delays than its own, which this adapter replaces.
    fn backoff(self, backoff: Backoff) -> StreamBackoff<Self>
    where
        Self: TryStream + Sized,
    {
        StreamBackoff::new(self, backoff)
    }

    /// Only the objects that exist: those of `Apply` and `InitApply` events.
    ///
    /// Deletes are dropped; use [`touched_objects`](Self::touched_objects) to see them.
    fn applied_objects<K, E>(self) -> impl Stream<Item = Result<K, E>>
    where
        Self: Stream<Item = Result<Event<K>, E>> + Sized,
    {
        self.try_filter_map(|event| {
            future::ready(Ok(match event {
                Event::Apply(obj) | Event::InitApply(obj) => Some(obj),
                Event::Delete(_) | Event::Init | Event::InitDone => None,
            }))
        })
    }

    /// Every object an event carries: `Apply`, `InitApply` and `Delete`.
    fn touched_objects<K, E>(self) -> impl Stream<Item = Result<K, E>>
    where
        Self: Stream<Item = Result<Event<K>, E>> + Sized,
    {
        self.try_filter_map(|event| future::ready(Ok(event.into_object())))
    }

    /// Changes each carried object before it goes on, as [`Event::modify`] does.
    fn modify<K, E>(self, mut f: impl FnMut(&mut K)) -> impl Stream<Item = Result<Event<K>, E>>
    where
        Self: Stream<Item = Result<Event<K>, E>> + Sized,
    {
        self.map_ok(move |event| event.modify(&mut f))
    }
}

impl<S: Stream> WatchStreamExt for S {}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, TryStreamExt, executor::block_on, stream};

    use super::WatchStreamExt;
    use crate::Event;

    fn events() -> impl futures::Stream<Item = Result<Event<u32>, &'static str>> {
        stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(1)),
            Ok(Event::InitDone),
            Err("boom"),
            Ok(Event::Apply(2)),
            Ok(Event::Delete(1)),
        ])
    }

    #[test]
    fn applied_objects_skips_deletes_and_keeps_errors() {
        let out: Vec<_> = block_on(events().applied_objects().collect());
        assert_eq!(out, [Ok(1), Err("boom"), Ok(2)]);
    }

    #[test]
    fn touched_objects_includes_deletes() {
        let out: Vec<_> = block_on(events().touched_objects().collect());
        assert_eq!(out, [Ok(1), Err("boom"), Ok(2), Ok(1)]);
    }

    #[test]
    fn modify_changes_every_object() {
        let out: Vec<_> = block_on(
            events()
                .modify(|n| *n *= 10)
                .try_filter_map(|e| async move { Ok(e.into_object()) })
                .collect(),
        );
        assert_eq!(out, [Ok(10), Err("boom"), Ok(20), Ok(10)]);
    }
}
