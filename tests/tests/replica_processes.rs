//! Replicas as separate OS processes (`src/bin/replica.rs`, on `kache_controller::replicas`),
//! each reaching the API server through a proxy of its own, while creates, updates and
//! deletes go on: three replicas start; one is killed with SIGKILL; three more join (five);
//! the API server restarts; three leave in order (two); one is cut off by its proxy and comes
//! back. Every reconcile is logged by its replica (key, start, end); at the end the test checks
//! that no object was ever reconciled by two replicas at overlapping times, that every object
//! was reconciled after its last change, and the hand-off times.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use kache_controller::replicas::Ranges;
use kache_testenv::Proxy;
use kache_tests::{Rng, Server, TestEnv, on_each_server};
use kube_client::Api;
use kube_client::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::process::{Child, Command};

const OBJECTS: usize = 300;
const LEASE: Duration = Duration::from_secs(3);
const DEADLINE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
const DRAIN: Duration = Duration::from_secs(2);
/// Every wait of the test on a condition.
const BOUND: Duration = Duration::from_secs(90);

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_micros()
}

fn secs(us: u128) -> f64 {
    // Durations of a test: far below 2^52 microseconds.
    #[allow(clippy::cast_precision_loss)]
    let us = us as f64;
    us / 1e6
}

/// A replica process, its proxy and its log.
struct Replica {
    identity: String,
    child: Option<Child>,
    proxy: Proxy,
    log: PathBuf,
    /// When it was killed or left, if it did.
    gone_at: Option<u128>,
}

impl Replica {
    async fn start(env: &TestEnv, ns: &str, identity: &str, dir: &Path) -> Self {
        let proxy = Proxy::start(env.server_url()).await.expect("proxy");
        let log = dir.join(format!("{identity}.log"));
        let stderr =
            std::fs::File::create(dir.join(format!("{identity}.stderr"))).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_replica"))
            .env("KUBECONFIG", env.kubeconfig_path())
            .env("REPLICA_SERVER", proxy.url())
            .env("REPLICA_NAMESPACE", ns)
            .env("REPLICA_GROUP", "workers")
            .env("REPLICA_IDENTITY", identity)
            .env("REPLICA_LOG", &log)
            // Every object again every 2 s: a replica that reconciled outside its ranges
            // (after its Lease expired, or before a range was released) would overlap.
            .env("REPLICA_REQUEUE_MS", "2000")
            .env(
                "REPLICA_TIMING_MS",
                format!(
                    "{},{},{},{}",
                    LEASE.as_millis(),
                    DEADLINE.as_millis(),
                    RENEW.as_millis(),
                    DRAIN.as_millis()
                ),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("the replica binary starts");
        Self {
            identity: identity.to_owned(),
            child: Some(child),
            proxy,
            log,
            gone_at: None,
        }
    }

    /// SIGKILL: no goodbye.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("SIGKILL");
        self.gone_at = Some(now_us());
    }

    /// SIGTERM: an orderly leave.
    fn terminate(&self) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    async fn wait_exit(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = tokio::time::timeout(BOUND, child.wait())
            .await
            .expect("the replica leaves within the bound")
            .expect("exit status");
        assert!(status.success(), "{} exited with {status}", self.identity);
        self.gone_at = Some(now_us());
    }

    fn lines(&self) -> Vec<Line> {
        parse(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The `held` lines, in a file of their own (the reconcile log grows fast).
    fn held_lines(&self) -> Vec<Line> {
        let mut path = self.log.clone().into_os_string();
        path.push(".held");
        parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Its ranges now, as its log says; empty once gone.
    fn held(&self) -> Ranges {
        if self.gone_at.is_some() {
            return Ranges::empty();
        }
        self.held_lines()
            .into_iter()
            .rev()
            .find_map(|line| match line {
                Line::Held(ranges, _) => Some(ranges),
                _ => None,
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
enum Line {
    Start {
        id: u64,
        key: String,
        generation: String,
        at: u128,
    },
    End {
        id: u64,
        at: u128,
        completed: bool,
    },
    Held(Ranges, u128),
}

fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["start", id, key, generation, at] => Some(Line::Start {
                    id: id.parse().ok()?,
                    key: key.to_owned(),
                    generation: generation.to_owned(),
                    at: at.parse().ok()?,
                }),
                ["end", id, at, how] => Some(Line::End {
                    id: id.parse().ok()?,
                    at: at.parse().ok()?,
                    completed: how == "ok",
                }),
                ["held", ranges, at] => Some(Line::Held(
                    Ranges::parse(if ranges == "-" { "" } else { ranges })?,
                    at.parse().ok()?,
                )),
                _ => None,
            }
        })
        .collect()
}

/// Waits until the replicas still running hold the whole space between them, each some of it
/// (`all_hold`), and returns when (the test's clock).
async fn covered(replicas: &[&Replica], all_hold: bool, what: &str) -> u128 {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let held: Vec<Ranges> = replicas.iter().map(|r| r.held()).collect();
        let union = held.iter().fold(Ranges::empty(), |all, r| all.union(r));
        let disjoint = held
            .iter()
            .enumerate()
            .all(|(i, a)| held.iter().skip(i + 1).all(|b| !a.overlaps(b)));
        assert!(disjoint, "two replicas hold one range: {held:?}");
        if union == Ranges::full() && (!all_hold || held.iter().all(|r| !r.is_empty())) {
            return now_us();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not covered within {BOUND:?}: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When, after `from`, the replicas' logs first show the whole space held: from the logs'
/// own times, so the test's polling adds nothing.
fn covered_at(replicas: &[&Replica], from: u128) -> Option<u128> {
    let mut events: Vec<(u128, usize, Ranges)> = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        for line in replica.held_lines() {
            if let Line::Held(ranges, at) = line {
                events.push((at, i, ranges));
            }
        }
        if let Some(gone) = replica.gone_at {
            events.push((gone, i, Ranges::empty()));
        }
    }
    events.sort_by_key(|(at, i, _)| (*at, *i));
    let mut held = vec![Ranges::empty(); replicas.len()];
    for (at, i, ranges) in events {
        held[i] = ranges;
        if at >= from && held.iter().fold(Ranges::empty(), |all, r| all.union(r)) == Ranges::full()
        {
            return Some(at);
        }
    }
    None
}

/// Creates, updates and deletes `ConfigMap`s until stopped; names are never reused.
fn churn(api: Api<ConfigMap>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rng = Rng::new(27);
        let mut names: Vec<String> = (0..OBJECTS).map(|i| format!("cm-{i}")).collect();
        let mut next = OBJECTS;
        let mut changes = 0;
        while !stop.load(Ordering::Relaxed) {
            let roll = rng.below(10);
            let result = if roll < 6 && !names.is_empty() {
                let name = &names[rng.below(names.len())];
                let patch = json!({ "data": { "gen": format!("{changes}") } });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            } else if roll < 8 || names.is_empty() {
                let name = format!("cm-{next}");
                next += 1;
                names.push(name.clone());
                api.create(&PostParams::default(), &configmap(&name, changes))
                    .await
                    .map(drop)
            } else {
                let name = names.swap_remove(rng.below(names.len()));
                api.delete(&name, &DeleteParams::default()).await.map(drop)
            };
            if result.is_ok() {
                changes += 1;
            } else {
                // The server restarts, or an object is gone: try the next change shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        changes
    })
}

fn configmap(name: &str, generation: usize) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("gen".to_owned(), generation.to_string())])),
        ..ConfigMap::default()
    }
}

/// One reconcile: its key, replica and span.
struct Span {
    key: String,
    replica: String,
    generation: String,
    start: u128,
    end: u128,
    completed: bool,
}

fn spans(replicas: &[Replica]) -> Vec<Span> {
    let mut out = Vec::new();
    for replica in replicas {
        let mut open: HashMap<u64, (String, String, u128)> = HashMap::new();
        for line in replica.lines() {
            match line {
                Line::Start {
                    id,
                    key,
                    generation,
                    at,
                } => {
                    open.insert(id, (key, generation, at));
                }
                Line::End { id, at, completed } => {
                    if let Some((key, generation, start)) = open.remove(&id) {
                        out.push(Span {
                            key,
                            replica: replica.identity.clone(),
                            generation,
                            start,
                            end: at,
                            completed,
                        });
                    }
                }
                Line::Held(..) => {}
            }
        }
        // A replica killed mid-reconcile: its reconciles ran until the kill. (A running
        // replica's open reconciles are still running.)
        let Some(end) = replica.gone_at else {
            continue;
        };
        for (key, generation, start) in open.into_values() {
            out.push(Span {
                key,
                replica: replica.identity.clone(),
                generation,
                start,
                end,
                completed: false,
            });
        }
    }
    out
}

on_each_server! {
    /// The scenario of the module's docs, on one server.
    async fn replicas_never_reconcile_one_object_twice_at_once(server: Server) {
        let mut builder = TestEnv::builder().server(server);
        if server == Server::Modern {
            builder = builder.feature_gate("ShardedListAndWatch", true);
        }
        let env = builder.start().await.expect("control plane");
        let ns = env.create_namespace("replicas").await.expect("namespace");
        let api: Api<ConfigMap> = Api::namespaced(env.client(), &ns);
        let dir = std::env::temp_dir().join(format!("kache-replicas-{ns}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("log folder");
        kache_testenv::run_all((0..OBJECTS).map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &configmap(&format!("cm-{i}"), 0))
                    .await
            }
        }))
        .await
        .expect("objects");
        let stop = Arc::new(AtomicBool::new(false));
        let churning = churn(api.clone(), Arc::clone(&stop));

        let mut replicas = Vec::new();
        for i in 0..3 {
            replicas.push(Replica::start(&env, &ns, &format!("r{i}"), &dir).await);
        }
        covered(&replicas.iter().collect::<Vec<_>>(), true, "three replicas").await;

        // SIGKILL: the two others take its range once its Lease expires in their eyes.
        replicas[2].kill().await;
        let killed = replicas[2].gone_at.expect("killed");
        covered(&replicas[..2].iter().collect::<Vec<_>>(), false, "after the kill").await;
        let after_kill = covered_at(&replicas.iter().collect::<Vec<_>>(), killed).expect("covered") - killed;
        eprintln!("{server}: the killed replica's range was covered {:.2} s after SIGKILL", secs(after_kill));
        assert!(
            Duration::from_micros(u64::try_from(after_kill).expect("short")) <= LEASE + RENEW + Duration::from_secs(2),
            "a dead replica's range must be covered within the lease duration and a renewal interval (with 2 s for the list of its objects on a loaded machine)"
        );

        // Three more: five replicas.
        for i in 3..6 {
            replicas.push(Replica::start(&env, &ns, &format!("r{i}"), &dir).await);
        }
        let live = |replicas: &[Replica]| -> Vec<usize> {
            (0..replicas.len()).filter(|i| replicas[*i].gone_at.is_none()).collect()
        };
        let five = live(&replicas);
        covered(&five.iter().map(|i| &replicas[*i]).collect::<Vec<_>>(), true, "five replicas").await;

        // The API server restarts under the five.
        let restart = now_us();
        env.restart_apiserver().await.expect("restart");
        let ready = now_us();
        covered(&five.iter().map(|i| &replicas[*i]).collect::<Vec<_>>(), true, "after the restart").await;
        eprintln!(
            "{server}: the API server restarted in {:.2} s; the five replicas covered everything again {:.2} s after it was ready",
            secs(ready - restart),
            secs(now_us() - ready)
        );

        // Three leave in order: five to two.
        for replica in &replicas[3..6] {
            replica.terminate();
        }
        let leave = now_us();
        for replica in &mut replicas[3..6] {
            replica.wait_exit().await;
        }
        covered(&[&replicas[0], &replicas[1]], true, "after the leaves").await;
        let all: Vec<&Replica> = replicas.iter().collect();
        let unowned = longest_unowned(&all, leave, now_us());
        eprintln!("{server}: after three orderly leaves, the longest a hash had no owner: {:.3} s", secs(unowned));

        // r0 cut off: it stops before its Lease expires for r1, which takes everything; back,
        // it rejoins.
        let old = replicas[0].held();
        replicas[0].proxy.cut();
        let cut = now_us();
        covered(&[&replicas[1]], false, "r1 alone").await;
        let lapsed = replicas[0]
            .held_lines()
            .into_iter()
            .find_map(|line| match line {
                Line::Held(ranges, at) if at > cut && ranges.is_empty() => Some(at),
                _ => None,
            })
            .expect("the cut-off replica gave up its ranges");
        let taken = replicas[1]
            .held_lines()
            .into_iter()
            .find_map(|line| match line {
                Line::Held(ranges, at) if at > cut && ranges.overlaps(&old) => Some(at),
                _ => None,
            })
            .expect("r1 took r0's ranges");
        eprintln!(
            "{server}: cut off, r0 stopped {:.2} s after the cut; r1 took its ranges {:.2} s after the cut",
            secs(lapsed - cut),
            secs(taken - cut)
        );
        assert!(lapsed < taken, "the cut-off replica must stop before its range is taken");
        replicas[0].proxy.restore();
        covered(&[&replicas[0], &replicas[1]], true, "r0 back").await;

        // The churn stops; every object is reconciled after its last change.
        stop.store(true, Ordering::Relaxed);
        let changes = churning.await.expect("churn");
        let finals: BTreeMap<String, String> = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|cm| {
                (
                    format!("{ns}/{}", cm.metadata.name.unwrap_or_default()),
                    cm.data.unwrap_or_default().remove("gen").unwrap_or_default(),
                )
            })
            .collect();
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            let spans = spans(&replicas);
            let missing: Vec<&String> = finals
                .iter()
                .filter(|(key, generation)| {
                    !spans
                        .iter()
                        .any(|s| s.completed && &s.key == *key && &s.generation == *generation)
                })
                .map(|(key, _)| key)
                .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} objects never reconciled after their last change, such as {:?}",
                missing.len(),
                missing.first()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for replica in &mut replicas[..2] {
            replica.kill().await;
        }

        // No object reconciled by two replicas at overlapping times.
        let spans = spans(&replicas);
        let mut by_key: HashMap<&str, Vec<&Span>> = HashMap::new();
        for span in &spans {
            by_key.entry(&span.key).or_default().push(span);
        }
        let mut overlaps = Vec::new();
        for (key, spans) in &by_key {
            for (i, a) in spans.iter().enumerate() {
                for b in &spans[i + 1..] {
                    if a.replica != b.replica && a.start < b.end && b.start < a.end {
                        overlaps.push(format!("{key}: {} and {}", a.replica, b.replica));
                    }
                }
            }
        }
        let stopped = spans.iter().filter(|s| !s.completed).count();
        eprintln!(
            "{server}: {changes} changes, {} reconciles ({stopped} stopped or killed), {} objects at the end, {} overlapping reconciles",
            spans.len(),
            finals.len(),
            overlaps.len()
        );
        assert!(overlaps.is_empty(), "reconciled by two replicas at once: {overlaps:?}");
        // KACHE_KEEP_REPLICA_LOGS keeps the replicas' logs and stderr for reading.
        if std::env::var_os("KACHE_KEEP_REPLICA_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            eprintln!("{server}: the replicas' logs are in {}", dir.display());
        }
    }
}

/// The longest time any hash had no owner between `from` and `to`, from the replicas' logs.
fn longest_unowned(replicas: &[&Replica], from: u128, to: u128) -> u128 {
    let mut events: Vec<(u128, usize, Ranges)> = Vec::new();
    let mut bounds = vec![0u128, 1 << 64];
    for (i, replica) in replicas.iter().enumerate() {
        for line in replica.held_lines() {
            if let Line::Held(ranges, at) = line {
                for range in ranges.shard_ranges() {
                    bounds.push(u128::from(range.start()));
                    bounds.push(range.end().map_or(1 << 64, u128::from));
                }
                events.push((at, i, ranges));
            }
        }
        if let Some(gone) = replica.gone_at {
            events.push((gone, i, Ranges::empty()));
        }
    }
    bounds.sort_unstable();
    bounds.dedup();
    events.sort_by_key(|(at, i, _)| (*at, *i));
    // A hash of each elementary interval, and since when it has had no owner.
    let probes: Vec<u64> = bounds
        .windows(2)
        .filter_map(|w| u64::try_from(w[0]).ok())
        .collect();
    let mut held = vec![Ranges::empty(); replicas.len()];
    let mut since: Vec<Option<u128>> = vec![None; probes.len()];
    let mut longest = 0;
    for (at, i, ranges) in events
        .into_iter()
        .chain([(to, usize::MAX, Ranges::empty())])
    {
        if i != usize::MAX {
            held[i] = ranges;
        }
        if at < from {
            continue;
        }
        for (probe, since) in probes.iter().zip(&mut since) {
            let owned = held.iter().any(|r| r.contains(*probe));
            match (owned, *since) {
                (false, None) => *since = Some(at.max(from)),
                (true, Some(start)) => {
                    longest = longest.max(at - start);
                    *since = None;
                }
                _ => {}
            }
        }
        if i == usize::MAX {
            for start in since.iter().flatten() {
                longest = longest.max(to - start);
            }
        }
    }
    longest
}
