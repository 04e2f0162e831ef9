//! Where the bytes of a stored Pod go, in kache's default JSON mode and in protobuf, on real
//! Pods from a real API server.
//!
//! Per server: seeds Pods shaped like a Deployment's (two containers with env, ports, probes
//! and resources, a volume, labels, an owner reference) and writes each a status (conditions,
//! container statuses) through `pods/status`. Then, with dhat's heap profiler counting live
//! bytes and blocks:
//!
//! - *stored*: a store synced by kache's watcher (JSON, then protobuf), its live heap over
//!   the Pods: what the cache holds per Pod, its map and keys included;
//! - *decoded*: each Pod of a LIST decoded alone as the watcher decodes it (`managedFields`
//!   dropped; in protobuf, k8s-pb's message with its metadata in k8s-openapi's form);
//! - *exact*: a clone of that Pod, whose `Vec`s and `String`s have no spare capacity: what
//!   the watcher yields (`Config::compact`, on by default); the difference is what decoding
//!   left unused;
//! - in JSON, the Pod's contents walked through its `Serialize`: the bytes of its strings
//!   (the payload floor), its maps (each a B-tree node), and the strings another Pod holds
//!   too (what interning could share). Timestamps, which k8s-openapi keeps inline, are not
//!   counted as strings. The rest of the exact heap is struct bytes: the elements of `Vec`s,
//!   with their `None` fields.
//!
//! The allocator's own cost comes on top of the live bytes: glibc's malloc adds 8 bytes to
//! each block and rounds it up to 16, so about 16 bytes per block.
//!
//! Run: `cargo run --release -p kache-benches --bin pod-bytes`. Environment:
//! `KACHE_BENCH_SERVERS` (`legacy,modern` by default), `KACHE_BENCH_OBJECTS` (Pods, default
//! 2000).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::api::core::v1::{Pod as PbPod, PodList as PbPodList};
use kache_benches::{BoxError, Results, Table, bench_servers, env_usize, fmt_bytes, pod};
use kache_store::{ReflectExt, Store, Writer};
use kache_testenv::{Server, TestEnv};
use kache_watch::{Config, Proto, WatchStreamExt, protobuf_watcher, watcher};
use kube_client::api::{Api, Patch, PatchParams};
use prost::Message;
use serde::Serialize;
use serde::ser::{self, Impossible};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Live heap: bytes and blocks.
#[derive(Clone, Copy, Debug, Default)]
struct Heap {
    bytes: i64,
    blocks: i64,
}

impl Heap {
    fn now() -> Self {
        let stats = dhat::HeapStats::get();
        Self {
            bytes: i64::try_from(stats.curr_bytes).unwrap_or(i64::MAX),
            blocks: i64::try_from(stats.curr_blocks).unwrap_or(i64::MAX),
        }
    }

    /// `self - before`: what was added since `before`.
    fn since(self, before: Self) -> Self {
        Self {
            bytes: self.bytes - before.bytes,
            blocks: self.blocks - before.blocks,
        }
    }

    fn add(&mut self, other: Self) {
        self.bytes += other.bytes;
        self.blocks += other.blocks;
    }
}

/// What `f` allocated and still holds once it returns (its result kept).
fn measure<T>(f: impl FnOnce() -> T) -> (T, Heap) {
    let before = Heap::now();
    let value = f();
    (value, Heap::now().since(before))
}

/// A Pod's contents as its `Serialize` walks them.
#[derive(Debug, Default)]
struct Contents {
    /// Bytes of strings (map keys included), timestamps excepted.
    string_bytes: usize,
    /// Non-empty strings: each one heap block.
    strings: usize,
    /// Non-empty maps (`BTreeMap`s in k8s-openapi).
    maps: usize,
    map_entries: usize,
    /// Timestamps (inline in k8s-openapi, strings on the wire).
    timestamps: usize,
    /// Every non-empty string, for what other Pods share.
    values: Vec<String>,
}

impl Contents {
    fn of(pod: &Pod) -> Result<Self, BoxError> {
        let mut contents = Self::default();
        pod.serialize(&mut contents)?;
        Ok(contents)
    }
}

/// `2023-11-14T22:13:20Z` and the like: a k8s-openapi `Time` or `MicroTime`.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
        && s.ends_with('Z')
}

type Err = serde::de::value::Error;

macro_rules! ignore {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method(self, _: $ty) -> Result<(), Err> {
            Ok(())
        }
    )*};
}

impl ser::Serializer for &mut Contents {
    type Ok = ();
    type Error = Err;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Impossible<(), Err>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Err>;

    ignore! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_unit_struct(&'static str);
    }

    fn serialize_str(self, v: &str) -> Result<(), Err> {
        if is_timestamp(v) {
            self.timestamps += 1;
        } else if !v.is_empty() {
            self.string_bytes += v.len();
            self.strings += 1;
            self.values.push(v.to_owned());
        }
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Err> {
        self.string_bytes += v.len();
        self.strings += usize::from(!v.is_empty());
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Err> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Err> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Err> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Err> {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Err> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Err> {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Err> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self, Err> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Err> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Err> {
        Err(ser::Error::custom("no tuple variants in a Pod"))
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, Err> {
        let len = len.unwrap_or_default();
        self.maps += usize::from(len > 0);
        self.map_entries += len;
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Err> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Err> {
        Err(ser::Error::custom("no struct variants in a Pod"))
    }
}

macro_rules! compound {
    ($($trait:ident $method:ident;)*) => {$(
        impl ser::$trait for &mut Contents {
            type Ok = ();
            type Error = Err;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Err> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), Err> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq serialize_element;
    SerializeTuple serialize_element;
    SerializeTupleStruct serialize_field;
}

impl ser::SerializeMap for &mut Contents {
    type Ok = ();
    type Error = Err;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Err> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Err> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Err> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Contents {
    type Ok = ();
    type Error = Err;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Err> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), Err> {
        Ok(())
    }
}

/// One LIST of the namespace's Pods in `media_type`, whole.
async fn list_bytes(api: &Api<Pod>, media_type: &str) -> Result<Bytes, BoxError> {
    let request = http::Request::get(api.resource_url())
        .header(http::header::ACCEPT, media_type)
        .body(kube_client::client::Body::empty())?;
    let response = api.clone().into_client().send(request).await?;
    if !response.status().is_success() {
        return Err(format!("LIST in {media_type} answered {}", response.status()).into());
    }
    Ok(response.into_body().collect().await?.to_bytes())
}

/// Seeds `n` Pods and writes each its status.
async fn seed(api: &Api<Pod>, n: usize) -> Result<(), BoxError> {
    let pods = (0..n).map(|i| pod(i, 0));
    let statuses: Vec<(String, serde_json::Value)> = pods
        .clone()
        .map(|p| {
            let status = serde_json::json!({ "status": p.status });
            (p.metadata.name.unwrap_or_default(), status)
        })
        .collect();
    let created = pods.map(|mut p| {
        p.metadata.namespace = None;
        p.metadata.resource_version = None;
        p.status = None;
        p
    });
    kache_testenv::create_all(api, created).await?;
    kache_testenv::run_all(statuses.into_iter().map(|(name, status)| {
        let api = api.clone();
        async move {
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
        }
    }))
    .await?;
    Ok(())
}

/// The live heap of a store synced by `events`, over its objects.
async fn stored<K, S>(events: S, n: usize) -> Result<(Store<K>, Heap), BoxError>
where
    K: kube_client::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: futures::Stream<Item = kache_watch::Result<kache_watch::Event<K>>> + Send + 'static,
{
    let before = Heap::now();
    let writer = Writer::<K>::new();
    let store = writer.as_reader();
    tokio::spawn(
        events
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {}),
    );
    tokio::time::timeout(Duration::from_secs(300), store.wait_synced())
        .await
        .map_err(|_| "the store did not sync within 300 s")??;
    if store.len() != n {
        return Err(format!("the store holds {} Pods, not {n}", store.len()).into());
    }
    Ok((store, Heap::now().since(before)))
}

/// Per-Pod figures of one encoding.
#[derive(Debug, Default)]
struct PerPod {
    stored: Heap,
    decoded: Heap,
    exact: Heap,
}

/// Decodes each of `items` with `decode`, adding what each decoded object holds to
/// `decoded` and what an exact clone of it holds to `exact`; returns the objects and clones.
fn decode_each<I, T: Clone>(
    items: &[I],
    per_pod: &mut PerPod,
    decode: impl Fn(&I) -> Result<T, BoxError>,
) -> Result<(Vec<T>, Vec<T>), BoxError> {
    let mut objects = Vec::with_capacity(items.len());
    let mut clones = Vec::with_capacity(items.len());
    for item in items {
        let (object, heap) = measure(|| decode(item));
        per_pod.decoded.add(heap);
        let object = object?;
        let (clone, heap) = measure(|| object.clone());
        per_pod.exact.add(heap);
        objects.push(object);
        clones.push(clone);
    }
    Ok((objects, clones))
}

fn per(total: Heap, n: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let value = total.bytes as f64 / n as f64;
    value
}

fn blocks_per(total: Heap, n: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let value = total.blocks as f64 / n as f64;
    value
}

#[allow(clippy::too_many_lines)]
async fn bench_server(server: Server, n: usize, results: &mut Results) -> Result<String, BoxError> {
    eprintln!("[{server}] starting a local control plane...");
    let env = TestEnv::builder().server(server).start().await?;
    let namespace = env.create_namespace("pod-bytes").await?;
    let api: Api<Pod> = Api::namespaced(env.client(), &namespace);
    seed(&api, n).await?;
    eprintln!("[{server}] seeded {n} Pods with their status");
    let json_list = list_bytes(&api, JSON).await?;
    let mut proto_list = list_bytes(&api, PROTOBUF).await?;

    // JSON: the store, each Pod decoded alone, its exact clone, its contents.
    let mut json = PerPod::default();
    let (json_store, heap) = stored(watcher(api.clone(), Config::default()), n).await?;
    json.stored = heap;
    let list: serde_json::Value = serde_json::from_slice(&json_list)?;
    let items: Vec<String> = list["items"]
        .as_array()
        .ok_or("a LIST without items")?
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    drop(list);
    let (pods, clones) = decode_each(&items, &mut json, |item| {
        let mut pod = serde_json::from_str::<Pod>(item)?;
        pod.metadata.managed_fields = None;
        Ok(pod)
    })?;
    assert_eq!(clones, pods, "a clone equals its Pod");
    let (contents, map_node) = {
        let mut total = Contents::default();
        for pod in &pods {
            let one = Contents::of(pod)?;
            total.string_bytes += one.string_bytes;
            total.strings += one.strings;
            total.maps += one.maps;
            total.map_entries += one.map_entries;
            total.timestamps += one.timestamps;
            total.values.extend(one.values);
        }
        // A map of up to 11 entries is one leaf node; empty strings allocate nothing.
        let (_map, node) = measure(|| BTreeMap::from([(String::new(), String::new())]));
        (total, node)
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for value in &contents.values {
        *seen.entry(value.as_str()).or_default() += 1;
    }
    let shared_bytes: usize = seen
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(value, count)| value.len() * (count - 1))
        .sum();
    let node_bytes = usize::try_from(map_node.bytes).unwrap_or_default()
        * contents.map_entries.div_ceil(11).max(contents.maps);
    drop((pods, clones, items, json_store));

    // Protobuf: the same, on k8s-pb's messages.
    let mut proto = PerPod::default();
    let proto_api: Api<Proto<PbPod>> = Api::namespaced(env.client(), &namespace);
    let (proto_store, heap) = stored(protobuf_watcher(proto_api, Config::default()), n).await?;
    proto.stored = heap;
    if !proto_list.starts_with(b"k8s\0") {
        return Err("no protobuf envelope".into());
    }
    proto_list.advance(4);
    let envelope = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(proto_list)?;
    let items: Vec<Vec<u8>> = PbPodList::decode(envelope.raw.unwrap_or_default().as_slice())?
        .items
        .iter()
        .map(Message::encode_to_vec)
        .collect();
    let (pods, clones) = decode_each(&items, &mut proto, |item| {
        let mut pod = PbPod::decode(item.as_slice())?;
        if let Some(meta) = pod.metadata.as_mut() {
            meta.managed_fields = Vec::new();
        }
        Ok(Proto::new(pod)?)
    })?;
    drop((pods, clones, items, proto_store));

    let mut table = Table::new(&["per Pod", "kache JSON (default)", "kache protobuf"]);
    let bytes = |heap: Heap| fmt_bytes(per(heap, n));
    let row = |label: &str, json: String, proto: String| vec![label.to_owned(), json, proto];
    let spare = |p: &PerPod| p.decoded.since(p.exact);
    let store_rest = |p: &PerPod| p.stored.since(p.exact);
    #[allow(clippy::cast_precision_loss)]
    let floor = contents.string_bytes as f64 / n as f64;
    #[allow(clippy::cast_precision_loss)]
    let nodes = node_bytes as f64 / n as f64;
    let structs = |p: &PerPod| per(p.exact, n) - floor - nodes;
    table.row(row(
        "held by the store (live heap / Pods)",
        bytes(json.stored),
        bytes(proto.stored),
    ));
    table.row(row(
        "  the Pod, in exactly sized allocations (as the watcher yields it)",
        bytes(json.exact),
        bytes(proto.exact),
    ));
    table.row(row(
        "    its strings' bytes: the payload floor",
        fmt_bytes(floor),
        "same strings".to_owned(),
    ));
    table.row(row(
        "    B-tree nodes of its maps",
        fmt_bytes(nodes),
        "same maps".to_owned(),
    ));
    table.row(row(
        "    structs in its `Vec`s, `None` fields included (the rest)",
        fmt_bytes(structs(&json)),
        fmt_bytes(structs(&proto)),
    ));
    table.row(row(
        "  the Pod's struct in the store's `Arc`, its key, the map",
        bytes(store_rest(&json)),
        bytes(store_rest(&proto)),
    ));
    table.row(row(
        "the Pod as decoded, before the watcher's copy",
        bytes(json.decoded),
        bytes(proto.decoded),
    ));
    table.row(row(
        "  of it, spare capacity of its lists (decoded - exact)",
        bytes(spare(&json)),
        bytes(spare(&proto)),
    ));
    table.row(row(
        "heap blocks held by the store (allocator: ~16 B each)",
        format!("{:.0}", blocks_per(json.stored, n)),
        format!("{:.0}", blocks_per(proto.stored, n)),
    ));
    #[allow(clippy::cast_precision_loss)]
    table.row(row(
        "strings another Pod holds too (what interning could share)",
        fmt_bytes(shared_bytes as f64 / n as f64),
        "same strings".to_owned(),
    ));
    #[allow(clippy::cast_precision_loss)]
    table.row(row(
        "strings, maps (entries), timestamps",
        format!(
            "{:.0}, {:.1} ({:.1}), {:.0}",
            contents.strings as f64 / n as f64,
            contents.maps as f64 / n as f64,
            contents.map_entries as f64 / n as f64,
            contents.timestamps as f64 / n as f64
        ),
        "same".to_owned(),
    ));
    table.row(row(
        "`size_of`: Pod, ObjectMeta, PodSpec, Container, ContainerStatus, EnvVar",
        format!(
            "{}, {}, {}, {}, {}, {} B",
            size_of::<Pod>(),
            size_of::<ObjectMeta>(),
            size_of::<PodSpec>(),
            size_of::<Container>(),
            size_of::<ContainerStatus>(),
            size_of::<EnvVar>()
        ),
        format!(
            "{}, {}, {}, {}, {}, {} B",
            size_of::<Proto<PbPod>>(),
            size_of::<ObjectMeta>(),
            size_of::<k8s_pb::api::core::v1::PodSpec>(),
            size_of::<k8s_pb::api::core::v1::Container>(),
            size_of::<k8s_pb::api::core::v1::ContainerStatus>(),
            size_of::<k8s_pb::api::core::v1::EnvVar>()
        ),
    ));
    for (encoding, p) in [("json", &json), ("protobuf", &proto)] {
        results.data(serde_json::json!({
            "server": server.to_string(),
            "objects": n,
            "encoding": encoding,
            "stored_bytes": p.stored.bytes,
            "stored_blocks": p.stored.blocks,
            "decoded_bytes": p.decoded.bytes,
            "exact_bytes": p.exact.bytes,
            "string_bytes": contents.string_bytes,
            "map_node_bytes": node_bytes,
            "shared_string_bytes": shared_bytes,
        }));
    }
    drop(env);
    let title = format!(
        "pod-bytes, {server}: {n} Pods, each with two containers and a status, as the server \
         stores them; live heap counted by dhat (bytes asked of the allocator)"
    );
    results.table(&server.to_string(), &title, &table);
    Ok(format!("{title}\n\n{}", table.render()))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let n = env_usize("KACHE_BENCH_OBJECTS", 2000);
    // Counts only, no file; one for the whole run (dhat allows one at a time).
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut results = Results::new(
        "pod-bytes",
        "cargo run --release -p kache-benches --bin pod-bytes",
    );
    results.setting("objects", n);
    for server in bench_servers()? {
        let report = bench_server(server, n, &mut results).await?;
        println!("\n{report}");
    }
    results.write();
    Ok(())
}
