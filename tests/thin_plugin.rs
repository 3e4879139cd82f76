//! The `hereabouts` binary a runtime executes is thin: it links no kube
//! client, TLS or async runtime, answers VERSION itself, and without a node
//! agent hands the verb to `hereabouts-direct` beside it, whose answer (one
//! JSON document, the exit status) is its own. No API server is needed:
//! what is checked here happens before any API call.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const THIN: &str = env!("CARGO_BIN_EXE_hereabouts");
const DIRECT: &str = env!("CARGO_BIN_EXE_hereabouts-direct");

/// A CNI bin dir of its own, removed when dropped.
struct BinDir(PathBuf);

impl BinDir {
    fn new(name: &str, binaries: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("hb-thin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bin dir");
        for (from, to) in binaries {
            std::fs::copy(from, dir.join(to)).expect("copy binary");
        }
        BinDir(dir)
    }
}

impl Drop for BinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `plugin` with `command`, no agent socket and no pod in CNI_ARGS.
fn run(plugin: &Path, command: &str, stdin: &Value) -> (Option<i32>, Value) {
    let out = hereabouts_kit::plugin::call(
        plugin,
        [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "sandbox-1"),
            ("CNI_NETNS", "/var/run/netns/unused"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "HEREABOUTS_AGENT_SOCKET",
                "/nonexistent/hereabouts/agent.sock",
            ),
        ],
        &stdin.to_string(),
    )
    .expect("plugin");
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("JSON on stdout");
    assert_eq!(docs.len(), 1, "exactly one document: {text}");
    (out.status.code(), docs[0].clone())
}

fn config() -> Value {
    json!({"cniVersion": "1.0.0", "name": "lan", "type": "macvlan",
           "ipam": {"type": "hereabouts", "range": "198.51.100.0/24"}})
}

#[test]
fn the_plugin_links_no_kube_client_tls_or_async_runtime() {
    let thin = std::fs::read(THIN).expect("plugin binary");
    let direct = std::fs::read(DIRECT).expect("direct plugin binary");
    let has =
        |binary: &[u8], needle: &str| binary.windows(needle.len()).any(|w| w == needle.as_bytes());
    // The probe finds the crates where they are linked (their source paths
    // are in every build's panic locations)...
    assert!(has(&direct, "kube-client-"), "probe finds kube-client");
    // ...and none of them in the plugin.
    for crate_path in ["kube-client-", "rustls-", "tokio-", "hyper-"] {
        assert!(!has(&thin, crate_path), "{THIN} links {crate_path}");
    }
    assert!(
        thin.len() * 4 < direct.len(),
        "plugin {} bytes, direct plugin {} bytes",
        thin.len(),
        direct.len()
    );
}

#[test]
fn version_is_answered_without_the_direct_plugin() {
    let dir = BinDir::new("version", &[(THIN, "hereabouts")]);
    let (code, doc) = run(&dir.0.join("hereabouts"), "VERSION", &config());
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["cniVersion"], "1.0.0");
    assert!(
        doc["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.1.0"))),
        "{doc}"
    );
}

#[test]
fn without_an_agent_the_direct_plugin_beside_it_answers() {
    let dir = BinDir::new(
        "direct",
        &[(THIN, "whereabouts"), (DIRECT, "hereabouts-direct")],
    );
    // Installed under whereabouts' name, as for NADs not yet switched: the
    // direct plugin found beside it parses the request and refuses it for
    // the missing pod, with its code, and that is the plugin's answer.
    let (code, doc) = run(&dir.0.join("whereabouts"), "ADD", &config());
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["code"], 4, "{doc}");
    assert!(
        doc["msg"]
            .as_str()
            .is_some_and(|m| m.contains("K8S_POD_NAMESPACE")),
        "{doc}"
    );
    // A bad configuration is named by field, through the same path.
    let mut bad = config();
    bad["ipam"]["range"] = json!("198.51.100.0/99");
    let (code, doc) = run(&dir.0.join("whereabouts"), "ADD", &bad);
    assert_eq!(code, Some(1), "{doc}");
    assert!(
        doc["msg"].as_str().is_some_and(|m| m.contains("range")),
        "{doc}"
    );
}

#[test]
fn a_missing_direct_plugin_is_named_in_the_error() {
    let dir = BinDir::new("alone", &[(THIN, "hereabouts")]);
    let (code, doc) = run(&dir.0.join("hereabouts"), "ADD", &config());
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["code"], 5, "{doc}");
    let expected = dir.0.join("hereabouts-direct");
    assert!(
        doc["msg"]
            .as_str()
            .is_some_and(|m| m.contains(&expected.display().to_string())),
        "{doc}"
    );
}
