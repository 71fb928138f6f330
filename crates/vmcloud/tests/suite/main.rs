//! The binary's integration tests, one binary: each runs `vmcloud` as its own
//! OS processes, the way an operator does.

mod common;
// The server crate's Socket.IO test client, of which the replicas test needs part.
#[allow(dead_code)]
#[path = "../../../server/tests/suite/live.rs"]
mod live;

mod cli;
mod readme_walkthrough;
mod replicas;
