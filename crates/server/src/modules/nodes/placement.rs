//! Choosing a node for a new instance: pure rules over capacity snapshots,
//! so they are tested without a database.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// How instances spread over the nodes of a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The node with the most free memory: even load, room to grow.
    #[default]
    Spread,
    /// The fullest node that still fits: frees whole nodes for maintenance.
    Pack,
}

/// What a node can still take, after overcommit and what is placed on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Capacity {
    pub vcpus: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub node: NodeId,
    /// `false` for nodes that are down, in maintenance or draining.
    pub accepting: bool,
    pub free: Capacity,
}

/// What the instance needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    pub vcpus: i64,
    pub memory_mib: i64,
    pub disk_gib: i64,
}

impl Capacity {
    fn fits(&self, demand: &Demand) -> bool {
        self.vcpus >= demand.vcpus
            && self.memory_mib >= demand.memory_mib
            && self.disk_gib >= demand.disk_gib
    }
}

/// The chosen node, or why none fits (for a 409 the operator can act on).
pub fn choose(
    candidates: &[Candidate],
    demand: &Demand,
    strategy: Strategy,
) -> Result<NodeId, String> {
    let accepting: Vec<&Candidate> = candidates.iter().filter(|c| c.accepting).collect();
    if accepting.is_empty() {
        return Err("no node in this region is accepting new instances".to_owned());
    }
    let fitting = accepting.iter().filter(|c| c.free.fits(demand));
    let chosen = match strategy {
        Strategy::Spread => fitting.max_by_key(|c| (c.free.memory_mib, c.free.vcpus)),
        Strategy::Pack => fitting.min_by_key(|c| (c.free.memory_mib, c.free.vcpus)),
    };
    chosen.map(|c| c.node).ok_or_else(|| {
        let best = accepting
            .iter()
            .map(|c| c.free)
            .max_by_key(|f| f.memory_mib)
            .unwrap_or(Capacity {
                vcpus: 0,
                memory_mib: 0,
                disk_gib: 0,
            });
        format!(
            "no node in this region has room for {} vCPU, {} MiB and {} GiB \
             (the roomiest has {} vCPU, {} MiB and {} GiB free)",
            demand.vcpus,
            demand.memory_mib,
            demand.disk_gib,
            best.vcpus,
            best.memory_mib,
            best.disk_gib
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(memory_mib: i64, accepting: bool) -> Candidate {
        Candidate {
            node: NodeId::new(),
            accepting,
            free: Capacity {
                vcpus: 8,
                memory_mib,
                disk_gib: 100,
            },
        }
    }

    const SMALL: Demand = Demand {
        vcpus: 1,
        memory_mib: 1024,
        disk_gib: 10,
    };

    #[test]
    fn spread_picks_the_emptiest_and_pack_the_fullest_that_fits() {
        let nodes = [node(512, true), node(2048, true), node(8192, true)];
        assert_eq!(choose(&nodes, &SMALL, Strategy::Spread), Ok(nodes[2].node));
        assert_eq!(choose(&nodes, &SMALL, Strategy::Pack), Ok(nodes[1].node));
    }

    #[test]
    fn nodes_not_accepting_are_skipped() {
        let nodes = [node(8192, false), node(2048, true)];
        assert_eq!(choose(&nodes, &SMALL, Strategy::Spread), Ok(nodes[1].node));
    }

    #[test]
    fn refusals_say_why() {
        let full = choose(&[node(512, true)], &SMALL, Strategy::Spread).expect_err("refused");
        assert!(
            full.contains("1024 MiB") && full.contains("512 MiB"),
            "{full}"
        );
        let none = choose(&[node(8192, false)], &SMALL, Strategy::Spread).expect_err("refused");
        assert!(none.contains("accepting"), "{none}");
        assert!(choose(&[], &SMALL, Strategy::Pack).is_err());
    }
}
