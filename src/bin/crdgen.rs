//! Writes `crds/*.yaml` and `config/crd/*.yaml` from the Rust types in
//! `crates/api` (the only schema source). `cargo run --bin crdgen [DIR...]`;
//! tests fail when the files in either directory differ from what this
//! writes. `config/crd` holds a copy because kustomize loads nothing from
//! outside a kustomization's directory.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.is_empty() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        dirs = vec![root.join("crds"), root.join("config").join("crd")];
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
        for (file, crd) in hereabouts_api::definitions() {
            let path = dir.join(file);
            std::fs::write(&path, hereabouts_api::render(&crd)?)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
