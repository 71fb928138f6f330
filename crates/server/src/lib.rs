//! VMCloud as a library: configuration, persistence, cache, jobs, HTTP API and
//! the domain modules. The `vmcloud` binary is a thin CLI over this crate.

pub mod cache;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod mail;
pub mod modules;
pub mod pagination;
pub mod private_files;
pub mod realtime;
pub mod startup;
pub mod telemetry;
pub mod validation;
