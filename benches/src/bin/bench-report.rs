//! Generates docs/benchmarks.md and its charts (docs/charts/*.svg) from the results the
//! benchmarks wrote under `benches/results/` and the template `benches/report/benchmarks.md.in`.
//!
//! Run: `just bench-report` or `cargo run -p kache-benches --bin bench-report`.
//!
//! The template is Markdown with directives, each alone on its line (`setting` also within a
//! line of text):
//!
//! - `{{run BENCH}}`: the command that produced `BENCH`'s results, when, how long it took and
//!   with which sizes;
//! - `{{table BENCH ID}}`: the table `ID` of `BENCH`, as the benchmark printed it; with
//!   `rows=A|B` only the rows whose first cell is `A` or `B` or starts with one of their words,
//!   with `objects=N|M` only those whose `objects` column is `N` or `M`;
//! - `{{e2e-table SERVER KIND}}`: `e2e-sync`'s table for that server and kind at the largest
//!   size run (with `rows=` as for a table);
//! - `{{e2e-sizes SERVER KIND}}`: sync time by object count, kache beside kube-runtime and
//!   client-go (the figures of the chart);
//! - `{{setting BENCH KEY}}`: a setting the run recorded (a list's items joined by `; `);
//! - `{{machine}}`, `{{runs}}`, `{{summary}}`: the machine, every run, and the key ratios.
//!
//! A benchmark without results renders as a line saying so (in place of its `run` line, its
//! tables left out), never as stale figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kache_benches::{BoxError, Table, fmt_bytes, fmt_ns, times};
use serde_json::{Value, json};

fn main() -> Result<(), BoxError> {
    let benches = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = benches.parent().ok_or("benches/ has no parent")?;
    let results = load(&benches.join("results"))?;
    let template = std::fs::read_to_string(benches.join("report/benchmarks.md.in"))?;
    let report = Report { results: &results };
    let mut out = String::new();
    for line in template.lines() {
        if let Some(directive) = line
            .trim()
            .strip_prefix("{{")
            .and_then(|l| l.strip_suffix("}}"))
        {
            out.push_str(&report.directive(directive)?);
        } else {
            out.push_str(&report.inline(line)?);
            out.push('\n');
        }
    }
    let docs = root.join("docs");
    std::fs::write(docs.join("benchmarks.md"), &out)?;
    eprintln!("wrote docs/benchmarks.md ({} lines)", out.lines().count());
    let charts = docs.join("charts");
    std::fs::create_dir_all(&charts)?;
    for (name, svg) in report.charts() {
        std::fs::write(charts.join(&name), svg)?;
        eprintln!("wrote docs/charts/{name}");
    }
    Ok(())
}

/// Every `*.json` of `dir`, by benchmark name.
fn load(dir: &Path) -> Result<BTreeMap<String, Value>, BoxError> {
    let mut results = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(results);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let value: Value = serde_json::from_slice(&std::fs::read(&path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let name = value["bench"].as_str().unwrap_or_default().to_owned();
        results.insert(name, value);
    }
    Ok(results)
}

struct Report<'a> {
    results: &'a BTreeMap<String, Value>,
}

/// The kache variant, the kube-runtime variant that lists the same way, on a server.
fn e2e_counterparts(server: &str) -> (&'static str, &'static str) {
    if server == "modern" {
        ("kache-auto", "kube-runtime-streaming")
    } else {
        ("kache-auto", "kube-runtime-listwatch-500")
    }
}

/// The series of the e2e charts and tables: variant id and label.
const E2E_SERIES: [(&str, &str); 5] = [
    ("kache-auto", "kache (JSON, default)"),
    ("kache-protobuf-auto", "kache (protobuf)"),
    ("kube-runtime", "kube-runtime (same strategy)"),
    ("client-go-protobuf", "client-go (protobuf, its default)"),
    ("client-go-json", "client-go (JSON)"),
];

impl Report<'_> {
    fn directive(&self, directive: &str) -> Result<String, BoxError> {
        let (words, filter) = Filter::parse(directive);
        let words: Vec<&str> = words.split_whitespace().collect();
        let text = match words.as_slice() {
            ["machine"] => self.machine(),
            ["runs"] => self.runs(),
            ["summary"] => self.summary(),
            ["run", bench] => self.run(bench),
            ["setting", bench, key] => self.setting(bench, key),
            ["table", bench, id] => self.table(bench, id, &filter),
            ["e2e-table", server, kind] => self.e2e_table(server, kind, &filter),
            ["e2e-sizes", server, kind] => self.e2e_sizes(server, kind),
            ["e2e-per-object", bench, kind] => self.e2e_per_object(bench, kind),
            ["e2e-growth", bench, server, kind] => self.e2e_growth(bench, server, kind),
            _ => return Err(format!("unknown directive {{{{{directive}}}}}").into()),
        };
        Ok(text)
    }

    fn data(&self, bench: &str) -> &[Value] {
        self.results
            .get(bench)
            .and_then(|r| r["data"].as_array())
            .map_or(&[], Vec::as_slice)
    }

    /// The first record of `bench` whose fields equal `fields`.
    fn find(&self, bench: &str, fields: &Value) -> Option<&Value> {
        let fields = fields.as_object()?;
        self.data(bench)
            .iter()
            .find(|record| fields.iter().all(|(k, v)| &record[k] == v))
    }

    fn missing(bench: &str) -> String {
        format!(
            "_No results for `{bench}`: `benches/results/{bench}.json` is missing. Run the command \
             above, then `just bench-report`._\n"
        )
    }

    fn machine(&self) -> String {
        let mut machines: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (name, result) in self.results {
            let m = &result["machine"];
            #[expect(clippy::cast_precision_loss, reason = "a memory size in GiB")]
            let gib = m["memory_bytes"].as_u64().unwrap_or_default() as f64 / f64::from(1 << 30);
            let text = format!(
                "{} cores ({}), {gib:.0} GiB of memory, Linux {}, {}",
                m["cores"],
                m["cpu"].as_str().unwrap_or("unknown CPU"),
                m["kernel"].as_str().unwrap_or_default(),
                m["rustc"].as_str().unwrap_or("rustc"),
            );
            machines.entry(text).or_default().push(name);
        }
        let mut commits: Vec<&str> = self
            .results
            .values()
            .filter_map(|r| r["commit"].as_str())
            .collect();
        commits.sort_unstable();
        commits.dedup();
        let commits: Vec<String> = commits.iter().map(|c| format!("`{c}`")).collect();
        // `-dirty` means uncommitted changes, such as the benches' own, on top of the commit.
        let code = format!(
            "**Code measured**: {} (`git describe --always --dirty` at the run).\n\n",
            commits.join(", ")
        );
        let machine = match machines.len() {
            0 => "_No results yet._\n".to_owned(),
            1 => format!(
                "**Machine**: {}.\n",
                machines.keys().next().unwrap_or(&String::new())
            ),
            _ => machines
                .iter()
                .fold(String::new(), |mut out, (m, benches)| {
                    let _ = writeln!(out, "- {m}: {}", benches.join(", "));
                    out
                }),
        };
        code + &machine
    }

    fn runs(&self) -> String {
        let mut table = Table::new(&["benchmark", "command", "date", "took", "load average"]);
        for (name, r) in self.results {
            let m = &r["machine"];
            table.row(vec![
                format!("`{name}`"),
                format!("`{}`", r["command"].as_str().unwrap_or_default()),
                r["date"].as_str().unwrap_or_default().to_owned(),
                duration(r["duration_secs"].as_f64().unwrap_or_default()),
                format!(
                    "{} .. {}",
                    first_load(&m["load_average_start"]),
                    first_load(&m["load_average_end"])
                ),
            ]);
        }
        table.render()
    }

    fn run(&self, bench: &str) -> String {
        let Some(r) = self.results.get(bench) else {
            return Self::missing(bench);
        };
        let settings = r["settings"]
            .as_object()
            .map(|s| {
                s.iter()
                    .filter(|(k, _)| *k != "resyncs" && *k != "clock_overhead_secs")
                    .map(|(k, v)| format!("{} {}", k.replace('_', " "), plain(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        format!(
            "Run: `{}` ({settings}; {}, took {}, load average {} at the start).\n",
            r["command"].as_str().unwrap_or_default(),
            r["date"].as_str().unwrap_or_default(),
            duration(r["duration_secs"].as_f64().unwrap_or_default()),
            first_load(&r["machine"]["load_average_start"]),
        )
    }

    /// A line with its directives (`{{setting ...}}` within text) replaced by their text.
    fn inline(&self, line: &str) -> Result<String, BoxError> {
        let mut out = String::new();
        let mut rest = line;
        while let Some((before, after)) = rest.split_once("{{") {
            let (directive, tail) = after
                .split_once("}}")
                .ok_or_else(|| format!("unclosed directive in {line:?}"))?;
            out.push_str(before);
            out.push_str(self.directive(directive)?.trim_end());
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A setting of a run; a list's items joined by `; `.
    fn setting(&self, bench: &str, key: &str) -> String {
        match self.results.get(bench).map(|r| &r["settings"][key]) {
            Some(Value::Null) | None => "(not recorded)".to_owned(),
            Some(Value::Array(items)) => items.iter().map(plain).collect::<Vec<_>>().join("; "),
            Some(value) => plain(value),
        }
    }

    fn table(&self, bench: &str, id: &str, filter: &Filter) -> String {
        // A bench without results says so once, in its `run` line.
        let Some(r) = self.results.get(bench) else {
            return String::new();
        };
        let Some(t) = r["tables"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["id"] == id))
        else {
            return format!("_`{bench}` recorded no table `{id}` in its last run._\n");
        };
        render(t, filter)
    }

    /// The e2e table of `server` and `kind` at the largest size run.
    fn e2e_table(&self, server: &str, kind: &str, filter: &Filter) -> String {
        let Some(n) = self.e2e_sizes_run(server, kind).last().copied() else {
            return Self::missing("e2e-sync");
        };
        let id = format!("{server}-{kind}-{n}");
        let label = match kind {
            "configmaps" => "ConfigMaps",
            "pods" => "Pods",
            other => other,
        };
        let mut text = format!("{n} {label}:\n\n");
        text.push_str(&self.table("e2e-sync", &id, filter));
        text
    }

    fn e2e_sizes_run(&self, server: &str, kind: &str) -> Vec<u64> {
        self.e2e_sizes_of("e2e-sync", server, kind)
    }

    /// The object counts `bench` (an `e2e-sync` run) has records of for `server` and `kind`.
    fn e2e_sizes_of(&self, bench: &str, server: &str, kind: &str) -> Vec<u64> {
        let mut sizes: Vec<u64> = self
            .data(bench)
            .iter()
            .filter(|r| r["server"] == server && r["kind"] == kind)
            .filter_map(|r| r["objects"].as_u64())
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    fn e2e_median(&self, server: &str, kind: &str, n: u64, variant: &str) -> Option<f64> {
        self.e2e_field("e2e-sync", (server, kind, n), variant, "median_secs")
    }

    /// One figure of an `e2e-sync` run's record; `kube-runtime` names the variant that lists as
    /// kache's default does on `server`.
    fn e2e_field(
        &self,
        bench: &str,
        (server, kind, n): (&str, &str, u64),
        variant: &str,
        field: &str,
    ) -> Option<f64> {
        let variant = if variant == "kube-runtime" {
            e2e_counterparts(server).1
        } else {
            variant
        };
        self.find(
            bench,
            &json!({"server": server, "kind": kind, "objects": n, "variant": variant}),
        )?[field]
            .as_f64()
    }

    /// Bytes per object once synced (RSS over the object count) for each library, beside the
    /// objects' own bytes on the wire, for every server and size `bench` ran.
    fn e2e_per_object(&self, bench: &str, kind: &str) -> String {
        let mut table = Table::new(&[
            "server",
            "objects",
            "on the wire, protobuf (the payload)",
            "on the wire, JSON",
            "kache JSON (default)",
            "kache protobuf",
            "kube-runtime",
            "client-go protobuf",
            "client-go JSON",
            "kache JSON / client-go",
            "kache protobuf / client-go",
        ]);
        for server in ["modern", "legacy"] {
            for n in self.e2e_sizes_of(bench, server, kind) {
                #[expect(clippy::cast_precision_loss, reason = "object counts")]
                let per = |variant: &str, field: &str| {
                    self.e2e_field(bench, (server, kind, n), variant, field)
                        .map(|b| b / n as f64)
                };
                let rss = |variant: &str| per(variant, "synced_rss_bytes");
                let show = |b: Option<f64>| b.map_or_else(|| "-".to_owned(), fmt_bytes);
                table.row(vec![
                    server.to_owned(),
                    n.to_string(),
                    show(per("raw-bytes-protobuf", "bytes_read")),
                    show(per("raw-bytes-json", "bytes_read")),
                    show(rss("kache-auto")),
                    show(rss("kache-protobuf-auto")),
                    show(rss("kube-runtime")),
                    show(rss("client-go-protobuf")),
                    show(rss("client-go-json")),
                    ratio_of(rss("kache-auto"), rss("client-go-protobuf")),
                    ratio_of(rss("kache-protobuf-auto"), rss("client-go-protobuf")),
                ]);
            }
        }
        if table.rows().is_empty() {
            return Self::missing(bench);
        }
        table.render()
    }

    /// How each variant's sync time grows from the smallest to the largest size `bench` ran
    /// on `server`, and a kache variant's time at the largest against the raw bytes' read.
    fn e2e_growth(&self, bench: &str, server: &str, kind: &str) -> String {
        let sizes = self.e2e_sizes_of(bench, server, kind);
        let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) else {
            return Self::missing(bench);
        };
        let mut table = Table::new(&[
            "variant",
            &format!("{small} objects"),
            &format!("{large} objects"),
            "time grew",
            "time / raw bytes, same encoding",
        ]);
        let variants: Vec<(&str, &str)> = self
            .data(bench)
            .iter()
            .filter(|r| r["server"] == server && r["kind"] == kind && r["objects"] == large)
            .filter_map(|r| Some((r["variant"].as_str()?, r["label"].as_str()?)))
            .collect();
        for (id, label) in variants {
            let time = |n| self.e2e_field(bench, (server, kind, n), id, "median_secs");
            let raw = if id.contains("protobuf") {
                "raw-bytes-protobuf"
            } else {
                "raw-bytes-json"
            };
            let raw_time = self.e2e_field(bench, (server, kind, large), raw, "median_secs");
            let show = |t: Option<f64>| {
                t.map_or_else(|| "-".to_owned(), |t| fmt_ns(Duration::from_secs_f64(t)))
            };
            let against_raw = if id.starts_with("kache") {
                ratio_of(time(large), raw_time)
            } else {
                "-".to_owned()
            };
            table.row(vec![
                label.to_owned(),
                show(time(small)),
                show(time(large)),
                ratio_of(time(large), time(small)),
                against_raw,
            ]);
        }
        table.render()
    }

    fn e2e_sizes(&self, server: &str, kind: &str) -> String {
        let sizes = self.e2e_sizes_run(server, kind);
        if sizes.is_empty() {
            return Self::missing("e2e-sync");
        }
        let mut header = vec!["objects"];
        header.extend(E2E_SERIES.iter().map(|(_, label)| *label));
        header.extend([
            "kache / kube-runtime",
            "kache protobuf / client-go protobuf",
        ]);
        let mut table = Table::new(&header);
        for n in sizes {
            let time = |v: &str| self.e2e_median(server, kind, n, v);
            let mut row = vec![n.to_string()];
            row.extend(E2E_SERIES.iter().map(|(v, _)| {
                time(v).map_or_else(|| "-".to_owned(), |s| fmt_ns(Duration::from_secs_f64(s)))
            }));
            row.push(ratio_of(time("kache-auto"), time("kube-runtime")));
            row.push(ratio_of(
                time("kache-protobuf-auto"),
                time("client-go-protobuf"),
            ));
            table.row(row);
        }
        table.render()
    }

    /// The key ratios, each from the record it names.
    #[expect(clippy::too_many_lines, reason = "one row per question, in order")]
    fn summary(&self) -> String {
        let mut table = Table::new(&["question", "measure", "kache", "other", "kache / other"]);
        let mut row = |question: &str,
                       measure: String,
                       ours: Option<String>,
                       theirs: Option<String>,
                       ratio: String| {
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                table.row(vec![question.to_owned(), measure, ours, theirs, ratio]);
            }
        };
        let ns = |s: f64| fmt_ns(Duration::from_secs_f64(s));
        // In-process store, criterion medians.
        for (question, group, n) in [
            ("initial sync", "sync-configmap", 10_000),
            ("initial sync", "sync-configmap", 100_000),
            ("initial sync", "sync-pod", 10_000),
            ("`Apply`", "apply-configmap", 10_000),
            ("`get`", "get", 100_000),
            ("`state()`", "state", 100_000),
            ("filtered read", "filter-label", 100_000),
        ] {
            let r = self.find("store", &json!({"group": group, "objects": n}));
            let per = |k: &str| {
                let r = r?;
                #[expect(clippy::cast_precision_loss, reason = "small counts")]
                let per = r["per_iter"].as_u64()? as f64;
                Some(r[k].as_f64()? / per)
            };
            let (k, o) = (per("kache_secs"), per("kube_runtime_secs"));
            let unit = r.and_then(|r| r["unit"].as_str()).unwrap_or("call");
            row(
                question,
                format!("`{group}`, {n} objects, per {unit} (criterion)"),
                k.map(ns),
                o.map(|o| format!("{} (kube-runtime)", ns(o))),
                ratio_of(k, o),
            );
        }
        for (path, what) in [
            ("sync", "initial sync, per event"),
            ("apply", "`Apply`, per event"),
            ("get", "`get`, per call"),
            ("deliver", "one subscriber's delivery, per event"),
        ] {
            let Some(r) = self.find("reflect-instructions", &json!({"path": path})) else {
                continue;
            };
            let (k, o) = (
                r["kache_instructions"].as_f64(),
                r["kube_runtime_instructions"].as_f64(),
            );
            row(
                "instructions",
                format!("{what}, {} objects (cachegrind)", r["objects"]),
                k.map(|k| format!("{k:.0}")),
                o.map(|o| format!("{o:.0} (kube-runtime)")),
                ratio_of(k, o),
            );
        }
        if let Some(r) = self.find(
            "latency",
            &json!({"what": "get", "objects": 100_000, "writer": false}),
        ) {
            let (k, o) = (
                r["kache_p50_secs"].as_f64(),
                r["kube_runtime_p50_secs"].as_f64(),
            );
            row(
                "`get`",
                "single calls at 100000 objects, p50".to_owned(),
                k.map(ns),
                o.map(|o| format!("{} (kube-runtime)", ns(o))),
                ratio_of(k, o),
            );
        }
        if let Some(r) = self.find("memory", &json!({"kind": "configmap", "changed": false})) {
            let n = r["objects"].as_f64().unwrap_or(1.0);
            let (k, o) = (
                r["kache_store_bytes"].as_f64().map(|b| b / n),
                r["kube_runtime_store_bytes"].as_f64().map(|b| b / n),
            );
            row(
                "memory",
                "store heap per ConfigMap".to_owned(),
                k.map(fmt_bytes),
                o.map(|o| format!("{} (kube-runtime)", fmt_bytes(o))),
                ratio_of(k, o),
            );
        }
        if let Some(r) = self.find(
            "latency",
            &json!({"what": "relist", "objects": 100_000, "changed": false}),
        ) {
            let (k, o) = (
                r["kache_stall_secs"].as_f64(),
                r["kube_runtime_stall_secs"].as_f64(),
            );
            row(
                "relist",
                "longest reader stall, 100000 objects unchanged".to_owned(),
                k.map(ns),
                o.map(|o| format!("{} (kube-runtime)", ns(o))),
                ratio_of(k, o),
            );
        }
        for (function, label) in [
            ("kache", "kache (resync)"),
            ("kache-backpressure", "kache (backpressure)"),
            ("kube-runtime", "kube-runtime"),
        ] {
            let wall = |s: u64| {
                self.find("fanout", &json!({"function": function, "subscribers": s}))?["wall_secs_per_event"].as_f64()
            };
            if let (Some(one), Some(hundred)) = (wall(1), wall(100)) {
                row(
                    "fan-out",
                    format!("writer time per event, 100 subscribers / 1, {label}"),
                    Some(ns(hundred)),
                    Some(format!("{} (1 subscriber)", ns(one))),
                    format!("{:.2}x", hundred / one),
                );
            }
        }
        for (server, (kind, label)) in ["modern", "legacy"]
            .into_iter()
            .flat_map(|s| [(s, ("configmaps", "ConfigMaps")), (s, ("pods", "Pods"))])
        {
            let Some(n) = self.e2e_sizes_run(server, kind).last().copied() else {
                continue;
            };
            let t = |v: &str| self.e2e_median(server, kind, n, v);
            row(
                "end to end",
                format!(
                    "initial sync of {n} {label}, {server} server, kache default / kube-runtime"
                ),
                t("kache-auto").map(ns),
                t("kube-runtime").map(|o| format!("{} (kube-runtime)", ns(o))),
                ratio_of(t("kache-auto"), t("kube-runtime")),
            );
            row(
                "end to end",
                format!(
                    "initial sync of {n} {label}, {server} server, kache protobuf / client-go protobuf"
                ),
                t("kache-protobuf-auto").map(ns),
                t("client-go-protobuf").map(|o| format!("{} (client-go)", ns(o))),
                ratio_of(t("kache-protobuf-auto"), t("client-go-protobuf")),
            );
            let rss = |v: &str| {
                self.find(
                    "e2e-sync",
                    &json!({"server": server, "kind": kind, "objects": n, "variant": v}),
                )?["synced_rss_bytes"]
                    .as_f64()
            };
            row(
                "memory",
                format!(
                    "RSS once synced, {n} {label}, {server} server, kache default / client-go protobuf"
                ),
                rss("kache-auto").map(fmt_bytes),
                rss("client-go-protobuf").map(|o| format!("{} (client-go)", fmt_bytes(o))),
                ratio_of(rss("kache-auto"), rss("client-go-protobuf")),
            );
        }
        for server in ["legacy", "modern"] {
            let secs = |start: &str| {
                self.find("warm-restart", &json!({"server": server, "start": start}))?["secs"]
                    .as_f64()
            };
            let n = self
                .find("warm-restart", &json!({"server": server}))
                .and_then(|r| r["objects"].as_u64())
                .unwrap_or_default();
            row(
                "warm restart",
                format!(
                    "time to an up-to-date store, {n} ConfigMaps, {server} server, warm / cold"
                ),
                secs("warm").map(ns),
                secs("cold").map(|c| format!("{} (cold start)", ns(c))),
                ratio_of(secs("warm"), secs("cold")),
            );
        }
        table.render()
    }

    /// Every chart, as a file name and its SVG.
    fn charts(&self) -> Vec<(String, String)> {
        let mut charts = self.sync_charts();
        charts.extend(self.memory_chart());
        charts.extend(self.fanout_chart());
        charts
    }

    /// Sync time by object count, one chart per server.
    fn sync_charts(&self) -> Vec<(String, String)> {
        let mut charts = Vec::new();
        for server in ["modern", "legacy"] {
            let sizes = self.e2e_sizes_run(server, "configmaps");
            if sizes.is_empty() {
                continue;
            }
            let series: Vec<Series> = E2E_SERIES
                .iter()
                .enumerate()
                .map(|(i, (v, label))| {
                    #[expect(clippy::cast_precision_loss, reason = "object counts")]
                    let points = sizes
                        .iter()
                        .filter_map(|&n| {
                            Some((n as f64, self.e2e_median(server, "configmaps", n, v)? * 1e3))
                        })
                        .collect();
                    Series {
                        label: (*label).to_owned(),
                        color: COLORS[i],
                        points,
                    }
                })
                .collect();
            let name = if server == "modern" {
                "the 1.36 apiserver library"
            } else {
                "kube-apiserver v1.20.2"
            };
            charts.push((
                format!("sync-time-{server}.svg"),
                line_chart(
                    &format!("Initial sync of ConfigMaps from {name}"),
                    "ConfigMaps",
                    "ms, start to synced (median)",
                    &series,
                ),
            ));
        }
        charts
    }

    /// Memory per object: RSS once synced over the object count, at the largest size.
    fn memory_chart(&self) -> Option<(String, String)> {
        let mut groups = Vec::new();
        let variants = [
            ("kache-auto", "kache (JSON)"),
            ("kache-protobuf-auto", "kache (protobuf)"),
            ("kube-runtime-listwatch-500", "kube-runtime (pages of 500)"),
            ("client-go-protobuf", "client-go (protobuf)"),
        ];
        let mut values: Vec<Vec<Option<f64>>> = vec![Vec::new(); variants.len()];
        for kind in ["configmaps", "pods"] {
            for server in ["modern", "legacy"] {
                let Some(n) = self.e2e_sizes_run(server, kind).last().copied() else {
                    continue;
                };
                let label = if kind == "pods" { "Pods" } else { "ConfigMaps" };
                groups.push(format!("{n} {label}\n{server} server"));
                for (i, (v, _)) in variants.iter().enumerate() {
                    #[expect(clippy::cast_precision_loss, reason = "object counts")]
                    let per = self
                        .find(
                            "e2e-sync",
                            &json!({"server": server, "kind": kind, "objects": n, "variant": v}),
                        )
                        .and_then(|r| r["synced_rss_bytes"].as_f64())
                        .map(|b| b / n as f64 / 1024.0);
                    values[i].push(per);
                }
            }
        }
        if groups.is_empty() {
            return None;
        }
        let series = variants
            .iter()
            .zip(values)
            .enumerate()
            .map(|(i, ((_, label), values))| ((*label).to_owned(), COLORS[i], values))
            .collect::<Vec<_>>();
        Some((
            "memory-per-object.svg".to_owned(),
            bar_chart(
                "Client memory per object once synced (RSS / objects)",
                "KiB per object",
                &groups,
                &series,
            ),
        ))
    }

    /// The writer's cost per event by subscriber count.
    fn fanout_chart(&self) -> Option<(String, String)> {
        let fanout: Vec<Series> = [
            ("kache", "kache (resync)"),
            ("kache-backpressure", "kache (backpressure)"),
            ("kube-runtime", "kube-runtime"),
        ]
        .iter()
        .enumerate()
        .map(|(i, (f, label))| Series {
            label: (*label).to_owned(),
            color: COLORS[i],
            points: self
                .data("fanout")
                .iter()
                .filter(|r| r["function"] == *f)
                .filter_map(|r| {
                    Some((
                        r["subscribers"].as_f64()?,
                        r["wall_secs_per_event"].as_f64()? * 1e6,
                    ))
                })
                .collect(),
        })
        .collect();
        fanout.iter().any(|s| !s.points.is_empty()).then(|| {
            (
                "fanout.svg".to_owned(),
                line_chart(
                    "Writer cost per event by subscriber count",
                    "subscribers",
                    "µs per Apply event (median)",
                    &fanout,
                ),
            )
        })
    }
}

/// Which rows of a table to show: `rows=A|B` keeps the rows whose first cell is `A` or `B` or
/// starts with one of them and a space or comma; `objects=N|M` those whose `objects` column is
/// `N` or `M`.
#[derive(Default)]
struct Filter {
    rows: Vec<String>,
    objects: Vec<String>,
}

impl Filter {
    /// Splits a directive into its words and its filter, which runs from the first `rows=` or
    /// `objects=` to the end (a value may hold spaces; values are separated by `|`).
    fn parse(directive: &str) -> (&str, Self) {
        let start = [" rows=", " objects="]
            .iter()
            .filter_map(|key| directive.find(key))
            .min()
            .unwrap_or(directive.len());
        let (words, mut rest) = directive.split_at(start);
        let mut filter = Self::default();
        while let Some((key, value)) = rest.trim_start().split_once('=') {
            // The value runs to the next option.
            let end = [" rows=", " objects="]
                .iter()
                .filter_map(|k| value.find(k))
                .min()
                .unwrap_or(value.len());
            let values = value[..end]
                .split('|')
                .map(|v| v.trim().to_owned())
                .collect();
            match key {
                "rows" => filter.rows = values,
                _ => filter.objects = values,
            }
            rest = &value[end..];
        }
        (words, filter)
    }

    fn keeps(&self, header: &[String], row: &[String]) -> bool {
        let first = row.first().map_or("", String::as_str);
        let objects = header
            .iter()
            .position(|h| h == "objects")
            .and_then(|i| row.get(i));
        // A value names a row by its whole first cell or by the cell's first words.
        let names = |p: &String| {
            first == p
                || first
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', ',']))
        };
        (self.rows.is_empty() || self.rows.iter().any(names))
            && (self.objects.is_empty() || objects.is_some_and(|o| self.objects.contains(o)))
    }
}

/// A table of a results file as Markdown, keeping the rows `filter` keeps.
fn render(t: &Value, filter: &Filter) -> String {
    let cells = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let columns = cells(&t["columns"]);
    let header: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    for row in t["rows"].as_array().into_iter().flatten() {
        let row = cells(row);
        if filter.keeps(&columns, &row) {
            table.row(row);
        }
    }
    table.render()
}

fn ratio_of(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => times(a / b),
        _ => "-".to_owned(),
    }
}

/// A setting as the report says it: `[1000, 10000]` as `1000, 10000`.
fn plain(v: &Value) -> String {
    match v {
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s")
    } else {
        format!("{:.1} min", secs / 60.0)
    }
}

/// The one-minute figure of a load average.
fn first_load(v: &Value) -> String {
    v.as_str()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?")
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// Charts: plain SVG, a line chart and a grouped bar chart.

const COLORS: [&str; 5] = ["#1b7837", "#5aae61", "#c2185b", "#1f4e9c", "#8c96c6"];
const WIDTH: f64 = 780.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 240.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

struct Series {
    label: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// A step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let pow = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow)
}

fn svg_start(title: &str, y_label: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        f64::midpoint(WIDTH - RIGHT, LEFT),
        escape(title),
        f64::midpoint(TOP, HEIGHT - BOTTOM),
        escape(y_label)
    )
}

/// The y axis's grid and labels up to `max`; returns the axis's top value.
fn y_axis(out: &mut String, max: f64) -> f64 {
    let step = nice_step(max);
    let top = (max / step).ceil().max(1.0) * step;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let y = HEIGHT - BOTTOM - tick / top * (HEIGHT - TOP - BOTTOM);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            // An axis in ms or KiB reads better without `k`.
            if tick >= 1000.0 {
                format!("{tick:.0}")
            } else {
                short(tick)
            }
        );
        tick += step;
    }
    top
}

fn legend(out: &mut String, entries: &[(&str, &str)]) {
    for (i, (label, color)) in entries.iter().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "a handful of entries")]
        let y = TOP + 10.0 + 22.0 * i as f64;
        let x = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"10\" fill=\"{color}\"/>\
             <text x=\"{}\" y=\"{y}\">{}</text>",
            y - 9.0,
            x + 20.0,
            escape(label)
        );
    }
}

/// A line chart with a logarithmic x axis (object or subscriber counts).
fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let mut out = svg_start(title, y_label);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x_min, x_max) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
    let top = y_axis(&mut out, ys.fold(0.0, f64::max));
    let (lo, hi) = (x_min.max(1.0).log10(), x_max.max(1.0).log10());
    let span = if hi > lo { hi - lo } else { 1.0 };
    let x_of = |x: f64| {
        let t = if hi > lo {
            (x.max(1.0).log10() - lo) / span
        } else {
            0.5
        };
        LEFT + 20.0 + t * (WIDTH - RIGHT - LEFT - 40.0)
    };
    let y_of = |y: f64| HEIGHT - BOTTOM - y / top * (HEIGHT - TOP - BOTTOM);
    let mut ticks = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x_of(x),
            HEIGHT - BOTTOM + 18.0,
            short(x)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} (log scale)</text>",
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM,
        f64::midpoint(WIDTH - RIGHT, LEFT),
        HEIGHT - 12.0,
        escape(x_label)
    );
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let mut points = s.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            s.color,
            path.join(" ")
        );
        for (x, y) in &points {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\"/>",
                x_of(*x),
                y_of(*y),
                s.color
            );
        }
    }
    let entries: Vec<(&str, &str)> = series
        .iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| (s.label.as_str(), s.color))
        .collect();
    legend(&mut out, &entries);
    out.push_str("</svg>\n");
    out
}

/// Grouped bars: one group per label, one bar per series.
fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[(String, &str, Vec<Option<f64>>)],
) -> String {
    let mut out = svg_start(title, y_label);
    let max = series
        .iter()
        .flat_map(|s| s.2.iter().flatten())
        .fold(0.0, |a: f64, b| a.max(*b));
    let top = y_axis(&mut out, max);
    #[expect(clippy::cast_precision_loss, reason = "a handful of groups and series")]
    let (group_width, bar) = {
        let g = (WIDTH - RIGHT - LEFT) / groups.len().max(1) as f64;
        (g, (g - 16.0) / series.len().max(1) as f64)
    };
    for (g, label) in groups.iter().enumerate() {
        #[expect(clippy::cast_precision_loss, reason = "a handful of groups")]
        let x0 = LEFT + group_width * g as f64 + 8.0;
        for (i, (_, color, values)) in series.iter().enumerate() {
            let Some(Some(v)) = values.get(g) else {
                continue;
            };
            let h = v / top * (HEIGHT - TOP - BOTTOM);
            #[expect(clippy::cast_precision_loss, reason = "a handful of series")]
            let x = x0 + bar * i as f64;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{color}\"><title>{v:.1}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                HEIGHT - BOTTOM - h,
                bar - 2.0,
                x + bar / 2.0,
                HEIGHT - BOTTOM - h - 3.0,
                if *v >= 10.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        // A label's lines one under the other.
        for (i, line) in label.lines().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a line or two")]
            let y = HEIGHT - BOTTOM + 16.0 + 14.0 * i as f64;
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{y}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
                x0 + (group_width - 16.0) / 2.0,
                escape(line)
            );
        }
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM
    );
    let entries: Vec<(&str, &str)> = series.iter().map(|(l, c, _)| (l.as_str(), *c)).collect();
    legend(&mut out, &entries);
    out.push_str("</svg>\n");
    out
}

/// A number for an axis or a bar: `10k`, `2.5`, `120`.
fn short(v: f64) -> String {
    let whole = |x: f64| x.fract().abs() < 1e-9;
    if v >= 1000.0 && whole(v / 1000.0) {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || whole(v) {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
