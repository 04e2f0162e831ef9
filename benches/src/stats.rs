//! Percentiles, formatting and plain-text tables for the benches that print their results.

use std::fmt::Write as _;
use std::time::Duration;

/// The `p`-th percentile (0.0 to 100.0) of `samples`, which are sorted in place.
///
/// # Panics
///
/// If `samples` is empty.
#[must_use]
pub fn percentile<T: Ord + Copy>(samples: &mut [T], p: f64) -> T {
    samples.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a slice far smaller than 2^52"
    )]
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// The median of `samples` (the upper one of an even count), which are sorted in place.
///
/// # Panics
///
/// If `samples` is empty.
#[must_use]
pub fn median<T: Ord + Copy>(samples: &mut [T]) -> T {
    percentile(samples, 50.0)
}

/// The median cost of reading the clock twice, as a loop that times single calls does: what to
/// subtract from each timed call.
#[must_use]
pub fn clock_overhead() -> Duration {
    let mut samples: Vec<Duration> = (0..100_000)
        .map(|_| {
            let start = std::time::Instant::now();
            start.elapsed()
        })
        .collect();
    median(&mut samples)
}

/// A duration in the most readable unit (ns, µs, ms, s).
#[must_use]
pub fn fmt_ns(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A byte count in B, KiB or MiB.
#[must_use]
#[allow(
    clippy::cast_precision_loss,
    reason = "a byte count shown to one decimal"
)]
pub fn fmt_bytes(bytes: f64) -> String {
    if bytes.abs() < 1024.0 {
        format!("{bytes:.0} B")
    } else if bytes.abs() < 1024.0 * 1024.0 {
        format!("{:.1} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}

/// `kache / kube-runtime` as `0.23x`; below 0.1 with two significant digits (`0.00027x`),
/// so that an index against a scan does not read `0.00x`.
#[must_use]
pub fn ratio(kache: f64, kube_runtime: f64) -> String {
    if kube_runtime == 0.0 {
        "n/a".to_owned()
    } else {
        times(kache / kube_runtime)
    }
}

/// A ratio as `0.23x`, or with two significant digits below 0.1.
#[must_use]
pub fn times(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.1 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a small count of decimals"
        )]
        let decimals = (-ratio.log10()).ceil() as usize + 1;
        format!("{ratio:.decimals$}x")
    } else {
        format!("{ratio:.2}x")
    }
}

/// A plain-text table, printed as Markdown so it can be pasted into docs/benchmarks.md.
#[derive(Debug)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    #[must_use]
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The column names.
    #[must_use]
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The rows, one cell per column.
    #[must_use]
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The table as Markdown.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let _ = writeln!(out, "{}", line(&self.header));
        let _ = writeln!(
            out,
            "|{}",
            self.header.iter().map(|_| "---|").collect::<String>()
        );
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out
    }
}

/// A xorshift generator: reproducible key orders without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number in `0..n`.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the result is below n, a usize"
    )]
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// Shuffles `items` (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}
