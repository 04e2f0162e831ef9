//! Shared pieces of the benchmarks that compare kache with kube-runtime's reflector store:
//! realistic fixture objects, event builders for both libraries, and the small statistics and
//! table helpers the table-printing benches use.
//!
//! The benches themselves live in `benches/` (`cargo bench -p kache-benches`), the end-to-end
//! initial-sync comparison in the `e2e-sync` binary. Every bench writes its results as JSON
//! under `benches/results/` ([`Results`]); the `bench-report` binary turns them into
//! docs/benchmarks.md.

mod fixtures;
mod process;
mod report;
mod results;
mod stats;

pub use fixtures::{
    APPS, Kind, NAMESPACES, app_of, config_map, config_map_key, config_map_managed, kache_events,
    kache_reflect, kube_runtime_events, kube_runtime_reflect, namespace_of, pod,
    shuffled_config_map_keys, world,
};
pub use process::{
    BoxError, ChildReport, Encoding, bench_servers, connected_api, env_sizes, env_usize,
    proc_status_bytes, seed_config_maps, seeded_server,
};
pub use report::{criterion_dir, criterion_median};
pub use results::Results;
pub use stats::{Rng, Table, clock_overhead, fmt_bytes, fmt_ns, median, percentile, ratio, times};
