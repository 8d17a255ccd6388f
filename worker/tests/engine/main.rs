//! Integration tests of the engine against real databases: SQLite files and PostgreSQL.
//!
//! PostgreSQL comes from `Q8S_TEST_POSTGRES_URL` (scripts/test starts one). When
//! `Q8S_TEST_REQUIRE_SERVICES=1` a missing server fails the tests instead of skipping them.

mod broker;
mod cli;
mod client;
mod cluster;
mod cron;
#[cfg(feature = "monitor")]
mod monitor;
#[cfg(feature = "sentry")]
mod report;
mod schedules;
mod store;
mod support;
