//! The fan-out rings on their own: receivers that leave take their slot with them, changes
//! published twice before a flush both arrive, and subscribers joining and leaving while the
//! writer publishes miss nothing. The handshakes themselves are model-checked with loom in
//! the module.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::Event;
use crate::fanout::{self, Hub, Msg, Receiver, Recv};

fn msg(seq: u64) -> Msg<u64> {
    Msg::one(seq, Event::Apply(Arc::new(seq)))
}

/// The sequence number of the message `rx` has now, `None` if it would wait.
fn try_recv(rx: &mut Receiver<u64>) -> Option<u64> {
    match rx.poll_recv(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Recv::Msg(msg)) => Some(msg.seq),
        Poll::Pending => None,
        Poll::Ready(Recv::Overflowed(missed)) => panic!("overflowed by {missed}"),
        Poll::Ready(Recv::Closed) => panic!("closed"),
    }
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn receivers_that_park_and_leave_leave_no_parked_slot_behind() {
    let (hub, _publisher) = fanout::channels::<u64>(4);
    let mut stays = hub.resync_receiver();
    assert_eq!(try_recv(&mut stays), None);
    for _ in 0..1_000 {
        for mut rx in [hub.resync_receiver(), hub.backpressure_receiver()] {
            assert_eq!(try_recv(&mut rx), None, "an idle ring: the receiver parks");
        }
    }
    // The receiver that stays is parked; the others reused one slot per ring.
    assert_eq!(hub.parked_and_slots(), (1, 3));
}

#[test]
fn a_receiver_leaving_leaves_the_others_parked() {
    let (hub, mut publisher) = fanout::channels::<u64>(4);
    let counts: Vec<Arc<Wakes>> = (0..4).map(|_| Arc::default()).collect();
    let mut receivers: Vec<Option<Receiver<u64>>> = counts
        .iter()
        .map(|count| {
            let mut rx = hub.resync_receiver();
            let waker = Waker::from(Arc::clone(count));
            assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());
            Some(rx)
        })
        .collect();
    // The first parked leaves, and the last, which took its place in the list.
    receivers[0] = None;
    receivers[3] = None;
    assert_eq!(hub.parked_and_slots(), (2, 4));
    publisher.publish(msg(1));
    let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::Relaxed)).collect();
    assert_eq!(woken, [0, 1, 1, 0]);
    assert_eq!(hub.parked_and_slots(), (0, 4));
    for rx in receivers.iter_mut().flatten() {
        assert_eq!(try_recv(rx), Some(1));
    }
}

#[test]
fn two_publishes_before_a_flush_both_reach_a_backpressure_subscriber_in_order() {
    let (hub, mut publisher) = fanout::channels::<u64>(1);
    let mut rx = hub.backpressure_receiver();
    let mut cx = Context::from_waker(Waker::noop());
    publisher.publish(msg(1));
    publisher.publish(msg(2));
    // A one-message ring: the first goes in, the second waits for room.
    assert!(publisher.poll_flush(&mut cx).is_pending());
    assert_eq!(try_recv(&mut rx), Some(1));
    assert!(publisher.poll_flush(&mut cx).is_ready());
    assert_eq!(try_recv(&mut rx), Some(2));
    assert_eq!(try_recv(&mut rx), None);
}

#[test]
fn force_flush_delivers_every_queued_change_in_order() {
    let (hub, mut publisher) = fanout::channels::<u64>(4);
    let mut rx = hub.backpressure_receiver();
    publisher.publish(msg(1));
    publisher.publish(msg(2));
    publisher.force_flush();
    assert_eq!([try_recv(&mut rx), try_recv(&mut rx)], [Some(1), Some(2)]);
    assert_eq!(try_recv(&mut rx), None);
}

const MESSAGES: u64 = 5_000;

/// What a receiver that stays until the writer is gone got: the last sequence number
/// announced when it joined, and its messages (`None` for an overflow) in order.
struct Stayed {
    backpressure: bool,
    joined_after: u64,
    got: Vec<Option<u64>>,
}

/// A receiver on the backpressure ring when `backpressure`, on the resync ring otherwise, and
/// the last sequence number announced once it is in: it gets every message after that one.
fn join(hub: &Hub<u64>, announced: &AtomicU64, backpressure: bool) -> (Receiver<u64>, u64) {
    let rx = if backpressure {
        hub.backpressure_receiver()
    } else {
        hub.resync_receiver()
    };
    (rx, announced.load(Ordering::SeqCst))
}

/// Reads until the writer is gone.
async fn stay(mut rx: Receiver<u64>, joined_after: u64, backpressure: bool) -> Stayed {
    let mut got = Vec::new();
    loop {
        match poll_fn(|cx| rx.poll_recv(cx)).await {
            Recv::Msg(msg) => got.push(Some(msg.seq)),
            Recv::Overflowed(_) => got.push(None),
            Recv::Closed => break,
        }
    }
    Stayed {
        backpressure,
        joined_after,
        got,
    }
}

/// Joins and leaves until the writer is gone, either ring, in turn: parking once, or reading
/// one to three messages (which follow one another). Returns how many times it joined.
async fn churn(hub: Arc<Hub<u64>>, announced: Arc<AtomicU64>, index: u64) -> u64 {
    for round in index.. {
        let (mut rx, joined_after) = join(&hub, &announced, round % 3 == 0);
        let mut previous = None;
        for _ in 0..round % 4 {
            match poll_fn(|cx| rx.poll_recv(cx)).await {
                Recv::Msg(msg) => {
                    match previous {
                        Some(previous) => assert_eq!(msg.seq, previous + 1, "out of order"),
                        None => assert!(msg.seq <= joined_after + 1, "missed messages"),
                    }
                    previous = Some(msg.seq);
                }
                // Resync ring only: a churner that falls behind just leaves.
                Recv::Overflowed(_) => break,
                Recv::Closed => return round - index,
            }
        }
        if round % 4 == 0 {
            // Park (or read one message) and leave.
            let polled = poll_fn(|cx| Poll::Ready(rx.poll_recv(cx))).await;
            if let Poll::Ready(Recv::Closed) = polled {
                return round - index;
            }
        }
        // Let the other tasks go on, on a worker with few tasks.
        tokio::task::yield_now().await;
    }
    unreachable!("a churner stops once the writer is gone")
}

/// Checks what a receiver that stayed got: every message after it joined, in order, on the
/// backpressure ring; on the resync ring, the same but for the runs an overflow cut out.
fn check(stayed: &Stayed) {
    let Stayed {
        backpressure,
        joined_after,
        got,
    } = stayed;
    let mut expected = None;
    for (at, seq) in got.iter().enumerate() {
        let Some(seq) = *seq else {
            assert!(!backpressure, "the backpressure ring never overflows");
            expected = None;
            continue;
        };
        match expected {
            Some(expected) => assert_eq!(seq, expected, "message {at} out of order"),
            // The first message, or the first after an overflow.
            None if at == 0 => assert!(seq <= joined_after + 1, "missed messages"),
            None => {}
        }
        expected = Some(seq + 1);
    }
    // The last message arrives, but on the resync ring an overflow may come last instead: it
    // skips to the newest position (its subscriber resyncs from a snapshot).
    let last = got.last().copied();
    assert!(
        *joined_after == MESSAGES
            || last == Some(Some(MESSAGES))
            || !backpressure && last == Some(None),
        "joined after {joined_after}, backpressure {backpressure}, last {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_joining_and_leaving_during_publishes_miss_nothing() {
    let (hub, mut publisher) = fanout::channels::<u64>(16);
    let hub = Arc::new(hub);
    // The last sequence number the writer made "visible", before it publishes it, as the
    // store makes a change visible and then publishes it.
    let announced = Arc::new(AtomicU64::new(0));
    // One on each ring joins before the writer starts, the others at points along the stream.
    let stayers: Vec<_> = (0..8)
        .map(|index| {
            let backpressure = index % 2 == 0;
            let (hub, announced) = (Arc::clone(&hub), Arc::clone(&announced));
            let early = (index < 2).then(|| join(&hub, &announced, backpressure));
            tokio::spawn(async move {
                let (rx, joined_after) = if let Some(joined) = early {
                    joined
                } else {
                    while announced.load(Ordering::Relaxed) < index * MESSAGES / 8 {
                        tokio::task::yield_now().await;
                    }
                    join(&hub, &announced, backpressure)
                };
                stay(rx, joined_after, backpressure).await
            })
        })
        .collect();
    let churners: Vec<_> = (0..4)
        .map(|index| tokio::spawn(churn(Arc::clone(&hub), Arc::clone(&announced), index)))
        .collect();
    let writer = {
        let announced = Arc::clone(&announced);
        tokio::spawn(async move {
            for seq in 1..=MESSAGES {
                announced.store(seq, Ordering::SeqCst);
                if publisher.has_subscribers() {
                    publisher.publish(msg(seq));
                }
                poll_fn(|cx| publisher.poll_flush(cx)).await;
                // Let the receivers join and leave along the stream.
                tokio::task::yield_now().await;
            }
        })
    };
    let everyone = async {
        writer.await.expect("the writer does not panic");
        for stayer in stayers {
            check(&stayer.await.expect("a stayer does not panic"));
        }
        let mut joins = 0;
        for churner in churners {
            joins += churner.await.expect("a churner does not panic");
        }
        joins
    };
    let joins = tokio::time::timeout(Duration::from_secs(60), everyone)
        .await
        .expect("no receiver and no writer stalls");
    assert!(joins > 0, "the churners joined and left");
    let (parked, slots) = hub.parked_and_slots();
    assert_eq!(parked, 0, "every receiver is gone");
    // Each ring: four stayers and at most the four churners at once.
    assert!(slots <= 2 * 8, "a slot per receiver live at once: {slots}");
}
