//! The wire format of Wijkradar: the generated protobuf messages and gRPC
//! services of package `wijkradar.v1`, and the descriptor set for reflection.
//!
//! This is the only crate that defines protobuf types. Conversions into domain
//! types live at the boundary (the server and agent crates), never here.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("wijkradar.v1");
}

/// Encoded `FileDescriptorSet` of `wijkradar.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wijkradar_v1_descriptor.bin"));
