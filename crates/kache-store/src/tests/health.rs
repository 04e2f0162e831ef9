//! Health: error streaks, the one warning per streak, and failing fast on refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_watch::{Error as WatchError, ErrorClass, Event};
use kube_client::core::Status;

use crate::{Error, ReflectExt, Writer};

pub(super) fn status(code: u16) -> WatchError {
    let status = Status::failure("configmaps is forbidden", "Forbidden").with_code(code);
    WatchError::InitialListFailed(kube_client::Error::Api(Box::new(status)))
}

type Item = Result<Event<ConfigMap>, WatchError>;

#[tokio::test]
async fn errors_in_a_row_make_a_streak_that_an_ok_item_ends() {
    let writer = Writer::<ConfigMap>::new().with_name("config");
    let store = writer.as_reader();
    let items: Vec<Item> = vec![Err(status(500)), Err(status(403)), Ok(Event::Init)];
    let mut reflected = Box::pin(stream::iter(items).reflect(writer));

    assert!(store.health().failing.is_none());
    let _ = reflected.next().await;
    let first = store.health().failing.expect("one error");
    assert_eq!(
        (first.attempts, first.class),
        (1, Some(ErrorClass::ServerError))
    );
    let _ = reflected.next().await;
    let health = store.health();
    let second = health.failing.clone().expect("two errors");
    assert_eq!(
        (second.attempts, second.class),
        (2, Some(ErrorClass::Forbidden))
    );
    assert_eq!(second.since, first.since, "the streak began with the first");
    assert!(health.is_refused() && !health.is_ready());
    assert!(
        health.to_string().starts_with(
            "config: not synced; 2 attempts in a row failed over 0.0 s (forbidden), the last: "
        ),
        "{health}"
    );

    let _ = reflected.next().await;
    assert!(store.health().failing.is_none(), "an Ok item ends it");
}

#[tokio::test]
async fn an_error_of_another_type_counts_without_a_class() {
    let writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    let items = stream::iter([Err::<Event<ConfigMap>, _>("boom")]);
    items.reflect(writer).for_each(|_| async {}).await;
    let failing = store.health().failing.expect("one error");
    assert_eq!(failing.class, None);
    assert!(failing.error.contains("&str"), "{}", failing.error);
}

#[tokio::test]
async fn wait_synced_or_fail_fails_fast_on_a_refusal_only() {
    for (code, refused) in [(403, true), (404, true), (500, false), (410, false)] {
        let writer = Writer::<ConfigMap>::new();
        let store = writer.as_reader();
        // The error, then a stream that never ends: the store never syncs.
        let items = stream::iter([Err(status(code))]).chain(stream::pending::<Item>());
        let task = tokio::spawn(items.reflect(writer).for_each(|_| async {}));
        let waited =
            tokio::time::timeout(Duration::from_millis(200), store.wait_synced_or_fail()).await;
        if refused {
            match waited {
                Ok(Err(Error::WatchRefused { class, message })) => {
                    assert!(class.is_persistent());
                    assert!(message.contains("forbidden"), "{message}");
                }
                other => panic!("{code}: expected a refusal, got {other:?}"),
            }
        } else {
            assert!(waited.is_err(), "{code}: keeps waiting, got {waited:?}");
        }
        task.abort();
    }
}

#[tokio::test]
async fn wait_synced_or_fail_resolves_once_synced_and_fails_when_the_writer_goes() {
    let mut writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    let wait = tokio::spawn({
        let store = store.clone();
        async move { store.wait_synced_or_fail().await }
    });
    tokio::task::yield_now().await;
    writer.apply(Event::Init);
    writer.apply(Event::InitDone);
    assert_eq!(wait.await.unwrap(), Ok(()));

    let writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    drop(writer);
    assert_eq!(store.wait_synced_or_fail().await, Err(Error::WriterDropped));
}

/// Counts the warnings logged while it is the default subscriber.
struct CountWarnings(Arc<AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn a_streak_warns_once_at_its_first_refusal_or_after_a_few_other_errors() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(CountWarnings(Arc::clone(&warnings)));
    let run = |items: Vec<Item>| {
        let writer = Writer::<ConfigMap>::new();
        warnings.store(0, Ordering::Relaxed);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(stream::iter(items).reflect(writer).for_each(|_| async {}));
        warnings.load(Ordering::Relaxed)
    };
    let forbidden = || (0..20).map(|_| Err(status(403)));
    assert_eq!(run(forbidden().collect()), 1, "one warning for 20 refusals");
    let unavailable = |n| (0..n).map(|_| Err(status(503)));
    assert_eq!(run(unavailable(4).collect()), 0, "a short streak is quiet");
    assert_eq!(run(unavailable(20).collect()), 1, "a long one warns once");
    assert_eq!(
        run(unavailable(5).chain(forbidden()).collect()),
        2,
        "a refusal says so even after a warning for the streak"
    );
    let two_streaks = forbidden()
        .chain([Ok(Event::Init)])
        .chain(forbidden())
        .collect();
    assert_eq!(run(two_streaks), 2, "one per streak");
}
