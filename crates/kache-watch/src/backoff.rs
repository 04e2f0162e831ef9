use std::{
    cell::Cell,
    future::Future,
    hash::{BuildHasher, RandomState},
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::{Stream, TryStream};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// Exponential backoff with jitter that resets after a healthy period.
///
/// The defaults follow kube-runtime and client-go: start at 800 ms, double up to 30 s, jitter
/// each delay by up to ±25 %, and start again from the bottom once 120 s pass without an error.
/// The [`watcher`](crate::watcher) waits with them after an error
/// ([`Config::retry_backoff`](crate::Config::retry_backoff)); give it other values with
/// [`WatchStreamExt::backoff`](crate::WatchStreamExt::backoff).
///
/// ```
/// use std::time::Duration;
/// use kache_watch::Backoff;
///
/// let mut backoff = Backoff::default().jitter(0.0);
/// assert_eq!(backoff.next_delay(), Duration::from_millis(800));
/// assert_eq!(backoff.next_delay(), Duration::from_millis(1600));
/// backoff.reset();
/// assert_eq!(backoff.next_delay(), Duration::from_millis(800));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    reset_after: Duration,
    current: Option<Duration>,
    /// When the last error was met, to start over after `reset_after` without one.
    last_error: Option<Instant>,
    rng: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(800),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.25,
            reset_after: Duration::from_secs(120),
            current: None,
            last_error: None,
            // A per-process random seed, without a dependency on a random number crate.
            rng: RandomState::new().hash_one(0_u8) | 1,
        }
    }
}

impl Backoff {
    /// Sets the first delay.
    #[must_use]
    pub fn initial(mut self, delay: Duration) -> Self {
        self.initial = delay;
        self
    }

    /// Sets the longest delay.
    #[must_use]
    pub fn max(mut self, delay: Duration) -> Self {
        self.max = delay;
        self
    }

    /// Sets how much each delay grows over the last (at least 1).
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor.max(1.0);
        self
    }

    /// Sets the jitter: each delay is scaled by a random factor in `1 ± jitter` (0 to 1).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// Sets how long the stream must go without an error for the backoff to start over.
    #[must_use]
    pub fn reset_after(mut self, period: Duration) -> Self {
        self.reset_after = period;
        self
    }

    /// Starts the sequence of delays over.
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// The delay to wait after an error met at `now`: the next in the sequence, which starts
    /// over first if the previous error is `reset_after` old.
    pub(crate) fn delay_after_error(&mut self, now: Instant) -> Duration {
        if self
            .last_error
            .is_some_and(|last| now.duration_since(last) >= self.reset_after)
        {
            self.reset();
        }
        self.last_error = Some(now);
        self.next_delay()
    }

    /// `delay`, or the server's `Retry-After` if that is longer, at most the longest delay.
    pub(crate) fn at_least(&self, delay: Duration, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(asked) if asked > delay => {
                let wait = asked.min(self.max.max(delay));
                tracing::debug!(
                    ?wait,
                    "the server asked to wait before retrying (Retry-After)"
                );
                wait
            }
            _ => delay,
        }
    }

    /// The next delay in the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let base = match self.current {
            None => self.initial,
            Some(last) => last.mul_f64(self.factor).min(self.max),
        };
        self.current = Some(base);
        if self.jitter == 0.0 {
            return base;
        }
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        #[allow(clippy::cast_precision_loss)] // 53 bits of randomness are plenty for jitter
        let unit = (self.rng >> 11) as f64 / (1_u64 << 53) as f64;
        base.mul_f64(1.0 + self.jitter * (2.0 * unit - 1.0))
    }
}

pin_project! {
    /// A stream that waits, with a growing delay, before polling its inner stream again after
    /// an error. Made by [`WatchStreamExt::backoff`](crate::WatchStreamExt::backoff).
    ///
    /// A [`watcher`](crate::watcher) that this stream polls (directly, or through adapters
    /// that poll it from within their own poll, such as `reflect`, `map` or `modify`) leaves
    /// the waiting to it: the watcher's own [`Config::retry_backoff`](crate::Config::retry_backoff)
    /// stands aside, so each error is followed by this stream's wait alone. A watcher polled
    /// elsewhere (on another task, behind a channel) keeps its own wait, and the two add up.
    #[must_use = "streams do nothing unless polled"]
    #[derive(Debug)]
    pub struct StreamBackoff<S> {
        #[pin]
        stream: S,
        backoff: Backoff,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<S> StreamBackoff<S> {
    pub(crate) fn new(stream: S, backoff: Backoff) -> Self {
        Self {
            stream,
            backoff,
            sleep: None,
        }
    }
}

thread_local! {
    // Thread-local for the reason `progress` gives: a poll runs on one thread from start to
    // end, so a watcher polled inside a `StreamBackoff`'s poll is the one it spaces.

    /// How many `StreamBackoff`s are polling their inner stream on this thread.
    static SPACING: Cell<u32> = const { Cell::new(0) };

    /// The `Retry-After` of the error a watcher polled by a `StreamBackoff` just yielded.
    static RETRY_AFTER: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Tells the enclosing [`StreamBackoff`], if any, that the server asked to wait `wait` before
/// the next request.
pub(crate) fn hint_retry_after(wait: Duration) {
    if spaced_by_adapter() {
        RETRY_AFTER.set(Some(wait));
    }
}

/// Whether a [`StreamBackoff`] encloses the current poll: it waits after each error before it
/// polls again, so a watcher inside it need not.
pub(crate) fn spaced_by_adapter() -> bool {
    SPACING.get() > 0
}

/// Marks a `StreamBackoff`'s poll of its inner stream, until dropped (on unwind too).
struct Spacing;

impl Spacing {
    fn enter() -> Self {
        SPACING.set(SPACING.get() + 1);
        Self
    }
}

impl Drop for Spacing {
    fn drop(&mut self) {
        SPACING.set(SPACING.get() - 1);
    }
}

impl<S: TryStream> Stream for StreamBackoff<S> {
    type Item = Result<S::Ok, S::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if let Some(sleep) = this.sleep.as_mut().as_pin_mut() {
            ready!(sleep.poll(cx));
            this.sleep.set(None);
        }
        let item = {
            let _spacing = Spacing::enter();
            ready!(this.stream.try_poll_next(cx))
        };
        let retry_after = RETRY_AFTER.take();
        if let Some(Err(_)) = &item {
            let delay = this.backoff.delay_after_error(Instant::now());
            let delay = this.backoff.at_least(delay, retry_after);
            tracing::debug!(?delay, "backing off after a watcher error");
            this.sleep.set(Some(tokio::time::sleep(delay)));
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{StreamExt, stream};

    use super::{Backoff, StreamBackoff};

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::default().jitter(0.0).max(Duration::from_secs(3));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [800, 1600, 3000, 3000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(800));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut b = Backoff::default().jitter(0.5).factor(1.0);
        for _ in 0..1000 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(400) && d <= Duration::from_millis(1200),
                "{d:?}"
            );
        }
    }

    #[test]
    fn delays_after_errors_start_over_after_a_healthy_period() {
        let mut b = Backoff::default()
            .jitter(0.0)
            .reset_after(Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        let after = |secs| start + Duration::from_secs(secs);
        assert_eq!(b.delay_after_error(after(0)), Duration::from_millis(800));
        assert_eq!(b.delay_after_error(after(9)), Duration::from_millis(1600));
        assert_eq!(b.delay_after_error(after(19)), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_after_an_error_only() {
        let items = stream::iter([Ok(1), Err("boom"), Ok(2)]);
        let mut s = Box::pin(StreamBackoff::new(items, Backoff::default().jitter(0.0)));
        let start = tokio::time::Instant::now();
        assert_eq!(s.next().await, Some(Ok(1)));
        assert_eq!(s.next().await, Some(Err("boom")));
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(s.next().await, Some(Ok(2)));
        assert_eq!(start.elapsed(), Duration::from_millis(800));
    }
}
