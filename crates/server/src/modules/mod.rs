//! Domain modules: business rules per domain, no HTTP types.

pub mod users;
