//! Warm restart against real API servers: a process that restores its store from a snapshot
//! and resumes its watch, against one that starts cold (LIST or streaming list), after a
//! downtime with changes made meanwhile. Also the snapshot format: `MessagePack`
//! (`rmp-serde`, what kache-store writes) against JSON (`serde_json`).
//!
//! Per server: seeds `KACHE_BENCH_OBJECTS` `ConfigMaps` (512 bytes of data, 5 labels); then per
//! run: a child process syncs cold and saves a snapshot (the process that goes down), the
//! bench waits `KACHE_BENCH_DOWN_SECS` seconds making `KACHE_BENCH_CHANGES` changes (a third
//! each creates, updates, deletes), takes a fresh LIST as the expected state, and runs one
//! child that restores the snapshot (warm) and one that starts with no snapshot (cold), in
//! alternating order. Each child reports, from its `main` to the moment its store equals the
//! expected LIST (every key at its resourceVersion): the time, the bytes the API server sent it
//! (counted by a loopback proxy in the child), the requests it made by kind, and its peak RSS
//! above its RSS at start. Prints one Markdown table per server, medians over the runs.
//!
//! Run: `just bench-warm` or `cargo run --release -p kache-benches --bin warm-restart`.
//! Environment: `KACHE_BENCH_SERVERS` (`legacy,modern` by default), `KACHE_BENCH_OBJECTS`
//! (10000), `KACHE_BENCH_RUNS` (1), `KACHE_BENCH_DOWN_SECS` (30), `KACHE_BENCH_CHANGES` (300),
//! `KACHE_BENCH_FORMAT_ONLY=1` for the format table alone.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kache_benches::{
    BoxError, ChildReport, Results, Table, bench_servers, env_usize, fmt_bytes, fmt_ns, median,
    percentile, pod, proc_status_bytes, ratio,
};
use kache_store::{ReflectExt, SnapshotFile, Store, WatchIdentity, Writer};
use kache_testenv::{Proxy, RecordedRequest, RequestKind, RequestLog, Server, TestEnv};
use kache_watch::{Config, Event, watcher};
use kube_client::api::{ListParams, Patch, PatchParams};
use kube_client::config::{KubeConfigOptions, Kubeconfig};
use kube_client::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The hidden first argument of a child: `warm-restart --child MODE KUBECONFIG NAMESPACE
/// SNAPSHOT EXPECTED`, MODE one of `prime` (sync cold, save the snapshot), `cold`, `warm`.
const CHILD_ARG: &str = "--child";
const CHILD_REPORT: &str = "warm-restart-child:";

/// A `ConfigMap` of the shape: 512 bytes of data, 5 labels.
fn config_map(name: &str) -> ConfigMap {
    let labels = [
        ("label-0", "value-0"),
        ("label-1", "value-1"),
        ("label-2", "value-2"),
        ("label-3", "value-3"),
        ("label-4", "value-4"),
    ];
    kache_testenv::configmap(name, &labels, 512)
}

// ---------------------------------------------------------------------------------------
// The format.

/// One format's median times and size over `objects`.
struct FormatRow {
    name: &'static str,
    encode: Duration,
    decode: Duration,
    bytes: usize,
}

fn measure_format<K, E, D>(name: &'static str, objects: &[K], encode: E, decode: D) -> FormatRow
where
    E: Fn(&[K]) -> Vec<u8>,
    D: Fn(&[u8]) -> Vec<K>,
{
    let runs = 9;
    let (mut encode_times, mut decode_times) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let encoded = encode(objects);
        encode_times.push(start.elapsed());
        let start = Instant::now();
        let decoded = decode(&encoded);
        decode_times.push(start.elapsed());
        assert_eq!(decoded.len(), objects.len());
        bytes = encoded.len();
    }
    FormatRow {
        name,
        encode: percentile(&mut encode_times, 50.0),
        decode: percentile(&mut decode_times, 50.0),
        bytes,
    }
}

fn format_rows<K: Serialize + DeserializeOwned + PartialEq>(objects: &[K]) -> Vec<FormatRow> {
    // Both must give the objects back exactly.
    let json = serde_json::to_vec(objects).expect("json");
    assert!(serde_json::from_slice::<Vec<K>>(&json).expect("json") == objects);
    let msgpack = rmp_serde::to_vec_named(objects).expect("msgpack");
    assert!(rmp_serde::from_slice::<Vec<K>>(&msgpack).expect("msgpack") == objects);
    vec![
        measure_format(
            "JSON (serde_json)",
            objects,
            |o| serde_json::to_vec(o).expect("json"),
            |b| serde_json::from_slice(b).expect("json"),
        ),
        measure_format(
            "MessagePack, named fields (rmp-serde)",
            objects,
            |o| rmp_serde::to_vec_named(o).expect("msgpack"),
            |b| rmp_serde::from_slice(b).expect("msgpack"),
        ),
    ]
}

#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts far below 2^52, shown as a size or a ratio"
)]
fn format_table(results: &mut Results) -> String {
    let config_maps: Vec<ConfigMap> = (0..10_000)
        .map(|i| {
            let mut cm = config_map(&format!("cm-{i}"));
            cm.metadata.namespace = Some("bench".to_owned());
            cm.metadata.uid = Some(format!("8b2c1e4a-0000-4c1d-9f3e-{i:012x}"));
            cm.metadata.resource_version = Some((1000 + i).to_string());
            cm
        })
        .collect();
    let pods: Vec<Pod> = (0..2_000).map(|i| pod(i, 1000 + i as u64)).collect();
    let mut table = Table::new(&[
        "objects",
        "format",
        "encode",
        "decode",
        "size",
        "decode / JSON's",
        "size / JSON's",
    ]);
    for (what, rows) in [
        (
            "10,000 ConfigMaps (512 B data, 5 labels)",
            format_rows(&config_maps),
        ),
        (
            "2,000 Pods (2 containers, managed fields)",
            format_rows(&pods),
        ),
    ] {
        let json = &rows[0];
        for row in &rows {
            table.row(vec![
                what.to_owned(),
                row.name.to_owned(),
                fmt_ns(row.encode),
                fmt_ns(row.decode),
                fmt_bytes(row.bytes as f64),
                ratio(row.decode.as_secs_f64(), json.decode.as_secs_f64()),
                ratio(row.bytes as f64, json.bytes as f64),
            ]);
        }
    }
    let title = "snapshot format: median of 9 encodes and decodes of the whole set, in memory";
    results.table("format", title, &table);
    format!("{title}\n\n{}", table.render())
}

// ---------------------------------------------------------------------------------------
// The child: one process start, measured.

/// The keys whose stored version differs from the expected one (missing or extra included).
struct Mismatch {
    expected: HashMap<String, String>,
    wrong: HashSet<String>,
}

impl Mismatch {
    fn new(expected: HashMap<String, String>) -> Self {
        let wrong = expected.keys().cloned().collect();
        Self { expected, wrong }
    }

    fn check(&mut self, name: &str, stored: Option<&str>) {
        if self.expected.get(name).map(String::as_str) == stored {
            self.wrong.remove(name);
        } else {
            self.wrong.insert(name.to_owned());
        }
    }

    /// Compares every object: after a restore, and when a list is swapped in.
    fn recheck(&mut self, store: &Store<ConfigMap>, namespace: &str) {
        self.wrong.clear();
        for (name, version) in &self.expected {
            let stored = store.get(Some(namespace), name);
            if stored
                .and_then(|cm| cm.metadata.resource_version.clone())
                .as_ref()
                != Some(version)
            {
                self.wrong.insert(name.clone());
            }
        }
        // Objects that should not be there, if the counts say there are some.
        if store.len() != self.expected.len() - self.wrong.len() {
            for cm in store.state() {
                let name = cm.metadata.name.as_deref().unwrap_or_default();
                if !self.expected.contains_key(name) {
                    self.wrong.insert(name.to_owned());
                }
            }
        }
    }
}

/// The requests a child made, by kind: lists (pages), streaming lists, watches, and the
/// restore's checks (the cluster's uid and one object's metadata, not lists of the objects).
fn count_requests(requests: &[RecordedRequest]) -> (usize, usize, usize, usize) {
    let is_check = |r: &RecordedRequest| {
        r.path().ends_with("/namespaces/kube-system") || r.param("limit").as_deref() == Some("1")
    };
    let count = |kind| {
        requests
            .iter()
            .filter(|r| r.kind() == kind && !is_check(r))
            .count()
    };
    let checks = requests.iter().filter(|r| is_check(r)).count();
    (
        count(RequestKind::List),
        count(RequestKind::StreamingList),
        count(RequestKind::Watch),
        checks,
    )
}

/// The restore's checks once more, alone, against the server as it is now: what they cost
/// (inside the restore they run while the file is decoded).
async fn time_checks(api: &Api<ConfigMap>) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let (scope, client) = (Config::default(), Client::from(api.clone()));
    let (uid, point) = futures::join!(
        kache_watch::cluster_uid(&client),
        kache_watch::server_point(api, &scope)
    );
    let (_, _) = (uid?, point?);
    Ok(started.elapsed())
}

async fn child(args: &[String], started: Instant) -> Result<(), BoxError> {
    let [mode, kubeconfig, namespace, snapshot, expected] = args else {
        return Err("usage: warm-restart --child MODE KUBECONFIG NS SNAPSHOT EXPECTED".into());
    };
    let rss_start = proc_status_bytes("VmRSS")?;
    let config = kube_client::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(Path::new(kubeconfig))?,
        &KubeConfigOptions::default(),
    )
    .await?;
    // Every byte the server sends this process goes through the proxy, which counts it;
    // every request the process makes is recorded.
    let proxy = Proxy::start(config.cluster_url.to_string().trim_end_matches('/')).await?;
    let requests = RequestLog::new();
    let api: Api<ConfigMap> = Api::namespaced(requests.client(&proxy.config(&config))?, namespace);
    let file = SnapshotFile::new(
        snapshot,
        WatchIdentity::of::<ConfigMap>(Some(namespace), &Config::default()),
    );

    let mut writer = Writer::<ConfigMap>::new();
    let mut watch_config = Config::default();
    let mut restored_bytes = 0;
    if mode == "warm" {
        let restored = writer
            .restore(&file, &api)
            .await?
            .ok_or("no snapshot to restore")?;
        restored_bytes = restored.bytes;
        watch_config = restored.resume(watch_config);
    }
    let restored_at = started.elapsed();
    let mut first_event_at = None;
    let store = writer.as_reader();
    let mut mismatch = Mismatch::new(if mode == "prime" {
        HashMap::new()
    } else {
        std::fs::read_to_string(expected)?
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    });
    if store.is_synced() {
        mismatch.recheck(&store, namespace);
    }
    let mut events = std::pin::pin!(watcher(api.clone(), watch_config).reflect(writer));
    while !(store.is_synced() && (mode == "prime" || mismatch.wrong.is_empty())) {
        let Some(item) = events.next().await else {
            return Err("the watch ended".into());
        };
        if first_event_at.is_none() && item.is_ok() {
            first_event_at = Some(started.elapsed());
        }
        match item {
            Ok(Event::Apply(cm)) => {
                let name = cm.metadata.name.as_deref().unwrap_or_default();
                mismatch.check(name, cm.metadata.resource_version.as_deref());
            }
            Ok(Event::Delete(cm)) => {
                mismatch.check(cm.metadata.name.as_deref().unwrap_or_default(), None);
            }
            Ok(Event::InitDone) => mismatch.recheck(&store, namespace),
            Ok(_) => {}
            Err(err) => eprintln!("watch error: {err}"),
        }
    }
    let elapsed = started.elapsed();
    let peak = proc_status_bytes("VmHWM")?.saturating_sub(rss_start);
    let bytes = proxy.bytes_from_server();
    let (lists, streams, watches, checks) = count_requests(&requests.requests());
    if mode == "prime" {
        file.save(&store)?;
    }
    let check = time_checks(&api).await?;
    eprintln!(
        "{mode}: restore done at {restored_at:?}, first event at {first_event_at:?}, equal at {elapsed:?}; the checks alone took {check:?} ({checks} requests in the restore)"
    );
    println!(
        "{CHILD_REPORT} nanos={} bytes={bytes} lists={lists} streams={streams} watches={watches} peak={peak} snapshot={restored_bytes} objects={}",
        elapsed.as_nanos(),
        store.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The parent.

/// What one child reported.
#[derive(Clone, Debug, Default)]
struct Report {
    time: Duration,
    bytes: u64,
    lists: u64,
    streams: u64,
    watches: u64,
    peak: u64,
    snapshot: u64,
    objects: u64,
}

fn run_child(
    mode: &str,
    env: &TestEnv,
    namespace: &str,
    snapshot: &Path,
    expected: &Path,
) -> Result<Report, BoxError> {
    let output = Command::new(std::env::current_exe()?)
        .arg(CHILD_ARG)
        .arg(mode)
        .arg(env.kubeconfig_path())
        .arg(namespace)
        .arg(snapshot)
        .arg(expected)
        .output()?;
    let report = ChildReport::from_output(&output, CHILD_REPORT, &format!("{mode} child"))?;
    for phase in String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("restore done"))
    {
        eprintln!("  {phase}");
    }
    let field = |name: &str| report.field::<u64>(name);
    Ok(Report {
        time: Duration::from_nanos(field("nanos")?),
        bytes: field("bytes")?,
        lists: field("lists")?,
        streams: field("streams")?,
        watches: field("watches")?,
        peak: field("peak")?,
        snapshot: field("snapshot")?,
        objects: field("objects")?,
    })
}

async fn seed(api: &Api<ConfigMap>, names: impl Iterator<Item = String>) -> Result<(), BoxError> {
    kache_testenv::create_all(api, names.map(|name| config_map(&name))).await?;
    Ok(())
}

/// The downtime: `changes` changes (a third each creates, updates, deletes) spread over it,
/// then the rest of `down`.
async fn downtime(
    api: &Api<ConfigMap>,
    n: usize,
    run: usize,
    changes: usize,
    down: Duration,
) -> Result<(), BoxError> {
    let start = Instant::now();
    let third = changes / 3;
    seed(api, (0..third).map(|i| format!("new-{run}-{i}"))).await?;
    let (patch, params) = (
        Patch::Merge(serde_json::json!({"data": {"run": run.to_string()}})),
        PatchParams::default(),
    );
    kache_testenv::run_all((0..third).map(|i| {
        let name = format!("cm-{}", (n / 2 + run * third + i) % n);
        let (patch, params) = (&patch, &params);
        async move { api.patch(&name, params, patch).await }
    }))
    .await?;
    kache_testenv::delete_all(api, (0..third).map(|i| format!("cm-{}", run * third + i))).await?;
    tokio::time::sleep(down.saturating_sub(start.elapsed())).await;
    Ok(())
}

fn median_report(reports: &[Report]) -> Report {
    let pick = |f: fn(&Report) -> u64| median(&mut reports.iter().map(f).collect::<Vec<_>>());
    let mut times: Vec<Duration> = reports.iter().map(|r| r.time).collect();
    Report {
        time: percentile(&mut times, 50.0),
        bytes: pick(|r| r.bytes),
        lists: pick(|r| r.lists),
        streams: pick(|r| r.streams),
        watches: pick(|r| r.watches),
        peak: pick(|r| r.peak),
        snapshot: pick(|r| r.snapshot),
        objects: pick(|r| r.objects),
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts far below 2^52, shown as a size or a ratio"
)]
async fn bench_server(
    server: Server,
    n: usize,
    runs: usize,
    changes: usize,
    down: Duration,
    results: &mut Results,
) -> Result<String, BoxError> {
    eprintln!("[{server}] starting a local control plane...");
    let env = TestEnv::builder().server(server).start().await?;
    let namespace = env.create_namespace("bench-warm").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client(), &namespace);
    let seeding = Instant::now();
    seed(&api, (0..n).map(|i| format!("cm-{i}"))).await?;
    eprintln!(
        "[{server}] seeded {n} ConfigMaps in {}",
        fmt_ns(seeding.elapsed())
    );
    let dir = std::env::temp_dir().join(format!("kache-bench-warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let snapshot: PathBuf = dir.join("configmaps.snapshot");
    let expected: PathBuf = dir.join("expected.txt");

    let (mut warm, mut cold) = (Vec::new(), Vec::new());
    let mut saved_bytes = 0;
    for run in 0..runs {
        run_child("prime", &env, &namespace, &snapshot, &expected)?;
        saved_bytes = std::fs::metadata(&snapshot)?.len();
        eprintln!("[{server}] run {run}: snapshot saved; down for {down:?} with {changes} changes");
        downtime(&api, n, run, changes, down).await?;
        let list = api.list(&ListParams::default()).await?;
        let lines: Vec<String> = list
            .items
            .iter()
            .map(|cm| {
                format!(
                    "{} {}",
                    cm.metadata.name.as_deref().unwrap_or_default(),
                    cm.metadata.resource_version.as_deref().unwrap_or_default()
                )
            })
            .collect();
        std::fs::write(&expected, lines.join("\n"))?;
        for mode in if run % 2 == 0 {
            ["warm", "cold"]
        } else {
            ["cold", "warm"]
        } {
            let report = run_child(mode, &env, &namespace, &snapshot, &expected)?;
            if report.objects != list.items.len() as u64 {
                return Err(format!(
                    "{mode}: {} objects, expected {}",
                    report.objects,
                    list.items.len()
                )
                .into());
            }
            if mode == "warm" {
                warm.push(report);
            } else {
                cold.push(report);
            }
        }
        eprintln!("[{server}] run {run} done");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (warm, cold) = (median_report(&warm), median_report(&cold));
    let describe = match server {
        Server::Legacy => "kube-apiserver v1.20.2 (paged LIST)",
        Server::Modern => "the Kubernetes 1.36 apiserver library (streaming list)",
        _ => "an API server",
    };
    for (start, r) in [("cold", &cold), ("warm", &warm)] {
        results.data(serde_json::json!({
            "server": server.to_string(),
            "objects": n,
            "start": start,
            "secs": r.time.as_secs_f64(),
            "bytes": r.bytes,
            "lists": r.lists,
            "streams": r.streams,
            "watches": r.watches,
            "peak_rss_bytes": r.peak,
            "snapshot_bytes": saved_bytes,
        }));
    }
    let title = format!(
        "warm-restart, {server}: {n} ConfigMaps on {describe}; down {down:?} with {changes} \
         changes; snapshot file {}; median of {runs} run(s), each a fresh process, timed from \
         its main",
        fmt_bytes(saved_bytes as f64),
    );
    let table = table(&cold, &warm);
    results.table(&server.to_string(), &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts far below 2^52, shown as a size or a ratio"
)]
fn table(cold: &Report, warm: &Report) -> Table {
    let mut table = Table::new(&[
        "start",
        "time to a store equal to a fresh LIST",
        "bytes from the API server",
        "LIST requests",
        "streaming lists",
        "WATCH requests",
        "peak RSS above start",
    ]);
    for (label, r) in [
        ("cold (no snapshot)", cold),
        ("warm (snapshot restored)", warm),
    ] {
        table.row(vec![
            label.to_owned(),
            fmt_ns(r.time),
            fmt_bytes(r.bytes as f64),
            r.lists.to_string(),
            r.streams.to_string(),
            r.watches.to_string(),
            fmt_bytes(r.peak as f64),
        ]);
    }
    table.row(vec![
        "cold / warm".to_owned(),
        ratio(cold.time.as_secs_f64(), warm.time.as_secs_f64()),
        ratio(cold.bytes as f64, warm.bytes as f64),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
        ratio(cold.peak as f64, warm.peak as f64),
    ]);
    table
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        return child(&args[2..], started).await;
    }
    let mut results = Results::new(
        "warm-restart",
        "cargo run --release -p kache-benches --bin warm-restart",
    );
    println!("\n{}", format_table(&mut results));
    if std::env::var("KACHE_BENCH_FORMAT_ONLY").is_ok_and(|v| v == "1") {
        results.write();
        return Ok(());
    }
    let n = env_usize("KACHE_BENCH_OBJECTS", 10_000);
    let runs = env_usize("KACHE_BENCH_RUNS", 1).max(1);
    let changes = env_usize("KACHE_BENCH_CHANGES", 300);
    let down = Duration::from_secs(env_usize("KACHE_BENCH_DOWN_SECS", 30) as u64);
    results.setting("objects", n);
    results.setting("runs", runs);
    results.setting("changes", changes);
    results.setting("down_secs", down.as_secs());
    for server in bench_servers()? {
        let report = bench_server(server, n, runs, changes, down, &mut results).await?;
        println!("\n{report}");
    }
    results.write();
    Ok(())
}
