//! User code run by the store (`find` predicates): it may read the store without deadlocking.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;

use super::subscriber::cm;
use crate::{Event, store};

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
