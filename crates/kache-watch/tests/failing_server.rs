//! A watcher against a server that fails every request, used as a new user would: no backoff
//! adapter. Retries are spaced, and a task running it returns to the runtime between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_watch::{Backoff, Config, WatchStreamExt, watcher};
use kube_client::{Api, Client};
use tokio::net::TcpListener;

/// How long each test drives its watcher.
const PERIOD: Duration = Duration::from_millis(500);

/// At most this many requests in `PERIOD`: the first, and a retry or two.
const HANDFUL: usize = 3;

fn client(port: u16) -> Client {
    let url = format!("http://127.0.0.1:{port}").parse().expect("a URL");
    Client::try_from(kube_client::Config::new(url)).expect("a client")
}

/// A port on which nothing listens: bound, then released.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// How many items a watcher yields within `PERIOD`, each an error; `backoff`: through that
/// backoff adapter.
async fn errors_within_period(config: Config, port: u16, backoff: Option<Backoff>) -> usize {
    let api: Api<ConfigMap> = Api::namespaced(client(port), "ns");
    let mut events = match backoff {
        Some(backoff) => watcher(api, config).backoff(backoff).boxed(),
        None => watcher(api, config).boxed(),
    };
    let mut errors = 0;
    let _ = tokio::time::timeout(PERIOD, async {
        while let Some(item) = events.next().await {
            assert!(item.is_err(), "{item:?}");
            errors += 1;
        }
    })
    .await;
    errors
}

#[tokio::test]
async fn retries_against_a_port_where_nothing_listens_are_spaced() {
    let errors = errors_within_period(Config::default(), dead_port(), None).await;
    assert!(
        (1..=HANDFUL).contains(&errors),
        "{errors} failed requests in {PERIOD:?}"
    );
}

#[tokio::test]
async fn retries_against_a_server_that_drops_every_connection_are_spaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let accepted = Arc::clone(&accepted);
        async move {
            while let Ok((connection, _)) = listener.accept().await {
                accepted.fetch_add(1, SeqCst);
                drop(connection);
            }
        }
    });
    errors_within_period(Config::default(), port, None).await;
    server.abort();
    let accepted = accepted.load(SeqCst);
    assert!(
        (1..=HANDFUL).contains(&accepted),
        "{accepted} connections in {PERIOD:?}"
    );
}

#[tokio::test]
async fn a_backoff_adapter_replaces_the_watchers_own_wait() {
    // 50, 100, 200 ms: a fourth request at 350 ms (at least two, on a loaded machine). Were
    // the watcher's own wait (600 ms or more) added, there would be one.
    let quick = Backoff::default()
        .initial(Duration::from_millis(50))
        .jitter(0.0);
    let errors = errors_within_period(Config::default(), dead_port(), Some(quick)).await;
    assert!(
        (2..=5).contains(&errors),
        "{errors} failed requests in {PERIOD:?}"
    );
}

/// Whether a task that drives a watcher whose every request fails at once, without waiting
/// for anything, can be aborted on a current-thread runtime. Runs on its own thread, so that
/// a runtime stuck in the task fails the test rather than hanging it.
fn abort_lands(config: Config) -> bool {
    // A client whose request queue has lost its worker task (here: with the runtime that ran
    // it; in the field: at runtime shutdown) fails every request at once.
    let client = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async { client(dead_port()) })
    };
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let cancelled = runtime.block_on(async move {
            let api: Api<ConfigMap> = Api::namespaced(client, "ns");
            let task = tokio::spawn(watcher(api, config).for_each(|_| async {}));
            // Let the task run its first requests.
            tokio::time::sleep(Duration::from_millis(50)).await;
            task.abort();
            let joined = tokio::time::timeout(Duration::from_secs(5), task).await;
            joined.is_ok_and(|result| result.is_err_and(|err| err.is_cancelled()))
        });
        let _ = done.send(cancelled);
    });
    outcome
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or(false)
}

#[test]
fn a_watcher_task_whose_requests_fail_at_once_can_be_aborted() {
    assert!(abort_lands(Config::default()));
}

#[test]
fn without_retry_backoff_such_a_task_can_still_be_aborted() {
    assert!(abort_lands(Config::default().disable_retry_backoff()));
}
