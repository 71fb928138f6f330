//! Domain modules: business rules, no HTTP types.

pub mod api_tokens;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod events;
pub mod instances;
pub mod monitoring;
pub mod nodes;
pub mod products;
pub mod settings;
pub mod ssh_keys;
pub mod users;
