//! Starts a local control plane and keeps it up until Enter (or end of input), for poking
//! at it with kubectl or running a demo against it:
//!
//! ```text
//! cargo run -p kache-testenv --example control-plane
//! ```

use std::time::Instant;

use kache_testenv::TestEnv;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let started = Instant::now();
    let env = TestEnv::start().await?;
    let elapsed = started.elapsed();
    println!("server:     {}", env.server_url());
    println!("kubeconfig: {}", env.kubeconfig_path().display());
    println!("ready in:   {:.1} s", elapsed.as_secs_f64());
    println!("press Enter to stop");
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
    Ok(())
}
