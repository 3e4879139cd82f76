//! `crds/` is generated from `crates/api`; this fails when someone changed one
//! without the other. Fix with `cargo run --bin crdgen`.

#[test]
fn crds_on_disk_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, crd) in hereabouts_api::definitions() {
        let expected = hereabouts_api::render(&crd).expect("render CRD");
        let path = dir.join(file);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `cargo run --bin crdgen`", path.display()));
        assert!(
            on_disk == expected,
            "{} is stale; run `cargo run --bin crdgen`",
            path.display()
        );
    }
}

#[test]
fn ippool_schema_keeps_whereabouts_fields() {
    let crd = hereabouts_api::definitions()
        .into_iter()
        .find(|(file, _)| file.contains("ippools"))
        .expect("IPPool CRD")
        .1;
    assert_eq!(crd.spec.group, "whereabouts.cni.cncf.io");
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let schema = serde_json::to_value(&version.schema).expect("schema");
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
    let allocation = &spec["properties"]["allocations"]["additionalProperties"];
    for field in ["id", "podref", "ifname"] {
        assert!(
            allocation["properties"].get(field).is_some(),
            "allocation field {field} missing: {allocation}"
        );
    }
    assert_eq!(spec["properties"]["range"]["type"], "string");
}
