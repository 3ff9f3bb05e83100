//! All integration tests, in one binary (as ripgrep does), grouped by topic. Each test runs
//! the real `prescore` binary against a fresh SQLite file and a fresh PostgreSQL database.

mod cluster;
mod support;

mod forecast;
mod hardening;
mod labels;
mod ltv;
mod monitoring;
mod operations;
mod registry;
mod reliability;
mod report;
mod sharding;
mod spine;
mod tls;
