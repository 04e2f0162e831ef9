//! A property test of the event-application path against a model, through `reflect` and
//! subscribers (proptest: random interleavings, shrunk on failure).
//!
//! `model.rs` applies events with the synchronous `Writer::apply`. This test, on the same
//! model, drives the asynchronous path users run: a source stream (events, including malformed-ish
//! sequences such as `InitApply` without `Init`, `Delete` of an unknown object or during a
//! relist, a duplicate `InitDone`, an `Init` that never finishes, and error items) polled
//! through [`reflect`](crate::ReflectExt::reflect), interleaved at random with
//! subscribers that join late, are polled a little or drained, are dropped, and use both
//! delivery modes. Checked after every step: the store equals the model; the event `reflect`
//! yields carries the store's own `Arc`; a drained resync subscriber has no lag and has rebuilt
//! exactly the store (so has a backpressure one with no lag); a backpressure subscriber is
//! never resynced. At the end the writer is dropped and every subscriber must end with exactly
//! the final store.
//!
//! `KACHE_MODEL_CASES` sets the number of cases (default 256, under a second).

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use futures::Stream;
use k8s_openapi::api::core::v1::ConfigMap;
use proptest::prelude::*;

use super::model::{Model, Op, op};
use super::subscriber::cm;
use crate::testing::{Replay, stored_versions};
use crate::{Delivery, Event, ReflectExt, Store, Subscriber, Writer};

const MAX_SUBSCRIBERS: usize = 4;

/// What the source stream hands `reflect`: an event the model makes, or an error item.
#[derive(Clone, Debug)]
enum Item {
    Event(Op),
    Error,
}

#[derive(Clone, Debug)]
enum Step {
    /// Offer an item to the source (unless one is still waiting) and poll `reflect` once.
    Feed(Item),
    /// Poll subscriber `.0` up to `.1` times.
    Poll(usize, usize),
    /// Poll subscriber `.0` until it has nothing more.
    Drain(usize),
    /// A new subscriber; `true` for backpressure delivery.
    Subscribe(bool),
    /// Drop subscriber `.0`.
    Unsubscribe(usize),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        12 => op().prop_map(Item::Event),
        1 => Just(Item::Error),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let sub = 0..MAX_SUBSCRIBERS;
    prop_oneof![
        6 => item().prop_map(Step::Feed),
        2 => (sub.clone(), 1..6usize).prop_map(|(s, n)| Step::Poll(s, n)),
        1 => sub.clone().prop_map(Step::Drain),
        1 => any::<bool>().prop_map(Step::Subscribe),
        1 => sub.prop_map(Step::Unsubscribe),
    ]
}

/// What the source stream hands out when `reflect` polls it.
#[derive(Debug, Default)]
struct Source {
    model: Model,
    next: Option<Item>,
    closed: bool,
}

impl Source {
    /// The item to hand out for `item`, updating the model.
    fn hand_out(&mut self, item: &Item) -> Result<Event<ConfigMap>, String> {
        match item {
            Item::Event(op) => Ok(self.model.step(op)),
            Item::Error => Err("an error item".to_owned()),
        }
    }
}

type Reflected = Pin<Box<dyn Stream<Item = Result<Event<Arc<ConfigMap>>, String>> + Send>>;

struct Sub {
    stream: Subscriber<ConfigMap>,
    view: Replay<ConfigMap>,
    ended: bool,
}

impl Sub {
    /// Polls up to `n` times; `true` if it stopped because nothing was ready.
    fn poll(&mut self, n: usize) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..n {
            match Pin::new(&mut self.stream).poll_next(&mut cx) {
                Poll::Ready(Some(event)) => self.view.apply(&event),
                Poll::Ready(None) => {
                    self.ended = true;
                    return true;
                }
                Poll::Pending => return true,
            }
        }
        false
    }

    fn drain(&mut self) {
        while !self.poll(usize::MAX) {}
    }
}

struct Harness {
    // `Arc<Mutex>`: shared with the source stream inside `reflect`.
    source: Arc<Mutex<Source>>,
    reflected: Option<Reflected>,
    store: Store<ConfigMap>,
    subs: Vec<Option<Sub>>,
}

impl Harness {
    fn new(buffer: usize) -> Self {
        let source = Arc::new(Mutex::new(Source::default()));
        let writer = Writer::<ConfigMap>::new().with_buffer(buffer);
        let store = writer.as_reader();
        let stream = futures::stream::poll_fn({
            let source = source.clone();
            move |_| {
                let mut source = source.lock().unwrap();
                match source.next.take() {
                    Some(item) => Poll::Ready(Some(source.hand_out(&item))),
                    None if source.closed => Poll::Ready(None),
                    None => Poll::Pending,
                }
            }
        });
        Self {
            source,
            reflected: Some(Box::pin(stream.reflect(writer))),
            store,
            subs: (0..MAX_SUBSCRIBERS).map(|_| None).collect(),
        }
    }

    /// Polls `reflect` once and checks what it yields. `false` once it has ended.
    fn pump(&mut self) -> Result<bool, TestCaseError> {
        let mut cx = Context::from_waker(Waker::noop());
        let Some(reflected) = self.reflected.as_mut() else {
            return Ok(false);
        };
        match reflected.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(event))) => {
                if let Event::Apply(obj) | Event::InitApply(obj) = &event {
                    // An `Apply` is stored as is; an unchanged `InitApply` keeps the stored
                    // `Arc`; either way what flows on is shared with the store.
                    let name = obj.metadata.name.as_deref().unwrap();
                    let namespace = obj.metadata.namespace.as_deref();
                    if let Some(stored) = self.store.get(namespace, name) {
                        let same = Arc::ptr_eq(&stored, obj);
                        prop_assert!(!matches!(event, Event::Apply(_)) || same);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
            Poll::Ready(None) => {
                self.reflected = None;
                return Ok(false);
            }
        }
        self.check_store()?;
        Ok(true)
    }

    fn check_store(&self) -> Result<(), TestCaseError> {
        let source = self.source.lock().unwrap();
        prop_assert_eq!(stored_versions(&self.store), source.model.versions());
        prop_assert_eq!(self.store.is_synced(), source.model.ready);
        Ok(())
    }

    fn feed(&mut self, item: &Item) -> Result<(), TestCaseError> {
        {
            let mut source = self.source.lock().unwrap();
            if source.next.is_none() {
                source.next = Some(item.clone());
            }
        }
        self.pump().map(drop)
    }

    fn drain(&mut self, i: usize) -> Result<(), TestCaseError> {
        let Some(sub) = self.subs[i].as_mut() else {
            return Ok(());
        };
        sub.drain();
        prop_assert!(!sub.ended, "a subscriber ends only with the writer");
        let ready = self.source.lock().unwrap().model.ready;
        if !ready {
            prop_assert_eq!(sub.view.events(), 0, "nothing before the first sync");
            return Ok(());
        }
        // A drained resync subscriber has every change and no lag; a backpressure one may lag
        // by the one change the writer has yet to hand it.
        if sub.stream.delivery() == Delivery::Resync {
            prop_assert_eq!(sub.stream.lag(), 0, "a drained subscriber has no lag");
        }
        if sub.stream.lag() == 0 {
            prop_assert_eq!(sub.view.versions(), stored_versions(&self.store));
        }
        Ok(())
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Feed(item) => self.feed(item)?,
            Step::Poll(i, n) => {
                if let Some(sub) = self.subs[*i].as_mut() {
                    sub.poll(*n);
                    prop_assert!(!sub.ended);
                }
            }
            Step::Drain(i) => self.drain(*i)?,
            Step::Subscribe(backpressure) => {
                if let Some(slot) = self.subs.iter_mut().find(|s| s.is_none()) {
                    let delivery = if *backpressure {
                        Delivery::Backpressure
                    } else {
                        Delivery::Resync
                    };
                    *slot = Some(Sub {
                        stream: self.store.subscribe_with(delivery),
                        view: Replay::default(),
                        ended: false,
                    });
                }
            }
            Step::Unsubscribe(i) => self.subs[*i] = None,
        }
        for sub in self.subs.iter().flatten() {
            if sub.stream.delivery() == Delivery::Backpressure {
                prop_assert_eq!(sub.stream.resyncs(), 0, "reflect waits, never resyncs");
            }
        }
        Ok(())
    }

    /// Closes the source, runs `reflect` to its end (letting backpressure subscribers make
    /// room), drops the writer, and checks that every subscriber ends with the final store.
    fn finish(mut self) -> Result<(), TestCaseError> {
        {
            let mut source = self.source.lock().unwrap();
            source.next = None;
            source.closed = true;
        }
        for _ in 0..10_000 {
            if !self.pump()? {
                break;
            }
            for sub in self.subs.iter_mut().flatten() {
                sub.poll(usize::MAX);
            }
        }
        prop_assert!(self.reflected.is_none(), "reflect ends with its source");
        let ready = self.source.lock().unwrap().model.ready;
        for sub in self.subs.iter_mut().flatten() {
            sub.drain();
            prop_assert!(sub.ended, "subscribers end with the writer");
            if ready {
                prop_assert_eq!(sub.view.versions(), stored_versions(&self.store));
            } else {
                prop_assert_eq!(sub.view.events(), 0);
            }
        }
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("KACHE_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn reflect_and_subscribers_agree_with_the_model_under_any_interleaving(
        steps in proptest::collection::vec(step(), 0..160),
        buffer in 1..6usize,
        first in proptest::collection::vec(any::<bool>(), 0..3),
    ) {
        let mut harness = Harness::new(buffer);
        // Some subscribers from the start, before the store is ready.
        for backpressure in first {
            harness.run(&Step::Subscribe(backpressure))?;
        }
        for step in &steps {
            harness.run(step)?;
        }
        harness.finish()?;
    }
}

#[test]
fn lag_is_zero_after_a_relist_that_changed_nothing() {
    let mut writer = Writer::<ConfigMap>::new();
    let store = writer.as_reader();
    let relist = |writer: &mut Writer<ConfigMap>| {
        writer.apply(Event::Init);
        writer.apply(Event::InitApply(cm("a", 1)));
        writer.apply(Event::InitDone);
    };
    relist(&mut writer);
    let mut sub = Sub {
        stream: store.subscribe(),
        view: Replay::default(),
        ended: false,
    };
    sub.drain();
    assert_eq!(sub.view.events(), 3, "the snapshot");
    assert_eq!(sub.stream.lag(), 0);
    relist(&mut writer);
    sub.drain();
    assert_eq!(sub.view.events(), 3, "an unchanged relist sends nothing");
    assert_eq!(
        sub.stream.lag(),
        0,
        "and leaves a caught-up subscriber caught up"
    );
}
