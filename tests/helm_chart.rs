//! `charts/hereabouts` renders, for its default values, the same objects as
//! `config/default` (what `manifests/install.yaml` holds), with helm built
//! from its Go module like the kit's other tools; and its values change
//! what they say they change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn helm() -> String {
    let tools = run(
        &root().join("e2e/tools/build.sh").display().to_string(),
        &[],
    );
    format!("{}/helm", tools.trim())
}

/// Every object, keyed by kind/namespace/name.
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).expect("YAML document");
        if v.is_null() {
            continue;
        }
        let key = format!(
            "{}/{}/{}",
            v["kind"].as_str().unwrap_or_default(),
            v["metadata"]["namespace"].as_str().unwrap_or_default(),
            v["metadata"]["name"].as_str().unwrap_or_default()
        );
        assert!(out.insert(key.clone(), v).is_none(), "{key} twice");
    }
    out
}

fn template(helm: &str, extra: &[&str]) -> BTreeMap<String, Value> {
    let mut args = vec![
        "template",
        "hereabouts",
        "charts/hereabouts",
        "--namespace",
        "kube-system",
        "--include-crds",
        // helm built from its module carries no version stamps, so its
        // default "cluster" is v1.20 and the chart's kubeVersion (>= 1.30,
        // the admission policy's) refuses it; name the kit's version.
        "--kube-version",
        "v1.33.0",
    ];
    args.extend(extra);
    objects(&run(helm, &args))
}

#[test]
fn default_values_render_what_kustomize_renders() {
    let helm = helm();
    let chart = template(&helm, &[]);
    let kustomize = objects(&run("kubectl", &["kustomize", "config/default"]));
    let chart_keys: Vec<&String> = chart.keys().collect();
    let kustomize_keys: Vec<&String> = kustomize.keys().collect();
    assert_eq!(chart_keys, kustomize_keys, "the same objects");
    for (key, object) in &kustomize {
        assert_eq!(
            &chart[key], object,
            "{key} differs between helm and kustomize"
        );
    }
}

#[test]
fn values_change_what_they_name() {
    let helm = helm();
    let chart = template(
        &helm,
        &[
            "--set",
            "namespace=ipam",
            "--set",
            "image.repository=registry.example/hb",
            "--set",
            "image.tag=9.9.9",
            "--set",
            "controller.replicas=3",
            "--set",
            "controller.gc.schedule=*/2 * * * *",
            "--set",
            "controller.gc.grace=90s",
            "--set",
            "node.tokenExpirationSeconds=600",
            "--set",
            "controller.resources.limits.memory=512Mi",
        ],
    );
    let d = &chart["Deployment/ipam/hereabouts-controller"];
    assert_eq!(d["spec"]["replicas"], 3);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "registry.example/hb:9.9.9");
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, &e["value"])))
        .collect();
    assert_eq!(env["HEREABOUTS_GC_SCHEDULE"], "*/2 * * * *");
    assert_eq!(env["HEREABOUTS_GC_GRACE"], "90s");
    let ds = &chart["DaemonSet/ipam/hereabouts-node"];
    assert_eq!(
        ds["spec"]["template"]["spec"]["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"]
            ["expirationSeconds"],
        600
    );
    let policy = &chart["ValidatingAdmissionPolicy//hereabouts-node-restriction"];
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == 'system:serviceaccount:ipam:hereabouts-node'"
    );
    let binding = &chart["ClusterRoleBinding//hereabouts-node"];
    assert!(
        binding["subjects"]
            .as_array()
            .expect("subjects")
            .iter()
            .all(|s| s["namespace"] == "ipam"),
        "{binding}"
    );
}
