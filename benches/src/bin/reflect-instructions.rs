//! The reflect path in isolation, for counting its instructions under cachegrind: a count
//! does not depend on the load of a shared machine, where timings here vary by 2x.
//!
//! `reflect-instructions <objects> <rounds> <sync|apply>` reflects `rounds` times, into a new
//! store, either a whole initial sync of `objects` `ConfigMap`s or `objects` `Apply` events that
//! change every object of a full store. Run it with 0 and 1 rounds and subtract: what remains
//! is the cost of one round (event clones included), the fixtures cancel out.
//!
//! ```text
//! cargo build --release -p kache-benches --bin reflect-instructions
//! valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
//!     target/release/reflect-instructions 10000 1 sync
//! ```

use std::convert::Infallible;

use futures::{StreamExt, executor::block_on, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kache_benches::{config_map, kache_events, world};
use kache_store::ReflectExt;
use kache_watch::Event;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(objects), Some(rounds), Some(mode)) = (
        args.first().and_then(|n| n.parse().ok()),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
        args.get(2).map(String::as_str),
    ) else {
        eprintln!("usage: reflect-instructions <objects> <rounds> <sync|apply>");
        std::process::exit(2);
    };
    let before = world(objects, 1, config_map);
    let after = world(objects, 1_000_000, config_map);
    for _ in 0..rounds {
        let (store, mut writer) = kache_store::store::<ConfigMap>();
        let events: Vec<Event<ConfigMap>> = if mode == "apply" {
            for event in kache_events(before.iter().cloned()) {
                writer.apply(event);
            }
            after.iter().cloned().map(Event::Apply).collect()
        } else {
            kache_events(before.iter().cloned())
        };
        let reflected = stream::iter(events.into_iter().map(Ok::<_, Infallible>))
            .reflect(writer)
            .for_each(|event| {
                drop(std::hint::black_box(event));
                futures::future::ready(())
            });
        block_on(reflected);
        drop(store);
    }
}
