//! Recommends agents for a task: of the candidates (live agents with their
//! capabilities and current number of claims, from the world model) those
//! covering at least [`MIN_COVERAGE_PERCENT`] of the required capabilities,
//! best first by reputation score, then lower load, then higher coverage,
//! then agent id — a total order, so the answer never depends on input order.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::reputation::Reputation;

/// A candidate must hold at least this share of the required capabilities.
pub const MIN_COVERAGE_PERCENT: usize = 70;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub agent_id: String,
    pub capabilities: Vec<String>,
    /// Tasks it holds now.
    pub load: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub agent_id: String,
    /// |required ∩ capabilities| / |required|; 1 when nothing is required.
    pub coverage: f64,
    pub score: f64,
    pub load: u32,
}

/// At most `limit` candidates for a task requiring `required`, best first.
pub fn recommend(
    reputation: &Reputation,
    required: &[String],
    candidates: &[Candidate],
    limit: usize,
) -> Vec<Recommendation> {
    let required: BTreeSet<&str> = required.iter().map(String::as_str).collect();
    let mut out: Vec<Recommendation> = candidates
        .iter()
        .filter_map(|c| {
            let held: BTreeSet<&str> = c.capabilities.iter().map(String::as_str).collect();
            let covered = required.intersection(&held).count();
            if covered * 100 < MIN_COVERAGE_PERCENT * required.len() {
                return None;
            }
            let coverage = if required.is_empty() { 1.0 } else { covered as f64 / required.len() as f64 };
            Some(Recommendation {
                agent_id: c.agent_id.clone(),
                coverage,
                score: reputation.score(&c.agent_id),
                load: c.load,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.load.cmp(&b.load))
            .then(b.coverage.total_cmp(&a.coverage))
            .then_with(|| a.agent_id.cmp(&b.agent_id))
    });
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use agentlog_core::schema::{TaskClaimed, TaskCompleted, TaskFailed};
    use agentlog_core::{Body, Envelope};

    use super::*;
    use crate::Projection;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn candidate(agent_id: &str, capabilities: &[&str], load: u32) -> Candidate {
        Candidate { agent_id: agent_id.into(), capabilities: strings(capabilities), load }
    }

    fn ids(recs: &[Recommendation]) -> Vec<&str> {
        recs.iter().map(|r| r.agent_id.as_str()).collect()
    }

    #[test]
    fn coverage_threshold() {
        let rep = Reputation::default();
        let two_of_three = recommend(&rep, &strings(&["a", "b", "c"]), &[candidate("x", &["a", "b"], 0)], 10);
        assert!(two_of_three.is_empty(), "0.667 < 0.70");

        let recs = recommend(&rep, &strings(&["a", "b", "c", "d"]), &[candidate("x", &["a", "b", "c", "z"], 0)], 10);
        assert_eq!(recs, [Recommendation { agent_id: "x".into(), coverage: 0.75, score: 0.5, load: 0 }]);

        let ten: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        let seven: Vec<&str> = ten[..7].iter().map(String::as_str).collect();
        assert_eq!(recommend(&rep, &ten, &[candidate("x", &seven, 0)], 10).len(), 1, "exactly 70% is enough");

        let any = recommend(&rep, &[], &[candidate("x", &[], 0)], 10);
        assert_eq!(any[0].coverage, 1.0);
    }

    #[test]
    fn ordering_is_total() {
        let mut rep = Reputation::default();
        let bodies = [
            Body::TaskClaimed(TaskClaimed { task_id: "t1".into(), agent_id: "good".into(), ..Default::default() }),
            Body::TaskCompleted(TaskCompleted { task_id: "t1".into(), agent_id: "good".into(), ..Default::default() }),
            Body::TaskFailed(TaskFailed { task_id: "t2".into(), agent_id: "bad".into(), ..Default::default() }),
        ];
        for (i, body) in bodies.into_iter().enumerate() {
            rep.apply(&Envelope { seq: i as u64 + 1, ts: 1_000 + i as u64, body: Some(body), ..Default::default() });
        }
        let required = strings(&["a", "b", "c", "d"]);
        let candidates = [
            candidate("bad", &["a", "b", "c", "d"], 0),
            candidate("n3", &["a", "b", "c", "d"], 1),
            candidate("n2", &["a", "b", "c"], 1),
            candidate("n1", &["a", "b", "c"], 1),
            candidate("n0", &["a", "b", "c", "d"], 2),
            candidate("good", &["a", "b", "c"], 9),
            candidate("weak", &["a", "b"], 0),
        ];
        let recs = recommend(&rep, &required, &candidates, 10);
        // good (score) > n3 (load 1, coverage 1) > n1 = n2 (by id) > n0 (load 2) > bad (score).
        assert_eq!(ids(&recs), ["good", "n3", "n1", "n2", "n0", "bad"]);
        let mut reversed = candidates.to_vec();
        reversed.reverse();
        assert_eq!(recommend(&rep, &required, &reversed, 10), recs);
        assert_eq!(ids(&recommend(&rep, &required, &candidates, 2)), ["good", "n3"]);
        assert!(recommend(&rep, &required, &candidates, 0).is_empty());
    }
}
