//! Domain modules: business rules per domain, no HTTP types.

pub mod api_tokens;
pub mod ssh_keys;
pub mod users;
