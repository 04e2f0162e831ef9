//! Metrics: what each counter and gauge reads after a known sequence of items.
#![expect(
    clippy::float_cmp,
    reason = "the samples compared are small integers, exact in f64"
)]

use std::collections::BTreeMap;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_watch::{Error as WatchError, Event};
use kube_client::core::Status;
use prometheus_client::{encoding::text::encode, registry::Registry};

use super::health::status;
use super::subscriber::cm;
use crate::{Metrics, ReflectExt, Writer};

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Metrics>();
    assert_send_sync::<crate::Health>();
};

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(registry: &Registry) -> BTreeMap<String, f64> {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn gone() -> WatchError {
    let status = Status::failure("too old resource version", "Expired").with_code(410);
    WatchError::WatchError(Box::new(status))
}

#[tokio::test]
async fn counters_follow_events_relist_causes_and_error_classes() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let writer = Writer::<ConfigMap>::new().with_metrics(&metrics, "config");
    let store = writer.as_reader();
    let items: Vec<Result<Event<ConfigMap>, WatchError>> = vec![
        Err(status(403)),
        Ok(Event::Init), // first sync
        Ok(Event::InitApply(cm("a", 1))),
        Ok(Event::InitDone),
        Ok(Event::Apply(cm("b", 2))),
        Ok(Event::Delete(cm("a", 3))),
        Err(gone()),
        Err(status(503)),
        Ok(Event::Init), // after a 410, despite the 503 in between
        Ok(Event::InitApply(cm("b", 2))),
        Err(status(500)),
        Ok(Event::Init), // an unfinished list restarted
        Ok(Event::InitApply(cm("b", 2))),
        Ok(Event::InitApply(cm("c", 4))),
        Ok(Event::InitDone),
        Err(WatchError::NoResourceVersion),
        Ok(Event::Init), // another cause
        Ok(Event::InitDone),
    ];
    stream::iter(items)
        .reflect(writer)
        .for_each(|_| async {})
        .await;

    let samples = scrape(&registry);
    let expect = |series: &str, value: f64| {
        let name = format!("kache_{series}");
        assert_eq!(samples.get(&name), Some(&value), "{name} in {samples:#?}");
    };
    for (kind, count) in [
        ("init", 4.0),
        ("init_apply", 4.0),
        ("init_done", 3.0),
        ("apply", 1.0),
        ("delete", 1.0),
    ] {
        expect(
            &format!(r#"events_total{{cache="config",type="{kind}"}}"#),
            count,
        );
    }
    for cause in ["first_sync", "gone", "unfinished_list", "other"] {
        expect(
            &format!(r#"relists_total{{cache="config",cause="{cause}"}}"#),
            1.0,
        );
    }
    for (class, count) in [
        ("forbidden", 1.0),
        ("not_found", 0.0),
        ("gone", 1.0),
        ("client_error", 0.0),
        ("server_error", 2.0),
        ("network", 0.0),
        ("decode", 1.0),
    ] {
        expect(
            &format!(r#"errors_total{{cache="config",class="{class}"}}"#),
            count,
        );
    }
    expect(r#"objects{cache="config"}"#, 0.0);
    expect(r#"synced{cache="config"}"#, 1.0);
    expect(r#"consecutive_errors{cache="config"}"#, 0.0);
    expect(r#"subscribers{cache="config"}"#, 0.0);
    // Nothing came from a real watcher: no watch, no bookmark, no wait.
    expect(r#"watch_starts_total{cache="config"}"#, 0.0);
    expect(r#"watch_resumes_total{cache="config"}"#, 0.0);
    expect(r#"bookmarks_total{cache="config"}"#, 0.0);
    expect(r#"backpressure_wait_seconds_total{cache="config"}"#, 0.0);
    assert!(samples[r#"kache_initial_sync_duration_seconds{cache="config"}"#] >= 0.0);
    assert!(samples[r#"kache_last_event_age_seconds{cache="config"}"#] >= 0.0);
    assert!(
        !samples.contains_key(r#"kache_last_bookmark_age_seconds{cache="config"}"#),
        "no bookmark yet: no series"
    );
    drop(store);
}

#[tokio::test]
async fn named_subscribers_report_their_lag_and_resyncs() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let mut writer = Writer::<ConfigMap>::new()
        .with_buffer(2)
        .with_metrics(&metrics, "config");
    let mut named = writer.subscribe().with_name("slow");
    let _unnamed = writer.subscribe();
    writer.apply(Event::Init);
    writer.apply(Event::InitDone);
    for rv in 1..=5 {
        writer.apply(Event::Apply(cm("a", rv)));
    }
    let samples = scrape(&registry);
    let lag = r#"kache_subscriber_lag{cache="config",subscriber="slow"}"#;
    let resyncs = r#"kache_subscriber_resyncs_total{cache="config",subscriber="slow"}"#;
    assert_eq!(samples[lag], 6.0, "the first sync and 5 changes");
    assert_eq!(samples[resyncs], 0.0);
    assert_eq!(samples[r#"kache_subscribers{cache="config"}"#], 2.0);

    // It reads: its first snapshot (Init, InitApply, InitDone), then finds it fell behind,
    // and is resynced.
    for _ in 0..3 {
        named.next().await;
    }
    assert_eq!(scrape(&registry)[lag], 0.0, "caught up");
    writer.apply(Event::Apply(cm("a", 6)));
    writer.apply(Event::Apply(cm("a", 7)));
    writer.apply(Event::Apply(cm("a", 8)));
    named.next().await; // the overflow: a resync begins
    let samples = scrape(&registry);
    assert_eq!(samples[resyncs], 1.0);

    drop(named);
    let samples = scrape(&registry);
    assert!(
        !samples.contains_key(lag),
        "a dropped subscriber is no longer reported"
    );
    assert_eq!(samples[r#"kache_subscribers{cache="config"}"#], 1.0);
}

#[test]
fn caches_with_the_same_name_are_told_apart_and_dropped_ones_disappear() {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let first = Writer::<ConfigMap>::new().with_metrics(&metrics, "pods");
    let second = Writer::<ConfigMap>::new().with_metrics(&metrics, "pods");
    assert_eq!(second.as_reader().health().name.as_ref(), "pods-2");
    let samples = scrape(&registry);
    assert!(samples.contains_key(r#"kache_objects{cache="pods"}"#));
    assert!(samples.contains_key(r#"kache_objects{cache="pods-2"}"#));

    drop(first);
    let samples = scrape(&registry);
    assert!(!samples.contains_key(r#"kache_objects{cache="pods"}"#));
    assert!(samples.contains_key(r#"kache_objects{cache="pods-2"}"#));
    drop(second);
    assert!(scrape(&registry).is_empty(), "no cache, no sample");
}
