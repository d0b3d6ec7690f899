//! Compiles `proto/wijkradar/v1/*.proto` in pure Rust (protox), so that a
//! machine with only a Rust toolchain builds the project.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "wijkradar/v1/ingest.proto",
        "wijkradar/v1/query.proto",
        "wijkradar/v1/governance.proto",
        "wijkradar/v1/intervention.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set; reflection needs it.
    fs::write(out.join("wijkradar_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Malformed messages are INVALID_ARGUMENT (src/lib.rs, `codec`).
        .codec_path("crate::codec::WireCodec")
        .compile_fds(fds)?;
    Ok(())
}
