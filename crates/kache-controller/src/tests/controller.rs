//! The controller over stores fed by hand, on tokio's paused clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kache_store::{Event, Writer};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::{Action, Config, Controller, Error, Retry, record};

#[derive(Debug, thiserror::Error)]
#[error("failed on purpose")]
struct Failed;

fn cm(name: &str, version: u64) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.namespace = Some("ns".into());
    cm.metadata.uid = Some(format!("uid-{name}"));
    cm.metadata.resource_version = Some(version.to_string());
    cm
}

fn child_of(parent: &str, version: u64) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(format!("{parent}-child"));
    secret.metadata.namespace = Some("ns".into());
    secret.metadata.uid = Some(format!("uid-{parent}-child"));
    secret.metadata.resource_version = Some(version.to_string());
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: parent.into(),
        uid: format!("uid-{parent}"),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    secret
}

fn synced(objects: &[ConfigMap]) -> Writer<ConfigMap> {
    let mut writer = Writer::new();
    writer.apply(Event::Init);
    for object in objects {
        writer.apply(Event::InitApply(object.clone()));
    }
    writer.apply(Event::InitDone);
    writer
}

fn no_retry(_: Arc<ConfigMap>, _: &Failed, _: Arc<()>, _: Retry) -> Action {
    Action::await_change()
}

/// The names of the reconciles as they start, sent from inside them.
fn starts() -> (
    mpsc::UnboundedSender<String>,
    mpsc::UnboundedReceiver<String>,
) {
    mpsc::unbounded_channel()
}

async fn next_start(starts: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(60), starts.recv())
        .await
        .expect("a reconcile starts")
        .expect("the controller runs")
}

#[tokio::test(start_paused = true)]
async fn every_object_is_reconciled_after_the_sync_and_again_on_each_change() {
    let mut writer = synced(&[cm("a", 1), cm("b", 2)]);
    let (tx, mut started) = starts();
    let controller = Controller::new(writer.as_reader(), Config::default()).run(
        move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
            let tx = tx.clone();
            async move {
                tx.send(object.metadata.name.clone().unwrap()).unwrap();
                Ok::<_, Failed>(Action::await_change())
            }
        },
        no_retry,
        Arc::new(()),
    );
    let results = tokio::spawn(controller.collect::<Vec<_>>());
    let mut first = vec![
        next_start(&mut started).await,
        next_start(&mut started).await,
    ];
    first.sort();
    assert_eq!(first, ["a", "b"]);
    writer.apply(Event::Apply(cm("b", 3)));
    assert_eq!(next_start(&mut started).await, "b");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(started.try_recv().is_err(), "nothing else changed");
    drop(writer);
    let results = results.await.unwrap();
    assert_eq!(
        results.len(),
        3,
        "the stream ends with the stores: {results:?}"
    );
    assert!(results.iter().all(Result::is_ok));
}

#[tokio::test(start_paused = true)]
async fn one_reconcile_of_an_object_at_a_time_and_a_change_during_it_runs_it_once_more() {
    let mut writer = synced(&[cm("a", 1)]);
    let (tx, mut started) = starts();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (Arc::clone(&running), Arc::clone(&most));
    let controller = Controller::new(writer.as_reader(), Config::default().concurrency(4)).run(
        move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
            let (tx, running, most) = (tx.clone(), Arc::clone(&r), Arc::clone(&m));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tx.send(object.metadata.resource_version.clone().unwrap())
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Failed>(Action::await_change())
            }
        },
        no_retry,
        Arc::new(()),
    );
    tokio::spawn(controller.for_each(|_| async {}));
    assert_eq!(next_start(&mut started).await, "1");
    // Three changes while it runs: one more reconcile, of the newest.
    for version in 2..=4 {
        writer.apply(Event::Apply(cm("a", version)));
    }
    assert_eq!(next_start(&mut started).await, "4");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(started.try_recv().is_err(), "once more, not three times");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconcile_fails_alone_and_is_retried_with_its_backoff() {
    let writer = synced(&[cm("a", 1), cm("b", 2)]);
    let attempts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let seen = Arc::clone(&attempts);
    let controller = Controller::new(writer.as_reader(), Config::default()).run(
        move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
            let seen = Arc::clone(&seen);
            async move {
                let name = object.metadata.name.clone().unwrap();
                let attempt = {
                    let mut seen = seen.lock();
                    let attempt = seen.entry(name.clone()).or_default();
                    *attempt += 1;
                    *attempt
                };
                assert!(!(name == "a" && attempt < 3), "a panic in a reconcile");
                Ok::<_, Failed>(Action::await_change())
            }
        },
        no_retry,
        Arc::new(()),
    );
    let results: Vec<_> = controller.take(4).collect().await;
    let panics = results
        .iter()
        .filter(|result| matches!(result, Err(Error::ReconcilePanicked { key, .. }) if key.name() == "a"))
        .count();
    assert_eq!(panics, 2, "{results:?}");
    let done: Vec<_> = results
        .iter()
        .filter_map(|result| result.as_ref().ok())
        .map(|(key, _)| key.name().to_owned())
        .collect();
    assert_eq!(done.len(), 2);
    assert!(done.contains(&"a".to_owned()) && done.contains(&"b".to_owned()));
    drop(writer);
}

#[tokio::test(start_paused = true)]
async fn the_error_policy_learns_the_attempt_which_a_success_resets() {
    let writer = synced(&[cm("a", 1)]);
    let calls = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(Mutex::new(Vec::new()));
    let (c, r) = (Arc::clone(&calls), Arc::clone(&retries));
    let controller = Controller::new(writer.as_reader(), Config::default()).run(
        move |_: Arc<ConfigMap>, _ctx: Arc<()>| {
            let call = c.fetch_add(1, Ordering::SeqCst);
            async move {
                // Fails twice, succeeds (requeueing itself), then fails again.
                match call {
                    0 | 1 | 3 => Err(Failed),
                    _ => Ok(Action::requeue(Duration::from_secs(1))),
                }
            }
        },
        move |_: Arc<ConfigMap>, _: &Failed, _: Arc<()>, retry: Retry| {
            r.lock().push((retry.attempt, retry.backoff));
            Action::requeue(retry.backoff)
        },
        Arc::new(()),
    );
    let _: Vec<_> = controller.take(4).collect().await;
    let retries = retries.lock().clone();
    assert_eq!(
        retries,
        [
            (1, Duration::from_millis(5)),
            (2, Duration::from_millis(10)),
            (1, Duration::from_millis(5)),
        ]
    );
    drop(writer);
}

#[tokio::test(start_paused = true)]
async fn a_fence_holds_the_next_reconcile_until_the_store_shows_the_write() {
    for fences in [true, false] {
        let mut parents = synced(&[cm("a", 1)]);
        let mut children = Writer::<Secret>::new();
        children.apply(Event::Init);
        children.apply(Event::InitDone);
        let (tx, mut started) = starts();
        let config = Config::default().fences(fences, Duration::from_secs(30));
        let controller = Controller::new(parents.as_reader(), config)
            .owns(children.as_reader())
            .run(
                move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
                    let tx = tx.clone();
                    async move {
                        let version = object.metadata.resource_version.clone().unwrap();
                        tx.send(version).unwrap();
                        // What a create of the child returned; the watch has not delivered it.
                        assert!(record(&child_of("a", 10)));
                        Ok::<_, Failed>(Action::await_change())
                    }
                },
                no_retry,
                Arc::new(()),
            );
        tokio::spawn(controller.for_each(|_| async {}));
        assert_eq!(next_start(&mut started).await, "1");
        tokio::time::sleep(Duration::from_millis(10)).await;
        parents.apply(Event::Apply(cm("a", 2)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        if fences {
            assert!(
                started.try_recv().is_err(),
                "held while the cache lacks the write"
            );
            children.apply(Event::Apply(child_of("a", 10)));
            assert_eq!(next_start(&mut started).await, "2", "woken by the store");
        } else {
            assert_eq!(
                started.try_recv().ok().as_deref(),
                Some("2"),
                "without fences, at once"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_fence_never_delays_another_object_and_gives_up_at_its_timeout() {
    let mut parents = synced(&[cm("a", 1), cm("b", 1)]);
    let children = Writer::<Secret>::new();
    let (tx, mut started) = starts();
    let config = Config::default().fences(true, Duration::from_secs(20));
    let controller = Controller::new(parents.as_reader(), config)
        .owns(children.as_reader())
        .run(
            move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
                let tx = tx.clone();
                async move {
                    let name = object.metadata.name.clone().unwrap();
                    let version = object.metadata.resource_version.clone().unwrap();
                    if name == "a" {
                        record(&child_of("a", 10));
                    }
                    tx.send(format!("{name}{version}")).unwrap();
                    Ok::<_, Failed>(Action::await_change())
                }
            },
            no_retry,
            Arc::new(()),
        );
    tokio::spawn(controller.for_each(|_| async {}));
    let mut first = vec![
        next_start(&mut started).await,
        next_start(&mut started).await,
    ];
    first.sort();
    assert_eq!(first, ["a1", "b1"]);
    let fenced_at = tokio::time::Instant::now();
    parents.apply(Event::Apply(cm("a", 2)));
    parents.apply(Event::Apply(cm("b", 2)));
    assert_eq!(
        next_start(&mut started).await,
        "b2",
        "b is not held by a's writes"
    );
    assert_eq!(next_start(&mut started).await, "a2", "after the timeout");
    assert!(fenced_at.elapsed() >= Duration::from_secs(19));
    drop(children);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_starts_nothing_new_and_lets_running_reconciles_finish() {
    let mut writer = synced(&[cm("a", 1)]);
    let (tx, mut started) = starts();
    let finished = Arc::new(AtomicUsize::new(0));
    let done = Arc::clone(&finished);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(writer.as_reader(), Config::default())
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(
            move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
                let (tx, done) = (tx.clone(), Arc::clone(&done));
                async move {
                    tx.send(object.metadata.resource_version.clone().unwrap())
                        .unwrap();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Failed>(Action::await_change())
                }
            },
            no_retry,
            Arc::new(()),
        );
    let results = tokio::spawn(controller.collect::<Vec<_>>());
    assert_eq!(next_start(&mut started).await, "1");
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.apply(Event::Apply(cm("a", 2)));
    let results = tokio::time::timeout(Duration::from_secs(60), results)
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the running one finished"
    );
    assert!(started.try_recv().is_err(), "nothing new started");
}

#[tokio::test(start_paused = true)]
async fn a_new_child_is_awaited_in_the_owns_store_not_in_another_store_of_its_kind() {
    // Parents and children of one kind: the parents' store passes the child's version (other
    // parents change), which must not lift the fence.
    let mut parents = synced(&[cm("a", 1), cm("b", 2)]);
    let mut children = Writer::<ConfigMap>::new();
    children.apply(Event::Init);
    children.apply(Event::InitDone);
    let mut child = cm("a-child", 10);
    child.metadata.owner_references = child_of("a", 10).metadata.owner_references;
    let created = child.clone();
    let (tx, mut started) = starts();
    let controller = Controller::new(parents.as_reader(), Config::default())
        .owns(children.as_reader())
        .run(
            move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
                let (tx, created) = (tx.clone(), created.clone());
                async move {
                    let name = object.metadata.name.clone().unwrap();
                    if name == "a" {
                        record(&created);
                        tx.send(object.metadata.resource_version.clone().unwrap())
                            .unwrap();
                    }
                    Ok::<_, Failed>(Action::await_change())
                }
            },
            no_retry,
            Arc::new(()),
        );
    tokio::spawn(controller.for_each(|_| async {}));
    assert_eq!(next_start(&mut started).await, "1");
    tokio::time::sleep(Duration::from_millis(10)).await;
    parents.apply(Event::Apply(cm("b", 20)));
    parents.apply(Event::Apply(cm("a", 21)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        started.try_recv().is_err(),
        "the parents' store passing 10 shows no child"
    );
    children.apply(Event::Apply(child));
    assert_eq!(next_start(&mut started).await, "21");
}

#[tokio::test(start_paused = true)]
async fn a_child_deleted_while_its_store_overflowed_still_reconciles_its_owner() {
    let parents = synced(&[cm("a", 1)]);
    let mut children = Writer::<Secret>::new().with_buffer(2);
    children.apply(Event::Init);
    children.apply(Event::InitApply(child_of("a", 5)));
    children.apply(Event::InitDone);
    let (tx, mut started) = starts();
    let controller = Controller::new(parents.as_reader(), Config::default())
        .owns(children.as_reader())
        .run(
            move |object: Arc<ConfigMap>, _ctx: Arc<()>| {
                let tx = tx.clone();
                async move {
                    tx.send(object.metadata.name.clone().unwrap()).unwrap();
                    Ok::<_, Failed>(Action::await_change())
                }
            },
            no_retry,
            Arc::new(()),
        );
    tokio::spawn(controller.for_each(|_| async {}));
    assert_eq!(next_start(&mut started).await, "a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(started.try_recv().is_err());
    // While the controller's task does not run: the child goes, then unrelated secrets come,
    // more than the subscriber's buffer holds.
    children.apply(Event::Delete(child_of("a", 6)));
    for i in 0..10 {
        let mut other = Secret::default();
        other.metadata.name = Some(format!("other-{i}"));
        other.metadata.namespace = Some("ns".into());
        other.metadata.resource_version = Some((10 + i).to_string());
        children.apply(Event::Apply(other));
    }
    assert_eq!(
        next_start(&mut started).await,
        "a",
        "the deleted child's owner"
    );
}

#[test]
fn the_backoff_policy_requeues_after_the_objects_backoff() {
    let retry = Retry {
        attempt: 3,
        backoff: Duration::from_millis(20),
    };
    let action = crate::backoff(Arc::new(cm("a", 1)), &Failed, Arc::new(()), retry);
    assert_eq!(action.requeue_after(), Some(Duration::from_millis(20)));
}
