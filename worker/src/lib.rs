//! q8s: a task queue, scheduler and worker cluster in the lineage of Django Q.
//!
//! A service enqueues a [`Task`] (a function name plus JSON arguments) through
//! a [`Producer`]; it travels as a signed [`Package`] through a [`Broker`], a
//! function from the [`Registry`] runs it, the [`Store`] keeps its result, and
//! a [`Reader`] reads it back. A [`Client`] is a producer and a reader together.

pub mod broker;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod hook;
pub mod humanize;
pub mod metrics;
pub mod options;
pub mod package;
pub mod producer;
pub mod reader;
pub mod registry;
pub mod report;
pub mod request;
pub mod schedule;
pub mod stat;
pub mod store;
pub mod task;

pub use broker::{Broker, BrokerError, Delivery, Oldest, Receipt};
pub use client::{Client, ClientError};
pub use clock::Clock;
pub use config::{Config, ConfigError};
pub use options::TaskOptions;
pub use package::{Package, PackageError, Signer};
pub use producer::Producer;
pub use reader::Reader;
pub use registry::{Call, Registry};
pub use request::TaskRequest;
pub use stat::{Stat, State};
pub use store::{Store, StoreError};
pub use task::{ErrorKind, Task, TaskError, TaskRecord};
