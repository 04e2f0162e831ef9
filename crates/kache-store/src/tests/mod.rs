mod fanout;
mod health;
#[cfg(feature = "metrics")]
mod metrics;
mod model;
mod reflect_model;
mod snapshot;
mod sources;
mod subscriber;
mod unit;
mod user_code;
mod wait;
mod wire;
