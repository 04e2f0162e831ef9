//! Machine-readable results: each benchmark writes one JSON file under `benches/results/`
//! (the command that ran it, the machine, the date, its tables and its figures), from which
//! `bench-report` generates docs/benchmarks.md and its charts.
//!
//! A file holds:
//!
//! - `bench`, `command` (with the `KACHE_*` variables that were set), `date` (UTC),
//!   `duration_secs`, `commit` (`git describe --always --dirty`, when git is there);
//! - `machine`: `cores`, `memory_bytes`, `cpu` (the model name of `/proc/cpuinfo`), `kernel`,
//!   `rustc`, and the load average at the start and at the end;
//! - `settings`: the sizes and counts the run used;
//! - `tables`: each printed table, as `id`, `title`, `columns` and `rows` of strings;
//! - `data`: records of numbers (seconds, bytes, counts) for ratios and charts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::Table;

/// The results of one benchmark run, written by [`Results::write`].
#[derive(Debug)]
pub struct Results {
    bench: String,
    command: String,
    started: Instant,
    date: String,
    load_at_start: String,
    settings: BTreeMap<String, Value>,
    tables: Vec<Value>,
    data: Vec<Value>,
}

impl Results {
    /// The results of benchmark `bench`, run by `command` (without environment variables:
    /// those starting with `KACHE_` that are set are put in front of it, and the process's
    /// arguments after it, except the `--bench` that `cargo bench` passes).
    #[must_use]
    pub fn new(bench: &str, command: &str) -> Self {
        let mut env: Vec<String> = std::env::vars()
            // Where the runner and the results live are no settings of the run.
            .filter(|(k, _)| {
                k.starts_with("KACHE_") && k != "KACHE_CLIENTGO" && k != "KACHE_BENCH_RESULTS"
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.sort();
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let mut command = command.to_owned();
        if !args.is_empty() {
            // A criterion filter or a bin's own arguments.
            let sep = if command.starts_with("cargo bench") || command.starts_with("cargo run") {
                " -- "
            } else {
                " "
            };
            command = format!("{command}{sep}{}", args.join(" "));
        }
        if !env.is_empty() {
            command = format!("{} {command}", env.join(" "));
        }
        Self {
            bench: bench.to_owned(),
            command,
            started: Instant::now(),
            date: utc_now(),
            load_at_start: load_average(),
            settings: BTreeMap::new(),
            tables: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Records a setting of the run (a size, a number of rounds).
    pub fn setting(&mut self, key: &str, value: impl Into<Value>) {
        self.settings.insert(key.to_owned(), value.into());
    }

    /// Records a printed table under `id`, with the title printed above it.
    pub fn table(&mut self, id: &str, title: &str, table: &Table) {
        self.tables.push(json!({
            "id": id,
            "title": title.trim(),
            "columns": table.header(),
            "rows": table.rows(),
        }));
    }

    /// Records one record of figures (a JSON object: names to numbers or strings).
    pub fn data(&mut self, record: Value) {
        self.data.push(record);
    }

    /// Writes the results to `<results dir>/<bench>.json` and says where on stderr. The
    /// folder is `KACHE_BENCH_RESULTS`, else `benches/results/`. A failure to write is
    /// reported, not fatal: the printed tables are still there.
    pub fn write(&self) {
        let dir = std::env::var_os("KACHE_BENCH_RESULTS").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
            PathBuf::from,
        );
        let path = dir.join(format!("{}.json", self.bench));
        let value = json!({
            "bench": self.bench,
            "command": self.command,
            "date": self.date,
            "duration_secs": self.started.elapsed().as_secs_f64().round(),
            "commit": git_describe(),
            "machine": machine(&self.load_at_start),
            "settings": self.settings,
            "tables": self.tables,
            "data": self.data,
        });
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let mut text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
            text.push('\n');
            std::fs::write(&path, text)
        });
        match written {
            Ok(()) => eprintln!("results written to {}", path.display()),
            Err(err) => eprintln!("could not write {}: {err}", path.display()),
        }
    }
}

/// The machine: cores, memory, CPU model, kernel, compiler, load average.
fn machine(load_at_start: &str) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown", |(_, model)| model.trim());
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cores": cores,
        "memory_bytes": memory_bytes,
        "cpu": cpu,
        "kernel": kernel,
        "rustc": command_line("rustc", &["--version"]),
        "load_average_start": load_at_start,
        "load_average_end": load_average(),
    })
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git_describe() -> Option<String> {
    command_line("git", &["describe", "--always", "--dirty"])
}

/// The first line a command prints, if it succeeds.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Now, in UTC, as `2026-11-26 14:03`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or_default();
    let (y, m, d) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_from_days_matches_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
