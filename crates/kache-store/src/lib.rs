//! A shared, always-consistent in-memory cache of Kubernetes objects.

mod error;
mod index;
mod key;
mod reflect;
mod store;
mod subscriber;
mod writer;

pub use error::{Error, Result};
pub use kache_watch::Event;
pub use key::ObjectKey;
pub use reflect::{Reflect, ReflectExt, reflector};
pub use store::Store;
pub use subscriber::{DEFAULT_BUFFER, Delivery, Subscriber, SubscriberHandle};
pub use writer::{Writer, store};

#[cfg(test)]
mod tests;
