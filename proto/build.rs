//! Compiles every `.proto` under `felhom/` with protox (pure Rust, so no system `protoc`) and
//! writes the encoded descriptor set next to the generated code for gRPC reflection.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let mut protos = Vec::new();
    collect_protos(&root.join("felhom"), &mut protos)?;
    protos.sort();
    println!("cargo:rerun-if-changed=felhom");
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let fds = protox::compile(&protos, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("felhom_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
