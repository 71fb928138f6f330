//! The server's integration tests, one binary: each module starts real servers on
//! random ports against a fresh database and talks HTTP and Socket.IO to them.

mod common;
mod live;

mod account_flows;
mod admin_instances;
mod admin_jobs;
mod admin_users;
mod api_token_auth;
mod api_tokens;
mod audit;
mod audit_coverage;
mod auth;
mod billing;
mod billing_rules;
mod billing_runs;
mod cache;
mod catalog;
mod console;
mod credentials;
mod dunning;
mod email;
mod http;
mod image_import;
mod instances;
mod job_queue;
mod metrics;
mod migrations;
mod monitoring;
mod nodes;
mod notifications;
mod ownership;
mod payments;
mod rbac;
mod realtime;
mod schema;
mod settings;
mod ssh_keys;
mod tickets;
mod two_factor;
mod user_views;
