//! The queue's rules, as properties over random triggers, completions, failures, requeues and
//! fences on an explicit clock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use crate::queue::{Outcome, Priority, Queue, QueueConfig};

fn config() -> QueueConfig {
    QueueConfig {
        debounce: Duration::ZERO,
        aging: Duration::from_millis(100),
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_secs(1),
        rate_limit_qps: 50.0,
        rate_limit_burst: 5,
        rate_limit_ceiling: Duration::from_millis(200),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Add(u8, Priority),
    Advance(u16),
    Pop,
    /// Ends the n-th running key (modulo how many run).
    Done(usize, Ending, bool),
    Unfence(u8),
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Success,
    SuccessRequeue(u16),
    Failure,
    FailureRetry(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let priority = prop_oneof![Just(Priority::Live), Just(Priority::Background)];
    let ending = prop_oneof![
        Just(Ending::Success),
        (1..300_u16).prop_map(Ending::SuccessRequeue),
        Just(Ending::Failure),
        (0..300_u16).prop_map(Ending::FailureRetry),
    ];
    prop_oneof![
        3 => (0..6_u8, priority).prop_map(|(k, p)| Op::Add(k, p)),
        2 => (0..200_u16).prop_map(Op::Advance),
        3 => Just(Op::Pop),
        3 => (0..8_usize, ending, any::<bool>()).prop_map(|(i, e, f)| Op::Done(i, e, f)),
        1 => (0..6_u8).prop_map(Op::Unfence),
    ]
}

/// What the queue owes and holds, by the rules.
#[derive(Default)]
struct Model {
    running: Vec<u8>,
    fenced: HashSet<u8>,
    failures: HashMap<u8, u32>,
    /// The earliest trigger of each key that no reconcile started after.
    owed: HashMap<u8, Instant>,
}

impl Model {
    fn started(&mut self, key: u8, at: Instant) {
        if self.owed.get(&key).is_some_and(|owed| *owed <= at) {
            self.owed.remove(&key);
        }
    }
}

fn outcome(ending: Ending, queue: &Queue<u8>, failures: u32) -> Outcome {
    match ending {
        Ending::Success => Outcome::Success(None),
        Ending::SuccessRequeue(ms) => Outcome::Success(Some(Duration::from_millis(ms.into()))),
        // As the controller does: the policy's delay; none means "await a change".
        Ending::Failure => Outcome::Failure(Some(queue.backoff(failures + 1))),
        Ending::FailureRetry(0) => Outcome::Failure(None),
        Ending::FailureRetry(ms) => Outcome::Failure(Some(Duration::from_millis(ms.into()))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_queue_keeps_its_rules(ops in proptest::collection::vec(op(), 1..200)) {
        let mut now = Instant::now();
        let mut queue = Queue::<u8>::new(config(), now);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Add(key, priority) => {
                    queue.add(key, priority, now);
                    model.owed.entry(key).or_insert(now);
                }
                Op::Advance(ms) => now += Duration::from_millis(ms.into()),
                Op::Pop => {
                    if let Some(popped) = queue.pop(now) {
                        let key = popped.key;
                        prop_assert!(!model.running.contains(&key), "{key} runs twice at once");
                        prop_assert!(!model.fenced.contains(&key), "{key} runs while fenced");
                        prop_assert_eq!(popped.failures, model.failures.get(&key).copied().unwrap_or(0));
                        model.running.push(key);
                        model.started(key, now);
                    }
                }
                Op::Done(i, ending, fence) => {
                    if model.running.is_empty() {
                        continue;
                    }
                    let key = model.running.remove(i % model.running.len());
                    let before = model.failures.get(&key).copied().unwrap_or(0);
                    let outcome = outcome(ending, &queue, before);
                    let failures = queue.done(&key, outcome, fence, now);
                    let expected = match outcome {
                        Outcome::Success(_) => 0,
                        Outcome::Failure(_) => before + 1,
                    };
                    prop_assert_eq!(failures, expected, "the backoff resets on success only");
                    model.failures.insert(key, expected);
                    if fence {
                        model.fenced.insert(key);
                    }
                }
                Op::Unfence(key) => {
                    if model.fenced.remove(&key) {
                        queue.unfence(&key, now);
                    }
                }
            }
            prop_assert!(queue.depth() <= 6, "a key is queued at most once");
            prop_assert_eq!(queue.running(), model.running.len());
        }
        // Drain: fences lift, running keys end, time passes; every trigger must be followed
        // by a reconcile that started after it.
        for key in std::mem::take(&mut model.fenced) {
            queue.unfence(&key, now);
        }
        for key in std::mem::take(&mut model.running) {
            queue.done(&key, Outcome::Success(None), false, now);
            model.failures.remove(&key);
        }
        for _ in 0..10_000 {
            match queue.pop(now) {
                Some(popped) => {
                    model.started(popped.key, now);
                    queue.done(&popped.key, Outcome::Success(None), false, now);
                    model.failures.remove(&popped.key);
                }
                None => match queue.next_wakeup() {
                    Some(at) => now = now.max(at),
                    None => break,
                },
            }
        }
        prop_assert!(model.owed.is_empty(), "triggers never followed by a reconcile: {:?}", model.owed.keys());
        prop_assert_eq!(queue.depth(), 0);
        // Idle keys are forgotten, but for the failure count of those that failed last.
        let failing = model.failures.values().filter(|failures| **failures > 0).count();
        prop_assert_eq!(queue.tracked(), failing, "idle keys are forgotten");
    }
}

#[test]
fn background_work_is_never_passed_by_live_changes_that_arrived_after_its_deadline() {
    // Overloaded: two new live keys a millisecond, one reconcile a millisecond.
    let config = config();
    let aging = config.aging;
    let mut now = Instant::now();
    let mut queue = Queue::<u32>::new(config, now);
    let background = u32::MAX;
    let mut next = 0;
    let mut deadline = None;
    let mut started = None;
    let mut ready_at = HashMap::new();
    for ms in 0..2_000 {
        for _ in 0..2 {
            queue.add(next, Priority::Live, now);
            ready_at.insert(next, now);
            next += 1;
        }
        if ms == 5 {
            queue.add(background, Priority::Background, now);
            deadline = Some(now + aging);
        }
        if let Some(popped) = queue.pop(now) {
            if popped.key == background {
                started = Some(now);
            } else if started.is_none()
                && let Some(deadline) = deadline
            {
                assert!(
                    ready_at[&popped.key] <= deadline,
                    "a live change that arrived after the background item's deadline went first"
                );
            }
            queue.done(&popped.key, Outcome::Success(None), false, now);
        }
        now += Duration::from_millis(1);
    }
    let started = started.expect("the background item started");
    // Before it: only the live keys that arrived by its deadline (2 a millisecond, 106 ms).
    assert!(started <= deadline.unwrap() + Duration::from_millis(2 * 106 + 1));
}

#[test]
fn a_trigger_while_running_runs_the_key_once_more_after_it() {
    let now = Instant::now();
    let mut queue = Queue::<u8>::new(config(), now);
    queue.add(1, Priority::Live, now);
    assert_eq!(queue.pop(now).unwrap().key, 1);
    queue.add(1, Priority::Live, now);
    queue.add(1, Priority::Live, now);
    assert_eq!(queue.pop(now), None, "not while it runs");
    assert!(queue.is_running(&1));
    queue.done(&1, Outcome::Success(None), false, now);
    assert_eq!(queue.pop(now).unwrap().key, 1, "once more");
    queue.done(&1, Outcome::Success(None), false, now);
    assert_eq!(queue.pop(now), None, "and only once");
}

#[test]
fn the_rate_limit_delays_a_retry_storm_but_never_past_its_ceiling() {
    let mut now = Instant::now();
    let mut queue = Queue::<u32>::new(config(), now);
    for key in 0..100 {
        queue.add(key, Priority::Live, now);
    }
    let mut popped = Vec::new();
    while let Some(next) = queue.pop(now) {
        popped.push(next.key);
    }
    for key in popped {
        queue.done(&key, Outcome::Failure(Some(Duration::ZERO)), false, now);
    }
    // The burst (5) retries at once; the rest wait, 20 ms apart, at most the ceiling (200 ms).
    let mut at_once = 0;
    while queue.pop(now).is_some() {
        at_once += 1;
    }
    assert_eq!(at_once, 5);
    now += Duration::from_millis(200);
    let mut by_ceiling = 0;
    while queue.pop(now).is_some() {
        by_ceiling += 1;
    }
    assert_eq!(by_ceiling, 95, "no retry waits past the ceiling");
}

#[test]
fn debounce_waits_for_quiet_but_not_past_the_aging_bound() {
    let mut config = config();
    config.debounce = Duration::from_millis(30);
    let mut now = Instant::now();
    let mut queue = Queue::<u8>::new(config, now);
    queue.add(1, Priority::Live, now);
    now += Duration::from_millis(20);
    queue.add(1, Priority::Live, now);
    now += Duration::from_millis(20);
    assert_eq!(queue.pop(now), None, "moved later by the second trigger");
    now += Duration::from_millis(10);
    assert_eq!(queue.pop(now).unwrap().key, 1);
    queue.done(&1, Outcome::Success(None), false, now);
    // Triggered every 10 ms: it still runs by the aging bound (100 ms) after the first.
    let first = now;
    let mut ran = None;
    for _ in 0..30 {
        queue.add(1, Priority::Live, now);
        now += Duration::from_millis(10);
        if queue.pop(now).is_some() {
            ran = Some(now);
            break;
        }
    }
    assert!(ran.is_some_and(|at| at <= first + Duration::from_millis(110)));
}
