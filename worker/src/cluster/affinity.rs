//! `cpu_affinity`: which CPUs each worker may use, by the seed's rule.
//!
//! The rule: walk the CPUs this process may run on (its affinity mask, which on
//! Kubernetes is the pod's cpuset) round-robin, giving each worker in turn the
//! next `cpu_affinity` of them. An affinity of 0, or as many CPUs as there
//! are or more, means no pinning.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs of each worker, in worker order; `None` when the rule means no pinning.
pub fn assign(cpus: &[usize], workers: usize, affinity: usize) -> Option<Vec<Vec<usize>>> {
    if affinity == 0 || affinity >= cpus.len() {
        return None;
    }
    let mut next = 0;
    let assignment = (0..workers)
        .map(|_| {
            (0..affinity)
                .map(|_| {
                    if next == cpus.len() {
                        next = 0;
                    }
                    next += 1;
                    cpus[next - 1]
                })
                .collect()
        })
        .collect();
    Some(assignment)
}

/// The CPUs this process may run on, from its affinity mask.
pub fn allowed_cpus() -> nix::Result<Vec<usize>> {
    let mask = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|cpu| mask.is_set(*cpu).unwrap_or(false))
        .collect())
}

/// Restricts this process to `cpus`.
pub fn pin_current_process(cpus: &[usize]) -> nix::Result<()> {
    let mut mask = CpuSet::new();
    for cpu in cpus {
        mask.set(*cpu)?;
    }
    sched_setaffinity(Pid::from_raw(0), &mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reproduces_the_seed_table() {
        let four: Vec<usize> = (0..4).collect();
        let eight: Vec<usize> = (0..8).collect();
        assert_eq!(
            assign(&four, 4, 1),
            Some(vec![vec![0], vec![1], vec![2], vec![3]])
        );
        assert_eq!(
            assign(&four, 4, 2),
            Some(vec![vec![0, 1], vec![2, 3], vec![0, 1], vec![2, 3]])
        );
        assert_eq!(
            assign(&eight, 8, 3),
            Some(vec![
                vec![0, 1, 2],
                vec![3, 4, 5],
                vec![6, 7, 0],
                vec![1, 2, 3],
                vec![4, 5, 6],
                vec![7, 0, 1],
                vec![2, 3, 4],
                vec![5, 6, 7],
            ])
        );
    }

    #[test]
    fn zero_or_all_cpus_means_no_pinning() {
        let four: Vec<usize> = (0..4).collect();
        assert_eq!(assign(&four, 4, 0), None);
        assert_eq!(assign(&four, 4, 4), None);
        assert_eq!(assign(&four, 4, 9), None);
    }

    #[test]
    fn uses_the_cpus_of_the_mask_not_zero_to_n() {
        // A pod's cpuset: CPUs 2, 3, 6 and 7.
        assert_eq!(
            assign(&[2, 3, 6, 7], 3, 1),
            Some(vec![vec![2], vec![3], vec![6]])
        );
    }

    proptest! {
        #[test]
        fn every_worker_gets_affinity_distinct_cpus_from_the_mask(
            cpus in prop::collection::btree_set(0usize..64, 2..16),
            workers in 1usize..20,
            affinity in 1usize..16,
        ) {
            let cpus: Vec<usize> = cpus.into_iter().collect();
            match assign(&cpus, workers, affinity) {
                None => prop_assert!(affinity >= cpus.len()),
                Some(assignment) => {
                    prop_assert_eq!(assignment.len(), workers);
                    for set in assignment {
                        let distinct: std::collections::BTreeSet<_> = set.iter().collect();
                        prop_assert_eq!(distinct.len(), affinity);
                        prop_assert!(set.iter().all(|cpu| cpus.contains(cpu)));
                    }
                }
            }
        }
    }
}
