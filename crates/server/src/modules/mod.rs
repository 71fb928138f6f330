//! Domain modules: business rules, no HTTP types.

pub mod audit;
pub mod auth;
pub mod users;
