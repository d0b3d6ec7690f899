//! The domain core of Wijkradar: CBS area codes and their hierarchy, months,
//! the signal-type catalogue, pseudonyms as opaque values, signals and batches.
//!
//! Architecture invariant: this crate does no IO and knows neither protobuf nor
//! storage. The CBS files it parses are embedded at compile time or handed in
//! as bytes by the caller.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod area;
pub mod catalogue;
pub mod clock;
pub mod derived;
pub mod hierarchy;
pub mod intervention;
pub mod month;
pub mod pseudonym;
pub mod signal;

pub use area::{AreaCode, AreaError, AreaLevel, BuurtCode, GemeenteCode, WijkCode};
pub use catalogue::{
    Catalogue, CatalogueError, SignalKind, SignalTypeDef, SignalTypeName, SignalUnit,
};
pub use clock::Clock;
pub use hierarchy::{Area, Hierarchy, HierarchyError};
pub use month::{Month, MonthError};
pub use pseudonym::{PartnerPseudonym, PseudonymError, ServerPseudonym};
pub use signal::{
    Batch, BatchId, BatchIdError, CellTotal, KeyIdError, PseudonymKeyId, Severity, Signal,
};
