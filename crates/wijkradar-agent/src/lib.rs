//! The partner agent: reads a partner's export as its configuration
//! describes it, maps each address to its CBS buurt, turns the address or
//! BSN into a keyed pseudonym, keeps the result in an outbox on disk and
//! submits it to the aggregator over mutual TLS.
//!
//! Architecture invariant: this is the only crate that sees a raw
//! identifier (an address or a BSN). What leaves it, and what its outbox
//! holds, is a [`wijkradar_proto::v1::Signal`]: a 32-byte pseudonym, a buurt,
//! a type and a month. Rejected rows are reported by line number and reason,
//! never with their content.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod client;
pub mod config;
mod csv_input;
pub mod export;
pub mod flow;
pub mod normalise;
pub mod outbox;
pub mod pc6;
pub mod run;

pub use client::{ClientError, ClientTls, SubmitReport, connect, submit};
pub use config::PartnerConfig;
pub use export::{ExportRules, ExportSummary, Reject, read_export};
pub use outbox::Outbox;
pub use pc6::Pc6Table;
