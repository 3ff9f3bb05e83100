//! prescore: a scheduled batch job that precomputes machine-learning predictions into a
//! warehouse. A run reads rows with the job's SQL, checks them against the job's input
//! contract, builds features, trains (or loads) a model, gates it against a baseline and the
//! champion, scores every entity in parallel and upserts the predictions in one transaction.
//!
//! Reading order for a newcomer: `config` (what a job declares) → `warehouse` (the one seam to
//! SQLite and PostgreSQL) → `pipeline` (the stages, numbered in run order) → `model` →
//! `ledger` and `registry` (the tables prescore owns) → `app` and `cli` (the commands), with
//! `report` (what people read on a terminal), `monitor::html` (the page `prescore report`
//! writes) and `textfile` (what Prometheus reads).

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod fault;
pub mod ledger;
pub mod model;
pub mod monitor;
pub mod pipeline;
pub mod progress;
pub mod registry;
pub mod report;
pub mod textfile;
pub mod warehouse;
