//! tstat-transport: find finished Tstat log directories, turn their rows into
//! flow documents, batch them and publish them to RabbitMQ without losing or
//! duplicating a flow.
//!
//! Each stage is a module; the programs in `src/bin/` are thin wrappers.

#![deny(missing_docs)]

pub mod bytesize;
pub mod check;
pub mod chunk;
/// The programs' shared glue: flags, printing, exit codes, signals. The
/// library never imports it.
pub mod cli;
pub mod config;
pub mod consume;
pub mod cull;
pub mod durable;
pub mod find;
pub mod flow;
pub mod follow;
pub mod identity;
pub mod lock;
pub mod metrics;
pub mod parse;
pub mod publish;
pub mod report;
pub mod resume;
pub mod send;
pub mod shutdown;
