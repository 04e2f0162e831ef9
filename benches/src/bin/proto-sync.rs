//! Protobuf against JSON on the wire: the initial sync of the same `ConfigMap`s from a real API
//! server (kache-testenv), by kache's `protobuf_watcher` and its JSON `watcher` (each with a
//! streaming list where the server serves them, and with paged `ListWatch`), beside a raw read
//! of the same bytes in each encoding: the streaming list read until its end bookmark, and one
//! unpaginated LIST. Then the decoding alone of the same list, in memory: `serde_json` into
//! k8s-openapi's types against prost into k8s-pb's (with `Proto`'s metadata conversion).
//!
//! Per server: seeds the objects once (32 creates in flight), runs one untimed round, then
//! `RUNS` rounds in which every variant runs once, the order rotating each round; time is from
//! starting the request (or the watcher) to the end bookmark, the whole body, or the store's
//! `wait_synced`. Prints one Markdown table per server.
//!
//! Run: `cargo run --release -p kache-benches --bin proto-sync`.
//! Environment: `KACHE_BENCH_SERVERS` (`legacy,modern` by default), `KACHE_BENCH_OBJECTS`
//! (default 10000), `KACHE_BENCH_RUNS` (timed rounds, default 7).

use std::future::ready;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_pb::api::core::v1::{ConfigMap as PbConfigMap, ConfigMapList as PbConfigMapList};
use kache_benches::{
    BoxError, Encoding, Results, Table, bench_servers, env_usize, fmt_ns, percentile, seeded_server,
};
use kache_store::ReflectExt;
use kache_testenv::Server;
use kache_watch::{Config, InitialListStrategy, Proto};
use kube_client::api::{ListParams, ObjectList, WatchParams};
use kube_client::{Api, Client};
use prost::Message;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// The streaming list's bytes, read until the end bookmark, nothing decoded.
    RawStream(Encoding),
    /// One unpaginated LIST's bytes, nothing decoded.
    RawList(Encoding),
    /// kache's watcher and store, streaming list.
    KacheStream(Encoding),
    /// kache's watcher and store, paged LIST (500) then WATCH.
    KacheListWatch(Encoding),
}

impl Variant {
    const ALL: [Self; 8] = [
        Self::RawStream(Encoding::Protobuf),
        Self::KacheStream(Encoding::Protobuf),
        Self::RawStream(Encoding::Json),
        Self::KacheStream(Encoding::Json),
        Self::RawList(Encoding::Protobuf),
        Self::KacheListWatch(Encoding::Protobuf),
        Self::RawList(Encoding::Json),
        Self::KacheListWatch(Encoding::Json),
    ];

    fn applies_to(self, server: Server) -> bool {
        match self {
            Self::RawStream(_) | Self::KacheStream(_) => server.serves_streaming_lists(),
            _ => true,
        }
    }

    fn label(self) -> String {
        match self {
            Self::RawStream(e) => format!("raw streaming list, {} bytes", e.label()),
            Self::RawList(e) => format!("raw LIST unpaginated, {} bytes", e.label()),
            Self::KacheStream(e) => format!("kache StreamingList, {}", e.label()),
            Self::KacheListWatch(e) => format!("kache ListWatch page 500, {}", e.label()),
        }
    }

    /// The raw read that a kache variant is held against.
    fn raw_counterpart(self) -> Option<Self> {
        match self {
            Self::KacheStream(e) => Some(Self::RawStream(e)),
            Self::KacheListWatch(e) => Some(Self::RawList(e)),
            _ => None,
        }
    }
}

/// The streaming list's end bookmark carries this annotation, in either encoding.
const END_MARK: &[u8] = b"k8s.io/initial-events-end";

/// Reads a streaming list's body until its end bookmark: returns the bytes read. The server
/// sends the bookmark last and then nothing until a change, so it ends a chunk; only the last
/// bytes of the stream are searched, to keep the reader at the speed of the wire.
async fn raw_stream(
    client: &Client,
    api: &Api<ConfigMap>,
    encoding: Encoding,
) -> Result<usize, BoxError> {
    let params = WatchParams {
        bookmarks: true,
        send_initial_events: true,
        ..WatchParams::default()
    };
    let mut request = kube_client::core::Request::new(api.resource_url()).watch(&params, "")?;
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(encoding.watch_media_type()),
    );
    request.headers_mut().insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
    let response = client
        .send(request.map(kube_client::client::Body::from))
        .await?;
    let mut body = response.into_body().into_data_stream();
    let mut read = 0;
    let mut tail: Vec<u8> = Vec::with_capacity(1024);
    while let Some(chunk) = body.try_next().await? {
        read += chunk.len();
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(512)..]);
        if tail.len() > 512 {
            tail.drain(..tail.len() - 512);
        }
        if tail.windows(END_MARK.len()).any(|w| w == END_MARK) {
            return Ok(read);
        }
    }
    Err("the streaming list ended before its end bookmark".into())
}

/// One unpaginated LIST's body, undecoded.
async fn raw_list(
    client: &Client,
    api: &Api<ConfigMap>,
    encoding: Encoding,
) -> Result<Bytes, BoxError> {
    let mut request =
        kube_client::core::Request::new(api.resource_url()).list(&ListParams::default())?;
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(encoding.media_type()),
    );
    let response = client
        .send(request.map(kube_client::client::Body::from))
        .await?;
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Syncs a kache store from nothing; returns its size once ready.
async fn kache(
    api: &Api<ConfigMap>,
    encoding: Encoding,
    config: Config,
) -> Result<usize, BoxError> {
    match encoding {
        Encoding::Json => ready_len(kache_watch::watcher(api.clone(), config)).await,
        Encoding::Protobuf => {
            let api: Api<Proto<PbConfigMap>> = Api::namespaced(
                api.clone().into_client(),
                api.namespace().unwrap_or_default(),
            );
            ready_len(kache_watch::protobuf_watcher(api, config)).await
        }
    }
}

/// Applies `events` to a new store until it is ready; returns its size.
async fn ready_len<K, S>(events: S) -> Result<usize, BoxError>
where
    K: kube_client::Resource + Send + Sync + 'static,
    S: futures::Stream<Item = kache_watch::Result<kache_watch::Event<K>>> + Send + 'static,
{
    let (store, writer) = kache_store::store::<K>();
    let driver = tokio::spawn(events.reflect(writer).for_each(|_| ready(())));
    store.wait_synced().await?;
    let n = store.len();
    driver.abort();
    Ok(n)
}

/// Runs `variant` once: the objects it synced (or, for raw reads, the bytes it read).
async fn run(variant: Variant, api: &Api<ConfigMap>) -> Result<usize, BoxError> {
    let client = api.clone().into_client();
    match variant {
        Variant::RawStream(e) => raw_stream(&client, api, e).await,
        Variant::RawList(e) => Ok(raw_list(&client, api, e).await?.len()),
        Variant::KacheStream(e) => kache(api, e, Config::default().streaming_lists()).await,
        Variant::KacheListWatch(e) => {
            let config = Config::default()
                .initial_list_strategy(InitialListStrategy::ListWatch)
                .page_size(500);
            kache(api, e, config).await
        }
    }
}

/// Median decode times of the same list, fetched once in each encoding.
struct DecodeTimes {
    /// `serde_json` into k8s-openapi's `ObjectList<ConfigMap>`.
    json: Duration,
    /// prost into k8s-pb's `ConfigMapList`, nothing more.
    prost: Duration,
    /// prost, then each item's metadata converted (`Proto::new`), as the watcher does.
    proto: Duration,
    /// Of the conversion: parsing `managedFields`' `fieldsV1` (JSON inside protobuf) alone.
    fields_v1: Duration,
}

/// Decodes the same list `runs` times each way, alternating.
fn decode_times(
    json: &Bytes,
    proto: &Bytes,
    n: usize,
    runs: usize,
) -> Result<DecodeTimes, BoxError> {
    let decode_pb = || -> Result<PbConfigMapList, BoxError> {
        let mut body = proto.clone();
        if !body.starts_with(b"k8s\0") {
            return Err("no protobuf envelope".into());
        }
        body.advance(4);
        let envelope = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(body)?;
        Ok(PbConfigMapList::decode(
            envelope.raw.unwrap_or_default().as_slice(),
        )?)
    };
    let (mut json_times, mut prost_times, mut proto_times) = (Vec::new(), Vec::new(), Vec::new());
    let mut fields_v1_times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let list: ObjectList<ConfigMap> = serde_json::from_slice(json)?;
        json_times.push(start.elapsed());
        assert_eq!(list.items.len(), n);
        drop(list);

        let start = Instant::now();
        let list = decode_pb()?;
        prost_times.push(start.elapsed());
        assert_eq!(list.items.len(), n);
        drop(list);

        let start = Instant::now();
        let items = decode_pb()?
            .items
            .into_iter()
            .map(Proto::new)
            .collect::<Result<Vec<_>, _>>()?;
        proto_times.push(start.elapsed());
        assert_eq!(items.len(), n);

        let list = decode_pb()?;
        let start = Instant::now();
        let mut parsed = Vec::with_capacity(n);
        for item in &list.items {
            for entry in item.metadata.iter().flat_map(|m| &m.managed_fields) {
                if let Some(raw) = entry.fields_v1.as_ref().and_then(|f| f.raw.as_deref()) {
                    parsed.push(serde_json::from_slice::<serde_json::Value>(raw)?);
                }
            }
        }
        fields_v1_times.push(start.elapsed());
        assert_eq!(parsed.len(), n, "one managedFields entry per object");
    }
    Ok(DecodeTimes {
        json: percentile(&mut json_times, 50.0),
        prost: percentile(&mut prost_times, 50.0),
        proto: percentile(&mut proto_times, 50.0),
        fields_v1: percentile(&mut fields_v1_times, 50.0),
    })
}

async fn bench_server(
    server: Server,
    n: usize,
    runs: usize,
    results: &mut Results,
) -> Result<String, BoxError> {
    let (env, _, api) = seeded_server(server, "bench-proto", n).await?;

    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| v.applies_to(server))
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    let mut sizes = vec![0; variants.len()];
    for round in 0..=runs {
        for k in 0..variants.len() {
            let v = (k + round) % variants.len();
            let start = Instant::now();
            let size = tokio::time::timeout(Duration::from_secs(120), run(variants[v], &api))
                .await
                .map_err(|_| format!("{} took over 120 s", variants[v].label()))??;
            let elapsed = start.elapsed();
            if matches!(
                variants[v],
                Variant::KacheStream(_) | Variant::KacheListWatch(_)
            ) {
                assert_eq!(size, n, "{}", variants[v].label());
            }
            sizes[v] = size;
            if round > 0 {
                times[v].push(elapsed);
            }
        }
        eprintln!("[{server}] round {round}/{runs} done");
    }
    let medians: Vec<Duration> = times.iter_mut().map(|t| percentile(t, 50.0)).collect();

    let mut table = Table::new(&[
        "variant",
        "median",
        "min .. max",
        "bytes read",
        "vs its raw read",
    ]);
    for (v, variant) in variants.iter().enumerate() {
        let versus = variant
            .raw_counterpart()
            .and_then(|raw| variants.iter().position(|x| *x == raw))
            .map_or_else(
                || "-".to_owned(),
                |r| {
                    format!(
                        "{:.2}x",
                        medians[v].as_secs_f64() / medians[r].as_secs_f64()
                    )
                },
            );
        let min = times[v].iter().min().copied().unwrap_or_default();
        let max = times[v].iter().max().copied().unwrap_or_default();
        let bytes = match variant {
            Variant::RawStream(_) | Variant::RawList(_) => megabytes(sizes[v]),
            _ => "-".to_owned(),
        };
        results.data(serde_json::json!({
            "server": server.to_string(),
            "objects": n,
            "variant": variant.label(),
            "median_secs": medians[v].as_secs_f64(),
            "bytes": matches!(variant, Variant::RawStream(_) | Variant::RawList(_))
                .then_some(sizes[v]),
        }));
        table.row(vec![
            variant.label(),
            fmt_ns(medians[v]),
            format!("{} .. {}", fmt_ns(min), fmt_ns(max)),
            bytes,
            versus,
        ]);
    }

    let client = api.clone().into_client();
    let json = raw_list(&client, &api, Encoding::Json).await?;
    let proto = raw_list(&client, &api, Encoding::Protobuf).await?;
    let decode = decode_times(&json, &proto, n, runs.max(5))?;
    let title = format!(
        "proto-sync, {server}: {n} ConfigMaps (about 400 bytes of data, 4 labels, 2 \
         annotations, one managedFields entry) on loopback; median of {runs} runs per variant, \
         order rotating"
    );
    results.table(&format!("{server}-sync"), &title, &table);
    let decode_title = format!(
        "decoding the same unpaginated list in memory ({} JSON, {} protobuf), median of {} \
         runs, alternating",
        megabytes(json.len()),
        megabytes(proto.len()),
        runs.max(5)
    );
    let decoding = decode_table(&decode);
    results.table(&format!("{server}-decode"), &decode_title, &decoding);
    let report = format!(
        "{title}\n\n{}\n{decode_title}\n\n{}",
        table.render(),
        decoding.render()
    );
    drop(env);
    Ok(report)
}

/// The decoding times as a table, each beside JSON's.
fn decode_table(decode: &DecodeTimes) -> Table {
    let mut table = Table::new(&["decoding the unpaginated list in memory", "time", "/ JSON"]);
    let json_secs = decode.json.as_secs_f64();
    for (what, time) in [
        ("serde_json into k8s-openapi", decode.json),
        ("prost into k8s-pb alone", decode.prost),
        (
            "prost plus the metadata conversion, managedFields kept",
            decode.proto,
        ),
        (
            "of which parsing managedFields' fieldsV1 JSON",
            decode.fields_v1,
        ),
    ] {
        table.row(vec![
            what.to_owned(),
            fmt_ns(time),
            format!("{:.2}x", time.as_secs_f64() / json_secs),
        ]);
    }
    table
}

#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts far below 2^52, shown to one decimal"
)]
fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let n = env_usize("KACHE_BENCH_OBJECTS", 10_000);
    let runs = env_usize("KACHE_BENCH_RUNS", 7).max(1);
    let mut results = Results::new(
        "proto-sync",
        "cargo run --release -p kache-benches --bin proto-sync",
    );
    results.setting("objects", n);
    results.setting("runs", runs);
    for server in bench_servers()? {
        let report = bench_server(server, n, runs, &mut results).await?;
        println!("\n{report}");
    }
    results.write();
    Ok(())
}
