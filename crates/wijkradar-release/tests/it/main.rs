//! The release crate's attack tests, in one test binary.

mod common;
mod differencing;
mod one_household;
mod stay_put_attack;
