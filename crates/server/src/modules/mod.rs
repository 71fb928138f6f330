//! Domain modules: business rules, no HTTP types.
