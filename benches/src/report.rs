//! Reading criterion's estimates back, so a bench can print `kache / kube-runtime` ratios.

use std::path::{Path, PathBuf};

/// Where criterion writes its estimates, computed the way criterion does (`CRITERION_HOME`,
/// then `$CARGO_TARGET_DIR/criterion`, then the target folder of the running bench), so that
/// passing it to `Criterion::output_directory` and to [`criterion_median`] agrees.
#[must_use]
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // A bench runs as <target>/<profile>/deps/<name>-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median time of one iteration of `group/function/param`, in seconds, from the last run.
#[must_use]
pub fn criterion_median(dir: &Path, group: &str, function: &str, param: usize) -> Option<f64> {
    let path = dir
        .join(group)
        .join(function)
        .join(param.to_string())
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(json["median"]["point_estimate"].as_f64()? / 1e9)
}
