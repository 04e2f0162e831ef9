mod health;
#[cfg(feature = "metrics")]
mod metrics;
mod model;
mod snapshot;
mod subscriber;
mod unit;
mod user_code;
mod wait;
