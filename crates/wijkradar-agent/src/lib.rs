//! The partner agent, first version: reads a partner's export (CSV), maps
//! each address to its CBS buurt, turns the address into a keyed pseudonym
//! and submits the signals to the aggregator over mutual TLS.
//!
//! Architecture invariant: this is the only crate that sees a raw
//! identifier (an address). What leaves it is a [`wijkradar_proto::v1::Signal`]
//! holding a 32-byte pseudonym, a buurt, a type and a month; rejected rows
//! are reported by line number and reason, never with their content.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod client;
mod csv_input;
pub mod export;
pub mod normalise;
pub mod pc6;

pub use client::{ClientTls, SubmitReport, connect, submit};
pub use export::{Export, Reject, read_export};
pub use pc6::Pc6Table;
