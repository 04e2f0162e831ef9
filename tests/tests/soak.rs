//! The soak test: minutes of churn against a real control plane, with ten subscribers (two of
//! them slow) and a kube-apiserver restart every minute, then the convergence check. It
//! records events processed, relists, resyncs and memory (sampled over time once the object
//! count is steady, and required to stay flat), and prints the figures.
//!
//! Ignored by default; `just soak` runs it
//! (`cargo test --release -p kache-tests --test soak -- --ignored --nocapture`).
//! `KACHE_SOAK_SECS` sets the churn duration (default 180).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_store::{Delivery, Store, Writer};
use kache_testenv::TestEnv;
use kache_tests::{
    Counters, Reflector, churn, converges, cut_off, follow_without_history, init_tracing, within,
};
use kache_watch::Config;
use kube_client::Api;
use tokio::time::Instant;

const WORKERS: usize = 4;
const NAMES_PER_WORKER: usize = 250;
const WARM_UP: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const RESTART_EVERY: Duration = Duration::from_secs(60);

/// Until `duration` has passed since `started`: restarts kube-apiserver every
/// [`RESTART_EVERY`], and after [`WARM_UP`] samples (seconds, `VmRSS` KiB, objects) every
/// [`SAMPLE_EVERY`]. Returns the restarts and the samples.
async fn restart_and_sample(
    env: &TestEnv,
    store: &Store<ConfigMap>,
    started: Instant,
    duration: Duration,
) -> (u32, Vec<(u64, u64, usize)>) {
    let mut samples = Vec::new();
    let mut restarts = 0;
    let mut next_restart = started + RESTART_EVERY;
    let mut next_sample = started + WARM_UP;
    while started.elapsed() < duration {
        tokio::time::sleep_until(next_sample.min(next_restart)).await;
        if Instant::now() >= next_restart {
            env.restart_apiserver().await.unwrap();
            restarts += 1;
            next_restart += RESTART_EVERY;
        }
        if Instant::now() >= next_sample {
            let (rss, _) = memory_kib();
            samples.push((started.elapsed().as_secs(), rss, store.len()));
            next_sample = Instant::now() + SAMPLE_EVERY;
        }
    }
    (restarts, samples)
}

/// `(VmRSS, VmHWM)` of this process in KiB, from `/proc/self/status`.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes long; run with `just soak`"]
async fn soak_churn_with_restarts_and_slow_subscribers_stays_flat_and_converges() {
    init_tracing();
    let duration = Duration::from_secs(
        std::env::var("KACHE_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(180),
    );
    let env = TestEnv::start().await.expect("control plane");
    let ns = env.create_namespace("soak").await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);

    // Ten subscribers: seven fast, one fast with backpressure, two slow (they fall behind
    // and are resynced).
    let (_proxy, cut_off_api) = cut_off(&env, &ns).await;
    let writer = Writer::new().with_buffer(256);
    let store = writer.as_reader();
    let mut subscribers = Vec::new();
    let mut views = Vec::new();
    for i in 0..10 {
        let (subscriber, delay) = match i {
            7 => (
                writer.subscribe_with(Delivery::Backpressure),
                Duration::ZERO,
            ),
            8 | 9 => (writer.subscribe(), Duration::from_millis(2)),
            _ => (writer.subscribe(), Duration::ZERO),
        };
        subscribers.push(subscriber.handle());
        views.push(follow_without_history(subscriber, delay));
    }
    let reflector = Reflector::start(cut_off_api, Config::default(), writer);
    within("the store to be ready", store.wait_until_ready())
        .await
        .unwrap();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                churn(&api, worker, NAMES_PER_WORKER, |_| {
                    !stop.load(Ordering::Relaxed)
                })
                .await
            })
        })
        .collect();

    let (restarts, samples) = restart_and_sample(&env, &store, started, duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total_writes = 0;
    for worker in workers {
        total_writes += within("a churning writer to stop", worker).await.unwrap();
    }
    let converged = converges(&api, &store, &views).await;
    let (rss, hwm) = memory_kib();

    let counters = &reflector.counters;
    let subscriber_events: u64 = views.iter().map(kache_tests::View::events).sum();
    let resyncs: u64 = subscribers
        .iter()
        .map(kache_store::SubscriberHandle::resyncs)
        .sum();
    println!(
        "soak: {} s of churn, {WORKERS} writers, 10 subscribers",
        duration.as_secs()
    );
    println!("  faults injected: {restarts} kube-apiserver restarts");
    println!(
        "  writes: {total_writes}; objects at the end: {}",
        converged.objects
    );
    println!(
        "  watcher: {} events applied, {} lists ({} relists), {} error items ({} x 410)",
        Counters::get(&counters.events),
        Counters::get(&counters.inits),
        Counters::get(&counters.inits).saturating_sub(1),
        Counters::get(&counters.errors),
        Counters::get(&counters.gone),
    );
    println!("  subscribers: {subscriber_events} events received, {resyncs} resyncs");
    println!("  memory: VmRSS {rss} KiB now, VmHWM {hwm} KiB peak");
    println!("  samples after warm-up (s, VmRSS KiB, objects): {samples:?}");
    println!("  convergence: store and 10 subscribers equal a fresh LIST, 0 mismatches");

    assert!(restarts >= 1, "at least one fault was injected");
    assert!(samples.len() >= 2, "enough time to sample memory");
    // Flat: the mean of the last quarter of the samples within 10% + 4 MiB of the first
    // quarter's. Generous for allocator noise and connection pools; a harness that kept every
    // deleted key (about 0.3 MiB per 5 s here) failed it.
    let quarter = (samples.len() / 4).max(1);
    let mean = |s: &[(u64, u64, usize)]| s.iter().map(|s| s.1).sum::<u64>() / s.len() as u64;
    let (early, late) = (
        mean(&samples[..quarter]),
        mean(&samples[samples.len() - quarter..]),
    );
    println!("  memory trend: first-quarter mean {early} KiB, last-quarter mean {late} KiB");
    assert!(
        late <= early + early / 10 + 4 * 1024,
        "memory grew after warm-up: {early} KiB -> {late} KiB"
    );
}
