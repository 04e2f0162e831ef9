//! User code run by the store (`find` predicates, index functions, transforms): it may read
//! the store without deadlocking, and a panic in it leaves the store exactly consistent.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;

use super::subscriber::{cm, relist, versions};
use crate::{Error, Event, ReflectExt, ResourceVersion, Writer, store};

/// How long a call that must not deadlock may take.
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn find_predicate_may_read_the_store_while_a_write_is_queued() {
    let (store, mut writer) = store::<ConfigMap>();
    writer.apply(Event::Apply(cm("a", 1)));
    let (go, go_rx) = mpsc::channel::<()>();
    let (wrote, wrote_rx) = mpsc::channel::<()>();
    let writer_thread = thread::spawn(move || {
        go_rx.recv().expect("the predicate starts the write");
        writer.apply(Event::Apply(cm("b", 2)));
        wrote.send(()).expect("the predicate waits for the write");
        writer
    });
    let (found, found_rx) = mpsc::channel();
    let reader = store.clone();
    thread::spawn(move || {
        let mut go = Some(go);
        let result = reader.find(|_| {
            if let Some(go) = go.take() {
                go.send(()).expect("the writer thread waits");
                // A write behind a lock held here would queue, and a fair lock would then
                // make the reads below wait for it: give it the time to queue.
                let _ = wrote_rx.recv_timeout(Duration::from_millis(200));
            }
            reader.get(Some("ns"), "a").is_some() && reader.len() == 2
        });
        found.send(result).expect("the test waits");
    });
    let result = found_rx
        .recv_timeout(BOUND)
        .expect("a predicate that reads the store deadlocked with a queued write");
    assert_eq!(
        result.and_then(|obj| obj.metadata.name.clone()).as_deref(),
        Some("a"),
        "the predicate runs on the generation before the write, its reads see the write"
    );
    let writer = writer_thread.join().expect("the writer thread");
    assert_eq!(store.len(), 2);
    drop(writer);
}

/// Whether `f` panicked. The caller goes on as a user who catches the panic would.
fn panics(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}

fn name(cm: &ConfigMap) -> String {
    cm.metadata.name.clone().unwrap_or_default()
}

fn version(cm: &ConfigMap) -> Vec<String> {
    cm.metadata.resource_version.iter().cloned().collect()
}

/// An index function (values: the name) that panics while `armed` is set.
fn trap(armed: &Arc<AtomicBool>) -> impl Fn(&ConfigMap) -> Vec<String> + Send + Sync + 'static {
    let armed = Arc::clone(armed);
    move |cm| {
        assert!(!armed.load(SeqCst), "index function failed on {}", name(cm));
        vec![name(cm)]
    }
}

#[test]
fn panicking_add_index_registers_nothing_and_every_other_index_stays_exact() {
    let (store, mut writer) = store::<ConfigMap>();
    writer.add_index("version", version);
    relist(&mut writer, [cm("a", 1), cm("b", 2)]);
    assert!(panics(|| writer
        .add_index("broken", |_: &ConfigMap| -> Vec<String> {
            panic!("index function failed")
        })));
    assert_eq!(store.index_names(), ["version"]);
    assert_eq!(
        store.by_index("broken", "a"),
        Err(Error::UnknownIndex {
            name: "broken".to_owned()
        })
    );
    writer.assert_indexes_exact();

    // Indexes registered and events applied afterwards land in their own index.
    writer.add_index("prefixed", |cm: &ConfigMap| vec![format!("x-{}", name(cm))]);
    writer.add_index("name", |cm: &ConfigMap| vec![name(cm)]);
    writer.apply(Event::Apply(cm("c", 3)));
    writer.apply(Event::Delete(cm("a", 4)));
    writer.assert_indexes_exact();
    assert_eq!(store.index_names(), ["version", "prefixed", "name"]);
    let found = |index: &str, value: &str| {
        let objs = store.by_index(index, value).expect("a registered index");
        objs.iter().map(|cm| name(cm)).collect::<Vec<_>>()
    };
    assert_eq!(found("name", "c"), ["c"]);
    assert_eq!(found("prefixed", "x-c"), ["c"]);
    assert_eq!(found("version", "3"), ["c"]);
    assert!(found("name", "a").is_empty());
    assert!(found("name", "x-c").is_empty());
}

#[test]
fn panicking_with_index_drops_the_writer_and_leaves_the_store_as_it_was() {
    let mut writer = Writer::<ConfigMap>::new().with_index("version", version);
    let store = writer.as_reader();
    relist(&mut writer, [cm("a", 1), cm("b", 2)]);
    let armed = Arc::new(AtomicBool::new(true));
    let broken = trap(&armed);
    assert!(panics(move || drop(writer.with_index("broken", broken))));
    assert_eq!(versions(&store), ["a@1", "b@2"]);
    assert_eq!(store.index_names(), ["version"]);
    assert_eq!(store.by_index("version", "2").map(|objs| objs.len()), Ok(1));
    // The writer went with the panic, as a dropped writer: waits fail rather than hang.
    let later = ResourceVersion::parse("3").expect("a version");
    assert_eq!(
        store.wait_for_version(&later).now_or_never(),
        Some(Err(Error::WriterDropped))
    );
}

#[test]
fn panicking_index_function_leaves_each_event_unapplied() {
    let armed = Arc::new(AtomicBool::new(false));
    let (store, mut writer) = store::<ConfigMap>();
    writer.add_index("trap", trap(&armed));
    relist(&mut writer, [cm("a", 1), cm("b", 2)]);
    let mut changes = store.subscribe();
    let snapshot: Vec<_> = (0..4).map(|_| changes.next().now_or_never()).collect();
    assert!(snapshot.iter().all(|event| matches!(event, Some(Some(_)))));

    armed.store(true, SeqCst);
    assert!(panics(|| drop(writer.apply(Event::Apply(cm("a", 3))))));
    assert!(panics(|| drop(writer.apply(Event::Apply(cm("c", 4))))));
    assert!(panics(|| drop(writer.apply(Event::Delete(cm("b", 5))))));
    assert_eq!(versions(&store), ["a@1", "b@2"]);
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("2").map(Some)
    );
    assert!(changes.next().now_or_never().is_none(), "no change to hear");
    armed.store(false, SeqCst);
    writer.assert_indexes_exact();

    // During a relist: a delete that panics keeps the object in the generation being built,
    // and an `InitDone` that panics keeps the relist in progress.
    writer.apply(Event::Init);
    writer.apply(Event::InitApply(cm("a", 6)));
    writer.apply(Event::InitApply(cm("b", 7)));
    armed.store(true, SeqCst);
    assert!(panics(|| drop(writer.apply(Event::Delete(cm("b", 8))))));
    assert!(panics(|| drop(writer.apply(Event::InitDone))));
    assert_eq!(versions(&store), ["a@1", "b@2"]);
    armed.store(false, SeqCst);
    writer.assert_indexes_exact();
    writer.apply(Event::InitDone);
    assert_eq!(versions(&store), ["a@6", "b@7"]);
    writer.assert_indexes_exact();
    let heard: Vec<_> = (0..2)
        .filter_map(|_| changes.next().now_or_never().flatten())
        .map(|event| event.into_object().map(|cm| name(&cm)))
        .collect();
    assert_eq!(heard.len(), 2, "the relist's two changes: {heard:?}");
}

#[test]
fn panicking_transform_leaves_each_event_unapplied() {
    let armed = Arc::new(AtomicBool::new(false));
    let mut writer = Writer::<ConfigMap>::new().with_transform({
        let armed = Arc::clone(&armed);
        move |cm| assert!(!armed.load(SeqCst), "transform failed on {}", name(cm))
    });
    let store = writer.as_reader();
    relist(&mut writer, [cm("a", 1), cm("b", 2)]);
    armed.store(true, SeqCst);
    assert!(panics(|| drop(writer.apply(Event::Apply(cm("a", 3))))));
    assert!(panics(|| drop(writer.apply(Event::Delete(cm("b", 4))))));
    writer.apply(Event::Init);
    assert!(panics(|| drop(writer.apply(Event::InitApply(cm("a", 5))))));
    assert_eq!(versions(&store), ["a@1", "b@2"]);
    assert_eq!(
        store.resource_version(),
        crate::ResourceVersion::parse("2").map(Some)
    );
    armed.store(false, SeqCst);
    writer.apply(Event::InitApply(cm("b", 6)));
    writer.apply(Event::InitDone);
    assert_eq!(
        versions(&store),
        ["b@6"],
        "the relist holds what it was given"
    );
}

#[tokio::test]
async fn panic_under_reflect_fails_its_task_and_ends_the_writer() {
    let armed = Arc::new(AtomicBool::new(false));
    let writer = Writer::<ConfigMap>::new().with_index("trap", trap(&armed));
    let store = writer.as_reader();
    let mut changes = store.subscribe();
    let events = stream::iter([
        Event::Init,
        Event::InitApply(cm("a", 1)),
        Event::InitDone,
        Event::Apply(cm("b", 2)),
    ]);
    let task = tokio::spawn({
        let armed = Arc::clone(&armed);
        events
            .map(Ok::<_, std::convert::Infallible>)
            .reflect(writer)
            .for_each(move |event| {
                // The next event's index function panics.
                armed.store(matches!(event, Ok(Event::InitDone)), SeqCst);
                futures::future::ready(())
            })
    });
    let failed = tokio::time::timeout(BOUND, task)
        .await
        .expect("the task ends");
    assert!(failed.is_err_and(|err| err.is_panic()));
    assert_eq!(versions(&store), ["a@1"]);
    assert_eq!(store.by_index("trap", "a").map(|objs| objs.len()), Ok(1));
    let heard: Vec<_> = changes.by_ref().collect().await;
    assert_eq!(heard.len(), 3, "the sync, then the end: {heard:?}");
    let later = ResourceVersion::parse("2").expect("a version");
    assert_eq!(
        store.wait_for_version(&later).await,
        Err(Error::WriterDropped)
    );
}
