//! How many Socket.IO connections each account holds on this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::ids::UserId;

/// Open connections per account. Cheap to clone; clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct Connections(Arc<Mutex<HashMap<UserId, u32>>>);

impl Connections {
    /// Takes one of `user`'s `max` connections, or `None` when all are taken.
    /// The connection is given back when the [`Slot`] is dropped.
    pub fn try_open(&self, user: UserId, max: u32) -> Option<Slot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(user).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            connections: self.clone(),
            user,
        })
    }

    #[cfg(test)]
    fn open(&self, user: UserId) -> u32 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user)
            .copied()
            .unwrap_or(0)
    }
}

/// One connection of one account, held while the connection lives.
#[derive(Debug)]
pub struct Slot {
    connections: Connections,
    user: UserId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .connections
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.user) {
            *count -= 1;
            // Accounts without connections are forgotten, so the map only
            // holds the connected ones.
            if *count == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_holds_at_most_its_limit_and_gets_slots_back() {
        let connections = Connections::default();
        let (alice, bob) = (
            UserId::from(uuid::Uuid::now_v7()),
            UserId::from(uuid::Uuid::now_v7()),
        );
        let first = connections.try_open(alice, 2).expect("first");
        let second = connections.try_open(alice, 2).expect("second");
        assert!(connections.try_open(alice, 2).is_none(), "a third is over");
        let _bob = connections.try_open(bob, 2).expect("bob has his own count");
        drop(first);
        assert_eq!(connections.open(alice), 1);
        let _third = connections.try_open(alice, 2).expect("a slot came back");
        drop(second);
        assert_eq!(connections.open(alice), 1);
        assert_eq!(connections.open(bob), 1);
    }

    #[test]
    fn accounts_without_connections_are_forgotten() {
        let connections = Connections::default();
        let alice = UserId::from(uuid::Uuid::now_v7());
        drop(connections.try_open(alice, 1).expect("slot"));
        assert!(connections.0.lock().expect("lock").is_empty());
    }
}
