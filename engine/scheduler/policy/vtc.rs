//! Virtual Token Counter (Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024):
//! fair sharing of the server between clients (the OpenAI `user` field). Each client has a
//! counter of the service it received, prompt tokens weighted 1 and output tokens 2 (output costs
//! more per token); the waiting request of the client with the smallest counter is admitted first
//! (ties by arrival), and when blocks run out the running request of the client with the largest
//! counter is preempted. A client arriving with nothing in the system has its counter lifted to
//! the smallest counter among the clients that do, so idling earns no credit to spend in a burst.
//!
//! What it optimises: service shares between backlogged clients stay within a bounded difference
//! whatever their request rates, so one client flooding the server cannot starve the others.
//! What it can starve: nobody for long, as long as served clients' counters grow; a client's own
//! requests still wait behind each other. Knobs: none beyond aging.
//!
//! Bound (with aging on, the default; see `scheduler::aging` for the derivation): a request that
//! fits the cache finishes within `max_wait_steps` + Σ (prompt + output + 2) steps of arriving,
//! summed over itself and the requests unfinished when it arrived.
//!
//! Differences from the paper: the counters count tokens as they are planned into steps
//! (recomputation after a preemption counts again: it is service the server gave), and a client
//! counts as present from its request's arrival until it finishes, not only while queued.

use rustc_hash::FxHashMap as HashMap;
use std::cmp::Ordering;
use std::sync::Arc;

use super::super::sequence::SeqState;
use super::Policy;

/// Service weights per token (the paper's defaults).
const PROMPT_WEIGHT: f64 = 1.0;
const OUTPUT_WEIGHT: f64 = 2.0;

#[derive(Default)]
pub struct VirtualTokenCounter {
    counters: HashMap<Arc<str>, f64>,
    /// Unfinished requests per client, for clients that have any.
    present: HashMap<Arc<str>, usize>,
}

fn client_of(seq: &SeqState) -> Arc<str> {
    seq.client.clone().unwrap_or_else(|| Arc::from(""))
}

impl VirtualTokenCounter {
    fn counter(&self, seq: &SeqState) -> f64 {
        let key = seq.client.as_deref().unwrap_or("");
        self.counters.get(key).copied().unwrap_or(0.0)
    }

    /// The smallest counter among clients with requests in the system.
    fn min_present(&self) -> Option<f64> {
        self.present
            .keys()
            .map(|c| self.counters.get(c).copied().unwrap_or(0.0))
            .min_by(f64::total_cmp)
    }

    /// Bounds memory by the clients in the system, not every client ever seen: forgets the
    /// counters of absent clients that a return would lift anyway (at or below the smallest
    /// present counter, or all when nobody is present), then, past `RETAINED` absent clients,
    /// the least served of them (a return lifts them to the floor, a little below where strict
    /// VTC would put them).
    fn prune(&mut self) {
        const RETAINED: usize = 1024;
        if self.counters.len() <= self.present.len() + 2 * RETAINED {
            return;
        }
        let floor = self.min_present().unwrap_or(f64::INFINITY);
        let present = &self.present;
        self.counters
            .retain(|c, v| present.contains_key(c) || *v > floor);
        let mut absent: Vec<(f64, Arc<str>)> = self
            .counters
            .iter()
            .filter(|(c, _)| !present.contains_key(*c))
            .map(|(c, v)| (*v, c.clone()))
            .collect();
        if absent.len() > RETAINED {
            absent.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, c) in &absent[..absent.len() - RETAINED] {
                self.counters.remove(c);
            }
        }
    }
}

impl Policy for VirtualTokenCounter {
    fn compare_waiting(&self, a: &SeqState, b: &SeqState) -> Ordering {
        self.counter(a)
            .total_cmp(&self.counter(b))
            .then(a.arrival_order.cmp(&b.arrival_order))
    }

    fn reorders(&self) -> bool {
        true
    }

    fn on_arrival(&mut self, seq: &SeqState) {
        let client = client_of(seq);
        if !self.present.contains_key(&client) {
            if let Some(floor) = self.min_present() {
                let c = self.counters.entry(client.clone()).or_insert(0.0);
                *c = c.max(floor);
            }
        }
        *self.present.entry(client).or_insert(0) += 1;
    }

    fn on_planned(&mut self, seq: &SeqState, prompt: usize, output: usize) {
        let served = PROMPT_WEIGHT * prompt as f64 + OUTPUT_WEIGHT * output as f64;
        *self.counters.entry(client_of(seq)).or_insert(0.0) += served;
    }

    fn on_removed(&mut self, seq: &SeqState) {
        let client = client_of(seq);
        if let Some(n) = self.present.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.present.remove(&client);
                self.prune();
            }
        }
    }

    fn choose_victim(&self, running: &[&SeqState]) -> usize {
        let mut best = 0;
        for (i, s) in running.iter().enumerate() {
            let b = running[best];
            let by_counter = self.counter(s).total_cmp(&self.counter(b));
            if by_counter.then(s.admitted_order.cmp(&b.admitted_order)) == Ordering::Greater {
                best = i;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::request::{Request, SamplingParams};

    fn seq(id: u64, client: &str) -> SeqState {
        let mut r = Request::new(vec![1, 2, 3], SamplingParams::default());
        r.client = Some(Arc::from(client));
        SeqState::new(id, r, id, 0, 0)
    }

    #[test]
    fn the_least_served_client_goes_first_and_a_newcomer_is_lifted() {
        let mut p = VirtualTokenCounter::default();
        let (a, b) = (seq(0, "a"), seq(1, "b"));
        p.on_arrival(&a);
        p.on_arrival(&b);
        p.on_planned(&a, 10, 0);
        p.on_planned(&b, 3, 2);
        // a: 10, b: 3 + 4 = 7.
        let (a2, b2) = (seq(2, "a"), seq(3, "b"));
        assert_eq!(p.compare_waiting(&b2, &a2), Ordering::Less);
        assert_eq!(
            p.choose_victim(&[&b, &a]),
            1,
            "the most served client's request"
        );
        // c arrives with nothing in the system: lifted to the smallest present counter (7).
        let c = seq(4, "c");
        p.on_arrival(&c);
        assert_eq!(p.counter(&c), 7.0);
        assert_eq!(
            p.compare_waiting(&b2, &c),
            Ordering::Less,
            "ties go by arrival"
        );
    }

    #[test]
    fn counters_of_departed_clients_are_pruned() {
        let mut p = VirtualTokenCounter::default();
        let keep = seq(0, "stays");
        p.on_arrival(&keep);
        p.on_planned(&keep, 100, 0);
        for i in 1..5000 {
            let s = seq(i, &format!("client {i}"));
            p.on_arrival(&s);
            p.on_planned(&s, 1, 0);
            p.on_removed(&s);
        }
        assert!(
            p.counters.len() <= 2049,
            "{} counters kept",
            p.counters.len()
        );
        assert_eq!(p.counter(&keep), 100.0);
        assert_eq!(p.present.len(), 1);
    }
}
