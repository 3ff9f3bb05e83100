//! Stage 5, the quality gate: a candidate is judged against absolute bounds, the naive
//! baseline and the current champion (scored on the candidate's own holdout when their feature
//! schemas match, so the comparison is like for like). Fixed thresholds rot; a baseline and a
//! champion move with the data.

use crate::config::{Gate, Task};
use crate::model::metrics::{higher_is_better, primary, Metrics};

/// The gate's verdict, with every reason a candidate failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Reject(Vec<String>),
}

/// Judges `candidate` metrics. `champion` holds the champion's metrics on the same holdout.
pub fn judge(
    gate: &Gate,
    task: Task,
    candidate: &Metrics,
    baseline: &Metrics,
    champion: Option<&Metrics>,
) -> Verdict {
    let mut reasons = Vec::new();
    for b in &gate.bounds {
        let Some(v) = candidate.get(&b.metric) else {
            reasons.push(format!("metric {} was not measured", b.metric));
            continue;
        };
        let ok = if b.at_least {
            *v >= b.value
        } else {
            *v <= b.value
        };
        if !ok {
            reasons.push(format!(
                "{} = {v:.4} is not {} {}",
                b.metric,
                if b.at_least { ">=" } else { "<=" },
                b.value
            ));
        }
    }
    let key = primary(task);
    let mut compare = |name: &str, other: Option<&Metrics>| {
        let (Some(c), Some(o)) = (candidate.get(key), other.and_then(|m| m.get(key))) else {
            return;
        };
        let slack = gate.tolerance * o.abs();
        let ok = if higher_is_better(key) {
            *c >= o - slack
        } else {
            *c <= o + slack
        };
        if !ok {
            reasons.push(format!(
                "{key} = {c:.4} does not beat the {name}'s {o:.4} (tolerance {:.0}%)",
                gate.tolerance * 100.0
            ));
        }
    };
    if gate.must_beat_baseline {
        compare("baseline", Some(baseline));
    }
    if gate.must_beat_champion {
        compare("champion", champion);
    }
    if reasons.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Reject(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Bound;

    fn m(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn gate() -> Gate {
        Gate {
            bounds: vec![Bound {
                metric: "mae".into(),
                at_least: false,
                value: 2.5,
            }],
            must_beat_baseline: true,
            must_beat_champion: true,
            tolerance: 0.05,
            auto_promote: true,
            max_psi: None,
            max_score_shift: None,
        }
    }

    #[test]
    fn passes_a_good_candidate() {
        let v = judge(
            &gate(),
            Task::Regression,
            &m(&[("mae", 1.0)]),
            &m(&[("mae", 2.0)]),
            Some(&m(&[("mae", 1.02)])),
        );
        assert_eq!(v, Verdict::Pass);
    }

    #[test]
    fn rejects_with_every_reason() {
        let v = judge(
            &gate(),
            Task::Regression,
            &m(&[("mae", 3.0)]),
            &m(&[("mae", 2.0)]),
            Some(&m(&[("mae", 1.0)])),
        );
        match v {
            Verdict::Reject(r) => {
                assert_eq!(r.len(), 3, "{r:?}");
                assert!(r[0].contains("mae = 3.0000 is not <= 2.5"));
                assert!(r[1].contains("baseline"));
                assert!(r[2].contains("champion"));
            }
            Verdict::Pass => panic!("should reject"),
        }
    }

    #[test]
    fn tolerance_accepts_a_slightly_worse_candidate() {
        let v = judge(
            &gate(),
            Task::Regression,
            &m(&[("mae", 1.04)]),
            &m(&[("mae", 2.0)]),
            Some(&m(&[("mae", 1.0)])),
        );
        assert_eq!(v, Verdict::Pass);
    }
}
