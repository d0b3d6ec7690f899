//! The `wijkradar` binary run as a user runs it, in one test binary: the
//! partner agent's commands, and the aggregator's and analyst's.

mod agent;
mod cli;
