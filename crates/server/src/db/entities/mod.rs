//! SeaORM entities, hand-written, one module per table.

pub mod job;
