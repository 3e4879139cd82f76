//! Writes `crds/*.yaml` from the Rust types in `src/crd` (the only schema
//! source). `cargo run --bin crdgen [DIR]`; a test fails when the files in
//! `crds/` differ from what this writes.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, crd) in hereabouts::crd::definitions() {
        let path = dir.join(file);
        std::fs::write(&path, hereabouts::crd::render(&crd)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
