//! Replicas dividing work (`kache_controller::replicas`): reconciles per second of 1, 3 and 5
//! replicas over N `ConfigMap`s (30,000 by default) with a reconcile that waits ~5 ms, as for
//! I/O, 8 at once per replica.
//!
//! The modern server runs with `ShardedListAndWatch` on, so each replica lists and watches only
//! its share. The replicas run in this process, each with its own client (its own
//! connections), Lease and store, and a `Controller` `within` its ownership. Once every range
//! is held and the initial pass (each object reconciled once as its range arrives) is over,
//! every replica's controller is asked to reconcile all its objects (`reconcile_all_on`): the
//! time until N more reconciles have ended gives the rate. Also recorded: the time from the
//! start of the replicas to the end of the initial pass, and each replica's share.
//!
//! Prints a Markdown table and writes `benches/results/replicas.json`. Run:
//! `cargo run --release -p kache-benches --bin replica-bench`. Environment:
//! `KACHE_BENCH_OBJECTS` (30000), `KACHE_BENCH_REPLICAS` (`1,3,5`), `KACHE_BENCH_WORK_MS` (5).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{BoxError, Results, Table, env_sizes, env_usize, seed_config_maps};
use kache_controller::replicas::{Ranges, Replicas};
use kache_controller::{Action, Config, Controller};
use kache_testenv::{Server, TestEnv};
use kube_client::{Api, Client};
use serde_json::json;

/// How long a phase may take before the run fails.
const PHASE_BOUND: Duration = Duration::from_secs(600);
const CONCURRENCY: usize = 8;

struct Work {
    done: AtomicUsize,
    wait: Duration,
}

async fn reconcile(_: Arc<ConfigMap>, work: Arc<Work>) -> Result<Action, kube_client::Error> {
    tokio::time::sleep(work.wait).await;
    work.done.fetch_add(1, Ordering::Relaxed);
    Ok(Action::await_change())
}

/// Waits until `check` holds, polling, for at most [`PHASE_BOUND`].
async fn until(what: &str, mut check: impl FnMut() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + PHASE_BOUND;
    while !check() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {PHASE_BOUND:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

struct Run {
    replicas: usize,
    initial: Duration,
    pass: Duration,
    shares: Vec<f64>,
}

async fn run_replicas(
    env: &TestEnv,
    namespace: &str,
    objects: usize,
    replicas: usize,
    wait: Duration,
) -> Result<Run, BoxError> {
    let work = Arc::new(Work {
        done: AtomicUsize::new(0),
        wait,
    });
    let (go, _) = tokio::sync::broadcast::channel::<()>(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    for i in 0..replicas {
        // A client of its own: a replica's own connections, as in its own process.
        let client = Client::try_from(env.config().clone())?;
        let (replica, membership) = Replicas::new(
            Api::<Lease>::namespaced(client.clone(), namespace),
            &format!("bench-{replicas}"),
            &format!("replica-{i}"),
        )
        .timing(
            Duration::from_secs(3),
            Duration::from_secs(2),
            Duration::from_millis(500),
        )
        .start(
            Api::<ConfigMap>::namespaced(client, namespace),
            kache_watch::Config::default(),
        )?;
        tasks.push(tokio::spawn(membership));
        let trigger = tokio_stream_of(go.subscribe());
        let controller =
            Controller::new(replica.store(), Config::default().concurrency(CONCURRENCY))
                .within(replica.ownership())
                .reconcile_all_on(trigger)
                .run(reconcile, kache_controller::backoff, Arc::clone(&work))
                .for_each(|_| async {});
        tasks.push(tokio::spawn(controller));
        handles.push(replica);
    }
    let covered = || {
        let held: Vec<Ranges> = handles.iter().map(|r| r.ownership().held()).collect();
        held.iter().all(|r| !r.is_empty())
            && held.iter().fold(Ranges::empty(), |all, r| all.union(r)) == Ranges::full()
    };
    until("every range held", covered).await?;
    until("the initial pass", || {
        work.done.load(Ordering::Relaxed) >= objects
    })
    .await?;
    let initial = started.elapsed();
    // Quiet: the initial pass may have reconciled a few objects twice (a range that moved).
    let mut last = work.done.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = work.done.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let shares = handles
        .iter()
        .map(|r| r.ownership().held().share())
        .collect();
    let before = work.done.load(Ordering::Relaxed);
    let pass = Instant::now();
    go.send(())?;
    until("the full pass", || {
        work.done.load(Ordering::Relaxed) >= before + objects
    })
    .await?;
    let pass = pass.elapsed();
    for replica in &handles {
        replica.leave();
    }
    for task in tasks {
        task.abort();
    }
    Ok(Run {
        replicas,
        initial,
        pass,
        shares,
    })
}

/// A broadcast receiver as a stream of ticks.
fn tokio_stream_of(
    receiver: tokio::sync::broadcast::Receiver<()>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.ok().map(|()| ((), receiver))
    })
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let objects = env_usize("KACHE_BENCH_OBJECTS", 30_000);
    let counts = env_sizes("KACHE_BENCH_REPLICAS", &[1, 3, 5]);
    let wait = Duration::from_millis(u64::try_from(env_usize("KACHE_BENCH_WORK_MS", 5))?);
    let mut results = Results::new(
        "replicas",
        "cargo run --release -p kache-benches --bin replica-bench",
    );
    results.setting("objects", objects);
    results.setting("work_ms", u64::try_from(wait.as_millis())?);
    results.setting("concurrency_per_replica", CONCURRENCY);
    results.setting("server", "modern, ShardedListAndWatch on");
    eprintln!("[modern] starting a local control plane with ShardedListAndWatch on...");
    let env = TestEnv::builder()
        .server(Server::Modern)
        .feature_gate("ShardedListAndWatch", true)
        .start()
        .await?;
    let namespace = env.create_namespace("replicas").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    seed_config_maps(&api, &namespace, objects).await?;
    eprintln!("[modern] seeded {objects} ConfigMaps");

    let mut table = Table::new(&[
        "replicas",
        "reconciles/s",
        "vs one replica",
        "full pass",
        "start to end of initial pass",
        "shares held",
    ]);
    let mut one = None;
    for count in counts {
        eprintln!("[modern] {count} replica(s)...");
        let run = run_replicas(&env, &namespace, objects, count, wait).await?;
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let rate = objects as f64 / run.pass.as_secs_f64();
        let base = *one.get_or_insert(rate);
        let shares: Vec<String> = run
            .shares
            .iter()
            .map(|s| format!("{:.0}%", s * 100.0))
            .collect();
        table.row(vec![
            run.replicas.to_string(),
            format!("{rate:.0}"),
            format!("{:.2}x", rate / base),
            format!("{:.2} s", run.pass.as_secs_f64()),
            format!("{:.2} s", run.initial.as_secs_f64()),
            shares.join(" / "),
        ]);
        results.data(json!({
            "replicas": run.replicas,
            "reconciles_per_sec": rate,
            "pass_secs": run.pass.as_secs_f64(),
            "initial_secs": run.initial.as_secs_f64(),
            "shares": run.shares,
        }));
        // The previous group's Leases are gone or stale; the next group has its own name.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let title = format!(
        "Replicas over {objects} ConfigMaps, a reconcile of {} ms, {CONCURRENCY} at once per replica",
        wait.as_millis()
    );
    println!("{title}\n\n{}", table.render());
    results.table("throughput", &title, &table);
    results.write();
    Ok(())
}
