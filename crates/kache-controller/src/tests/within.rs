//! A controller `within` an ownership, the ownership set by hand: what it reconciles, what it
//! refuses and what it stops, on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Event, Writer};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::replicas::Ranges;
use crate::{Action, Config, Controller, Error, Ownership};

#[derive(Debug, thiserror::Error)]
#[error("failed on purpose")]
struct Failed;

fn cm(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("ns".into());
    cm.metadata.uid = Some(format!("uid-{name}"));
    cm.metadata.resource_version = Some("1".into());
    cm
}

fn hash(name: &str) -> u64 {
    kache_watch::uid_hash(&format!("uid-{name}"))
}

/// The range of exactly `name`'s hash.
fn only(name: &str) -> Ranges {
    let h = hash(name);
    Ranges::of(&[kache_watch::ShardRange::new(h, h + 1).unwrap()])
}

type Started = mpsc::UnboundedReceiver<String>;
type Results =
    tokio::task::JoinHandle<Vec<Result<(kache_store::ObjectKey, Action), Error<Failed>>>>;

/// A controller over `names`, within `ownership`, whose reconciles take `work`; their names
/// as they start, and its results.
fn run(
    names: &[&str],
    ownership: &Ownership,
    work: Duration,
) -> (Writer<ConfigMap>, Started, Results) {
    let mut writer = Writer::new();
    writer.apply(Event::Init);
    for name in names {
        writer.apply(Event::InitApply(cm(name)));
    }
    writer.apply(Event::InitDone);
    let (tx, started) = mpsc::unbounded_channel();
    let controller = Controller::new(writer.as_reader(), Config::default())
        .within(ownership.clone())
        .run(
            move |object: Arc<ConfigMap>, _: Arc<()>| {
                let tx = tx.clone();
                async move {
                    tx.send(object.metadata.name.clone().unwrap()).unwrap();
                    tokio::time::sleep(work).await;
                    Ok::<_, Failed>(Action::await_change())
                }
            },
            |_, _, _, _| Action::await_change(),
            Arc::new(()),
        );
    (writer, started, tokio::spawn(controller.collect()))
}

async fn quiet(started: &mut Started) -> Vec<String> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut names = Vec::new();
    while let Ok(name) = started.try_recv() {
        names.push(name);
    }
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn only_the_held_ranges_are_reconciled_and_arriving_ranges_are_queued() {
    let ownership = Ownership::new();
    // Held before the controller starts: reconciled at its first pass.
    ownership.set(only("a"), &Ranges::empty());
    ownership.extend(Instant::now() + Duration::from_secs(3600));
    let (mut writer, mut started, _results) =
        run(&["a", "b", "c"], &ownership, Duration::from_millis(1));
    assert_eq!(quiet(&mut started).await, ["a"]);
    // A change outside the held ranges triggers nothing.
    writer.apply(Event::Apply(cm("b")));
    assert!(quiet(&mut started).await.is_empty());
    // "b" arrives: its objects are queued.
    ownership.set(only("a").union(&only("b")), &Ranges::empty());
    assert_eq!(quiet(&mut started).await, ["b"]);
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_without_a_current_authority() {
    let ownership = Ownership::new();
    ownership.set(Ranges::full(), &Ranges::empty());
    // Held, but never renewed: nothing may start.
    let (_writer, mut started, _results) = run(&["a", "b"], &ownership, Duration::from_millis(1));
    assert!(quiet(&mut started).await.is_empty());
    ownership.extend(Instant::now() + Duration::from_secs(3600));
    assert_eq!(quiet(&mut started).await, ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_whose_range_is_revoked_is_stopped_and_its_range_drains() {
    let ownership = Ownership::new();
    ownership.set(Ranges::full(), &Ranges::empty());
    ownership.extend(Instant::now() + Duration::from_secs(3600));
    let (writer, mut started, results) = run(&["a"], &ownership, Duration::from_secs(600));
    assert_eq!(quiet(&mut started).await, ["a"]);
    assert_eq!(ownership.running_in(&Ranges::full()), 1);
    // Released but still draining: it goes on.
    ownership.set(Ranges::empty(), &Ranges::full());
    assert!(quiet(&mut started).await.is_empty());
    assert_eq!(ownership.running_in(&Ranges::full()), 1);
    // Revoked: stopped at once, and the range is idle.
    ownership.set(Ranges::empty(), &Ranges::empty());
    tokio::time::timeout(Duration::from_secs(1), ownership.idle_in(&Ranges::full()))
        .await
        .expect("the revoked reconcile stops");
    drop(writer);
    let results = results.await.unwrap();
    assert!(
        matches!(results[..], [Err(Error::Revoked { .. })]),
        "{results:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lapsed_authority_stops_the_running_reconciles() {
    let ownership = Ownership::new();
    ownership.set(Ranges::full(), &Ranges::empty());
    ownership.extend(Instant::now() + Duration::from_secs(10));
    let (_writer, mut started, _results) = run(&["a"], &ownership, Duration::from_secs(600));
    assert_eq!(quiet(&mut started).await, ["a"]);
    assert_eq!(ownership.running_in(&Ranges::full()), 1);
    // No renewal: at the deadline the reconcile stops, and nothing starts again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(ownership.running_in(&Ranges::full()), 0);
    assert!(!ownership.may_start(hash("a")));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_controller_releases_its_running_reconciles() {
    let ownership = Ownership::new();
    ownership.set(Ranges::full(), &Ranges::empty());
    ownership.extend(Instant::now() + Duration::from_secs(3600));
    let (_writer, mut started, results) = run(&["a"], &ownership, Duration::from_secs(600));
    assert_eq!(quiet(&mut started).await, ["a"]);
    assert_eq!(ownership.running_in(&Ranges::full()), 1);
    results.abort();
    let _ = results.await;
    assert_eq!(ownership.running_in(&Ranges::full()), 0);
}
