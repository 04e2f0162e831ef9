//! A Kubernetes list/watch event stream.
//!
//! [`watcher`] lists and then watches a kind of object, and yields [`Event`]s that describe the
//! full set of matching objects over time: an initial sync (`Init`, `InitApply`*, `InitDone`),
//! then live `Apply` and `Delete`. It resumes dropped watches from the last seen
//! resourceVersion, relists on `410 Gone`, and reports every error as a stream item while it
//! keeps going.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod event;

pub use event::Event;
