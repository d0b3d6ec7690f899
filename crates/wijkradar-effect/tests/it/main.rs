//! The effect crate's tests, in one test binary: the estimators against
//! synthdid's Proposition 99 figures, and the intervention design.

mod design;
mod prop99;
