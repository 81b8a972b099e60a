//! Giving a trace replay a seed, so that a sweep over a trace has a spread too: the trace's
//! inter-arrival gaps are kept but put in a seeded random order, which keeps how bursty the
//! arrivals are (the gaps' distribution) and each request's lengths, prefix and client, and
//! varies only which requests meet in a burst.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::workload::TraceRequest;

/// `trace` (in arrival order) with its arrival gaps shuffled by `seed`.
pub fn shuffle_gaps(trace: &[TraceRequest], seed: u64) -> Vec<TraceRequest> {
    let mut gaps: Vec<f64> = trace
        .windows(2)
        .map(|w| w[1].arrival - w[0].arrival)
        .collect();
    gaps.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut at = trace.first().map_or(0.0, |r| r.arrival);
    trace
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if i > 0 {
                at += gaps[i - 1];
            }
            TraceRequest {
                arrival: at,
                ..r.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffling_keeps_the_gaps_and_the_requests_and_depends_on_the_seed() {
        let trace: Vec<TraceRequest> = [0.0, 1.0, 1.5, 4.0, 4.25, 9.0]
            .iter()
            .enumerate()
            .map(|(i, &arrival)| TraceRequest {
                arrival,
                prompt_len: 10 + i,
                output_len: 5,
                ..Default::default()
            })
            .collect();
        let gaps = |t: &[TraceRequest]| {
            let mut g: Vec<f64> = t.windows(2).map(|w| w[1].arrival - w[0].arrival).collect();
            g.sort_by(f64::total_cmp);
            g
        };
        let a = shuffle_gaps(&trace, 1);
        assert_eq!(gaps(&a), gaps(&trace));
        assert!(a
            .iter()
            .zip(&trace)
            .all(|(x, y)| x.prompt_len == y.prompt_len));
        let arrivals = |t: &[TraceRequest]| t.iter().map(|r| r.arrival).collect::<Vec<_>>();
        assert_ne!(arrivals(&a), arrivals(&shuffle_gaps(&trace, 2)));
        assert_eq!(arrivals(&a), arrivals(&shuffle_gaps(&trace, 1)));
    }
}
