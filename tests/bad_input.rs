//! Malformed and hostile input, as tables (one test per family; each case
//! has a name, the input and the field its refusal must name), against the
//! built binaries and the real local API server:
//! - the plugin's environment and stdin: refused with the CNI code and a
//!   message naming the variable or field and its value, no panic, no
//!   IPClaim created;
//! - absurd `request_timeout` values on every verb (issue 12, defect 7):
//!   refused, never a panic, and DEL still releases;
//! - the controller's duration flags: a clear exit naming the flag;
//! - NAD configurations: a Warning Event on the NAD naming the field, no
//!   pool, and the controller keeps serving;
//! - IPPools edited by hand into nonsense: the controller keeps serving,
//!   and never hands out an address a hand-edited entry holds;
//! - IPClaims written directly with absurd sizes: refused with a condition
//!   naming the field.
//!
//! Unit-level cases of the pure parsers are in `crates/core/src/bad_input.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hereabouts_api::{
    ClaimRange, IPAllocation, IPClaim, IPPool, IPPoolSpec, NetworkAttachmentDefinition,
    NetworkAttachmentDefinitionSpec,
};
use hereabouts_kit::{TestNamespace, eventually};

mod common;
use common::{pods, range, replica, setup};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

// === helpers ===============================================================

struct Run {
    success: bool,
    stdout: Value,
    stderr: String,
}

fn plugin(env: &[(String, String)], stdin: &[u8]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hereabouts"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    // The plugin may refuse before reading all of a huge stdin.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("plugin output");
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {text}"))
    };
    Run {
        success: out.status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn no_panic(name: &str, run: &Run) {
    assert!(
        !run.stderr.contains("panicked"),
        "{name}: the plugin panicked: {}",
        run.stderr
    );
}

/// The refusal's (code, message), failing the test when the run succeeded.
fn refusal(name: &str, run: &Run) -> (u64, String) {
    no_panic(name, run);
    assert!(
        !run.success,
        "{name}: expected a refusal, got {}",
        run.stdout
    );
    (
        run.stdout["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no code: {}", run.stdout)),
        run.stdout["msg"].as_str().unwrap_or_default().to_owned(),
    )
}

fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn claim_count(client: &Client, ns: &str) -> usize {
    Api::<IPClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list claims")
        .items
        .len()
}

async fn pool_names(client: &Client, ns: &str) -> BTreeSet<String> {
    Api::<IPPool>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list pools")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

/// The one controller replica of a test.
fn controller(ns: &TestNamespace, extra: &[&str]) -> hereabouts_kit::Controller {
    replica(ns, "a", extra)
}

fn claim_of(ns: &str, name: &str, pod: &(String, String), ranges: Vec<ClaimRange>) -> IPClaim {
    IPClaim::new(
        name,
        common::claim_spec(ns, "bad-input", "net1", pod, ranges),
    )
}

/// `Ready` of a claim answered for its generation: (status, reason, message).
fn answer(claim: &IPClaim) -> Option<(String, String, String, Vec<String>)> {
    let status = claim.status.as_ref()?;
    if status.observed_generation != claim.metadata.generation {
        return None;
    }
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        c.reason.clone(),
        c.message.clone(),
        status.addresses.clone(),
    ))
}

async fn answers(
    client: &Client,
    ns: &str,
    names: &[String],
    seconds: u64,
) -> BTreeMap<String, (String, String, String, Vec<String>)> {
    let api: Api<IPClaim> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{} claims answered", names.len()),
        seconds,
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            let got: BTreeMap<_, _> = list
                .items
                .iter()
                .filter(|c| names.contains(&c.name_any()))
                .filter_map(|c| Some((c.name_any(), answer(c)?)))
                .collect();
            (got.len() == names.len()).then_some(got)
        },
    )
    .await
    .expect("every claim answered")
}

// === the plugin: environment ===============================================

const GOOD_ARGS: &str = "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0";

fn good_stdin(kubeconfig: &str) -> Vec<u8> {
    json!({"cniVersion": "1.0.0", "name": "bad-env", "type": "macvlan",
           "ipam": {"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 1,
                    "kubernetes": {"kubeconfig": kubeconfig}}})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn plugin_environment_is_refused_naming_the_variable() {
    let (kit, ns) = setup("bad-env").await;
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    let ns_args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME=web-0",
        ns.name
    );
    let long_id = "c".repeat(513);
    let long_pod = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
        ns.name,
        "p".repeat(254)
    );
    let long_ns = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME=web-0",
        "n".repeat(64)
    );
    let huge_args = format!("{ns_args};{}broken", "X=1;".repeat(20_000));
    // (name, CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_ARGS, code, field, value)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        u64,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "command missing",
            None,
            Some("c1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_COMMAND",
            "not set",
        ),
        (
            "command lower case",
            Some("add"),
            Some("c1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_COMMAND",
            "\"add\"",
        ),
        (
            "command unknown",
            Some("DELETE"),
            Some("c1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_COMMAND",
            "\"DELETE\"",
        ),
        (
            "command with space",
            Some("ADD "),
            Some("c1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_COMMAND",
            "\"ADD \"",
        ),
        (
            "command huge",
            Some(&long_id),
            Some("c1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_COMMAND",
            "ccccc",
        ),
        (
            "container id missing",
            Some("ADD"),
            None,
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_CONTAINERID",
            "not set",
        ),
        (
            "container id with slash",
            Some("ADD"),
            Some("../etc"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_CONTAINERID",
            "../etc",
        ),
        (
            "container id with space",
            Some("ADD"),
            Some("c 1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_CONTAINERID",
            "c 1",
        ),
        (
            "container id starting with dash",
            Some("ADD"),
            Some("-c1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_CONTAINERID",
            "-c1",
        ),
        (
            "container id over the limit",
            Some("ADD"),
            Some(&long_id),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_CONTAINERID",
            "512",
        ),
        (
            "container id on DEL",
            Some("DEL"),
            Some("c;1"),
            Some("net1"),
            Some(&ns_args),
            4,
            "CNI_CONTAINERID",
            "c;1",
        ),
        (
            "ifname missing",
            Some("ADD"),
            Some("c1"),
            None,
            Some(&ns_args),
            4,
            "CNI_IFNAME",
            "not set",
        ),
        (
            "ifname 16 bytes",
            Some("ADD"),
            Some("c1"),
            Some("net1234567890123"),
            Some(&ns_args),
            4,
            "CNI_IFNAME",
            "net1234567890123",
        ),
        (
            "ifname with slash",
            Some("ADD"),
            Some("c1"),
            Some("net/1"),
            Some(&ns_args),
            4,
            "CNI_IFNAME",
            "net/1",
        ),
        (
            "ifname dot dot",
            Some("ADD"),
            Some("c1"),
            Some(".."),
            Some(&ns_args),
            4,
            "CNI_IFNAME",
            "\"..\"",
        ),
        (
            "ifname with colon",
            Some("CHECK"),
            Some("c1"),
            Some("net1:0"),
            Some(&ns_args),
            4,
            "CNI_IFNAME",
            "net1:0",
        ),
        (
            "ifname with tab",
            Some("ADD"),
            Some("c1"),
            Some("net\t1"),
            Some(&ns_args),
            4,
            "CNI_IFNAME",
            "net\\t1",
        ),
        (
            "args not key=value",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("K8S_POD_NAME"),
            4,
            "CNI_ARGS",
            "K8S_POD_NAME",
        ),
        (
            "args empty key",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("=web-0"),
            4,
            "CNI_ARGS",
            "=web-0",
        ),
        (
            "args without pod",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("IgnoreUnknown=true"),
            4,
            "K8S_POD_NAMESPACE",
            "missing",
        ),
        (
            "args pod name empty",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME="),
            4,
            "K8S_POD_NAME",
            "missing",
        ),
        (
            "args pod name upper case",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web"),
            4,
            "K8S_POD_NAME",
            "\"Web\"",
        ),
        (
            "args pod name with slash",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("K8S_POD_NAMESPACE=default;K8S_POD_NAME=a/../b"),
            4,
            "K8S_POD_NAME",
            "a/../b",
        ),
        (
            "args pod name over the limit",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some(&long_pod),
            4,
            "K8S_POD_NAME",
            "253",
        ),
        (
            "args namespace with slash",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("K8S_POD_NAMESPACE=kube-system/pods;K8S_POD_NAME=web-0"),
            4,
            "K8S_POD_NAMESPACE",
            "kube-system/pods",
        ),
        (
            "args namespace with dot",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=web-0"),
            4,
            "K8S_POD_NAMESPACE",
            "a.b",
        ),
        (
            "args namespace over the limit",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some(&long_ns),
            4,
            "K8S_POD_NAMESPACE",
            "63",
        ),
        (
            "args bad static IP",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some(
                "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=198.51.100.300",
            ),
            7,
            "IP",
            "198.51.100.300",
        ),
        (
            "args static IP outside",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some("IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;IP=203.0.113.5"),
            7,
            "IP",
            "203.0.113.5",
        ),
        (
            "args huge",
            Some("ADD"),
            Some("c1"),
            Some("net1"),
            Some(&huge_args),
            4,
            "CNI_ARGS",
            "broken",
        ),
    ];
    assert!(cases.len() >= 30);
    let stdin = good_stdin(&kubeconfig);
    for (name, command, id, ifname, args, code, field, value) in &cases {
        let mut env = vec![("CNI_NETNS".to_owned(), "/var/run/netns/none".to_owned())];
        for (key, v) in [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", args),
        ] {
            if let Some(v) = v {
                env.push((key.to_owned(), (*v).to_owned()));
            }
        }
        let run = plugin(&env, &stdin);
        let (got, msg) = refusal(name, &run);
        assert_eq!(got, *code, "{name}: code of {msg}");
        assert!(msg.contains(field), "{name}: {msg} does not name {field}");
        assert!(msg.contains(value), "{name}: {msg} does not show {value}");
        assert!(
            msg.len() < 2000,
            "{name}: a readable message, not {} bytes",
            msg.len()
        );
    }
    assert_eq!(
        claim_count(&kit.client, &ns.name).await,
        0,
        "no IPClaim was created"
    );
    let _ = GOOD_ARGS;
}

// === the plugin: stdin =====================================================

#[tokio::test]
async fn plugin_stdin_is_refused_naming_the_field() {
    let (kit, ns) = setup("bad-stdin").await;
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME=web-0",
        ns.name
    );
    let add = env_of(&[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "net1"),
        ("CNI_NETNS", "/var/run/netns/none"),
        ("CNI_ARGS", &args),
    ]);
    let kc = json!({"kubeconfig": kubeconfig});
    let conf = |ipam: Value| -> Vec<u8> {
        json!({"cniVersion": "1.0.0", "name": "bad-stdin", "type": "macvlan", "ipam": ipam})
            .to_string()
            .into_bytes()
    };
    let ipam = |extra: Value| -> Vec<u8> {
        let mut ipam = json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 1, "kubernetes": kc});
        if let (Some(m), Value::Object(e)) = (ipam.as_object_mut(), extra) {
            m.extend(e);
        }
        conf(ipam)
    };
    let statics: Vec<String> = (1..=250).map(|i| format!("198.51.100.{i}/24")).collect();
    let excludes: Vec<String> = (0..5000)
        .map(|i| format!("198.51.100.{}/32", i % 250 + 1))
        .collect();
    let ranges: Vec<Value> = (0..100)
        .map(|i| json!({"range": format!("100.64.{i}.0/24")}))
        .collect();
    let big_number = format!(
        r#"{{"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "ipam": {{"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 1{}}}}}"#,
        "0".repeat(400)
    );
    // (name, stdin, code, field, value)
    let cases: Vec<(&str, Vec<u8>, u64, &str, String)> = vec![
        ("empty stdin", Vec::new(), 6, "stdin", String::new()),
        ("garbage", b"\x00\x01garbage".to_vec(), 6, "stdin", String::new()),
        ("truncated JSON", br#"{"cniVersion": "1.0.0", "ipam": {"#.to_vec(), 6, "stdin", String::new()),
        ("a JSON string", br#""hello""#.to_vec(), 7, "stdin", "string".into()),
        ("a JSON array", b"[1,2]".to_vec(), 7, "stdin", "array".into()),
        ("nesting 100,000 deep", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), 6, "stdin", String::new()),
        ("cniVersion missing", json!({"name": "n", "ipam": {"type": "hereabouts", "range": "198.51.100.0/24"}}).to_string().into_bytes(), 7, "cniVersion", String::new()),
        ("cniVersion unknown", json!({"cniVersion": "99.0.0", "name": "n", "ipam": {"type": "hereabouts", "range": "198.51.100.0/24"}}).to_string().into_bytes(), 1, "cniVersion", "99.0.0".into()),
        ("cniVersion a number", json!({"cniVersion": 1, "name": "n", "ipam": {"type": "hereabouts", "range": "198.51.100.0/24"}}).to_string().into_bytes(), 7, "cniVersion", "1".into()),
        ("ipam missing", json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"}).to_string().into_bytes(), 7, "ipam", String::new()),
        ("ipam null", json!({"cniVersion": "1.0.0", "name": "n", "ipam": null}).to_string().into_bytes(), 7, "ipam", String::new()),
        ("ipam type other", conf(json!({"type": "host-local", "range": "198.51.100.0/24"})), 7, "ipam.type", "host-local".into()),
        ("range /0 IPv6", conf(json!({"type": "hereabouts", "range": "::/0"})), 7, "ipam.range", "::/0".into()),
        ("range /129", conf(json!({"type": "hereabouts", "range": "2001:db8::/129"})), 7, "ipam.range", "/129".into()),
        ("range prefix 2^128", conf(json!({"type": "hereabouts", "range": "198.51.100.0/340282366920938463463374607431768211456"})), 7, "ipam.range", "340282366920938463463374607431768211456".into()),
        ("a number beyond any float", big_number.into_bytes(), 6, "stdin", "number out of range".into()),
        ("range as a list", conf(json!({"type": "hereabouts", "range": ["198.51.100.0/24"]})), 7, "ipam.range", "array".into()),
        ("range_start a float", ipam(json!({"range_start": 1.5})), 7, "ipam.range_start", "1.5".into()),
        ("range_end before range_start", ipam(json!({"range_start": "198.51.100.200", "range_end": "198.51.100.100"})), 7, "ipam.range_end", "198.51.100.100".into()),
        ("exclude 5,000 entries", ipam(json!({"exclude": excludes})), 7, "ipam.exclude", "5000".into()),
        ("ipRanges 100 entries", conf(json!({"type": "hereabouts", "ipRanges": ranges})), 7, "ipam.ipRanges", "100".into()),
        ("250 static IPs in one range", {
            let mut v: Value = serde_json::from_slice(&ipam(json!({}))).expect("json");
            v["runtimeConfig"] = json!({"ips": statics});
            v.to_string().into_bytes()
        }, 7, "runtimeConfig.ips[1]", "198.51.100.2".into()),
        ("static IP garbage", {
            let mut v: Value = serde_json::from_slice(&ipam(json!({}))).expect("json");
            v["runtimeConfig"] = json!({"ips": ["not-an-ip"]});
            v.to_string().into_bytes()
        }, 7, "runtimeConfig.ips[0]", "not-an-ip".into()),
        ("static IP wrong prefix", {
            let mut v: Value = serde_json::from_slice(&ipam(json!({}))).expect("json");
            v["args"] = json!({"cni": {"ips": ["198.51.100.9/16"]}});
            v.to_string().into_bytes()
        }, 7, "args.cni.ips[0]", "198.51.100.9/16".into()),
        ("static IP of the other family", {
            let mut v: Value = serde_json::from_slice(&ipam(json!({}))).expect("json");
            v["runtimeConfig"] = json!({"ips": ["2001:db8::5"]});
            v.to_string().into_bytes()
        }, 7, "runtimeConfig.ips[0]", "2001:db8::5".into()),
        ("network_name 254 characters", ipam(json!({"network_name": "n".repeat(254)})), 7, "ipam.network_name", "nnnnnnnn".into()),
        ("network_name one over the limit with the range", ipam(json!({"network_name": "n".repeat(253 - "-198.51.100.0-24".len() + 1)})), 7, "ipam.network_name", "nnnnnnnn".into()),
        ("network_name upper case", ipam(json!({"network_name": "Blue"})), 7, "ipam.network_name", "Blue".into()),
        ("gateway garbage", ipam(json!({"gateway": "the router"})), 7, "ipam.gateway", "the router".into()),
        ("routes not a list", ipam(json!({"routes": {"dst": "0.0.0.0/0"}})), 7, "ipam.routes", "object".into()),
        ("kubeconfig unreadable", conf(json!({"type": "hereabouts", "range": "198.51.100.0/24", "kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"}})), 7, "kubernetes.kubeconfig", "/nonexistent/kubeconfig".into()),
        ("configuration_path a directory", ipam(json!({"configuration_path": "/"})), 7, "/", String::new()),
        ("request_timeout 1e300", ipam(json!({"request_timeout": 1e300})), 7, "ipam.request_timeout", "1e+300".into()),
        ("request_timeout 1e19", ipam(json!({"request_timeout": 1e19})), 7, "ipam.request_timeout", "1e+19".into()),
        ("request_timeout years", ipam(json!({"request_timeout": "1000000000y"})), 7, "ipam.request_timeout", "1000000000y".into()),
        ("request_timeout over an hour", ipam(json!({"request_timeout": "61m"})), 7, "ipam.request_timeout", "61m".into()),
        ("request_timeout negative", ipam(json!({"request_timeout": -1})), 7, "ipam.request_timeout", "-1".into()),
        ("request_timeout null object", ipam(json!({"request_timeout": {}})), 7, "ipam.request_timeout", "object".into()),
        ("hold_released sometimes", ipam(json!({"hold_released": "sometimes"})), 7, "ipam.hold_released", "sometimes".into()),
        ("hold_released over a day", ipam(json!({"hold_released": "2days"})), 7, "ipam.hold_released", "2days".into()),
        ("release_cooldown negative", ipam(json!({"release_cooldown": -5})), 7, "ipam.release_cooldown", "-5".into()),
        ("release_cooldown on", ipam(json!({"release_cooldown": "on"})), 7, "ipam.release_cooldown", "on".into()),
        ("release_cooldown 1e300", ipam(json!({"release_cooldown": 1e300})), 7, "ipam.release_cooldown", "1e+300".into()),
    ];
    assert!(cases.len() >= 38);
    for (name, stdin, code, field, value) in &cases {
        let run = plugin(&add, stdin);
        let (got, msg) = refusal(name, &run);
        assert_eq!(got, *code, "{name}: code of {msg}");
        assert!(
            msg.contains(field),
            "{name}: {msg:.300} does not name {field}"
        );
        assert!(
            msg.contains(value.as_str()),
            "{name}: {msg:.300} does not show {value}"
        );
        assert!(
            msg.len() < 2000,
            "{name}: a readable message, not {} bytes",
            msg.len()
        );
    }
    assert_eq!(
        claim_count(&kit.client, &ns.name).await,
        0,
        "no IPClaim was created"
    );
    assert!(
        pool_names(&kit.client, &ns.name).await.is_empty(),
        "no pool was created"
    );
}

// === issue 12, defect 7: request_timeout ===================================

/// Before the fix, `1e300` panicked in `Duration::from_secs_f64` on every
/// verb (DEL included, so pod teardown wedged) and `1e19` overflowed
/// `Instant + Duration` in ADD's wait.
#[tokio::test]
async fn absurd_request_timeouts_never_panic_and_never_block_del() {
    let (kit, ns) = setup("bad-timeout").await;
    let kubeconfig = ns.kubeconfig().expect("kubeconfig").display().to_string();
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME=web-0;K8S_POD_UID=u1",
        ns.name
    );
    let timeouts = [
        json!(1e300),
        json!(1e19),
        json!(18446744073709551615u64),
        json!(f64::MAX),
        json!("1000000000y"),
        json!("584942417356y"),
        json!(0),
        json!(-1e300),
    ];
    for timeout in &timeouts {
        let stdin = json!({"cniVersion": "1.1.0", "name": "timeouts", "type": "macvlan",
            "ipam": {"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": timeout,
                     "kubernetes": {"kubeconfig": kubeconfig}},
            "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "198.51.100.5/24"}]}})
        .to_string()
        .into_bytes();
        for command in ["ADD", "CHECK", "GC", "STATUS"] {
            let env = env_of(&[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "net1"),
                ("CNI_NETNS", "/var/run/netns/none"),
                ("CNI_ARGS", &args),
            ]);
            let name = format!("{command} with request_timeout {timeout}");
            let (code, msg) = refusal(&name, &plugin(&env, &stdin));
            assert_eq!(code, 7, "{name}: {msg}");
            assert!(msg.contains("ipam.request_timeout"), "{name}: {msg}");
            let shown = timeout
                .as_str()
                .map_or_else(|| timeout.to_string(), str::to_owned);
            let shown = shown.trim_end_matches(".0");
            assert!(
                msg.contains(shown)
                    || msg.contains(&format!("{:e}", timeout.as_f64().unwrap_or(0.0)))
                    || msg.contains(&timeout.as_f64().unwrap_or(0.0).to_string()),
                "{name}: {msg} does not show the value"
            );
        }
    }
    assert_eq!(
        claim_count(&kit.client, &ns.name).await,
        0,
        "no IPClaim was created"
    );

    // DEL releases whatever the timeout says: a claim ADD filed before the
    // NAD was edited is deleted.
    for (i, timeout) in timeouts.iter().enumerate() {
        let pod = format!("web-{i}");
        let container = format!("c{i}");
        let name = hereabouts_api::claim_name(&pod, "net1", "timeouts");
        let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
        let mut claim = claim_of(
            &ns.name,
            &name,
            &(pod.clone(), format!("u{i}")),
            vec![range("198.51.100.0/24")],
        );
        claim.spec.container_id.clone_from(&container);
        api.create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
        let stdin = json!({"cniVersion": "1.0.0", "name": "timeouts", "type": "macvlan",
            "ipam": {"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": timeout,
                     "kubernetes": {"kubeconfig": kubeconfig}}})
        .to_string()
        .into_bytes();
        let args = format!(
            "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={pod}",
            ns.name
        );
        let env = env_of(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", &container),
            ("CNI_IFNAME", "net1"),
            ("CNI_NETNS", "/var/run/netns/none"),
            ("CNI_ARGS", &args),
        ]);
        let run = plugin(&env, &stdin);
        no_panic(&format!("DEL with {timeout}"), &run);
        assert!(
            run.success,
            "DEL with request_timeout {timeout}: {}",
            run.stdout
        );
        assert!(
            api.get_opt(&name).await.expect("get").is_none(),
            "DEL with request_timeout {timeout} deleted the claim"
        );
    }
}

// === the controller's flags ================================================

#[test]
fn controller_refuses_absurd_flags_naming_the_flag() {
    // (flags, the flag the error must name)
    let cases: &[(&[&str], &str)] = &[
        (&["--hold-released", "1000000000y"], "--hold-released"),
        (
            &["--hold-released", "18446744073709551615s"],
            "--hold-released",
        ),
        (&["--hold-released", "2days"], "--hold-released"),
        (&["--release-cooldown", "2days"], "--release-cooldown"),
        (&["--release-cooldown", "soon"], "--release-cooldown"),
        (&["--release-cooldown", "1000000000y"], "--release-cooldown"),
        (&["--gc-grace", "1000000000y"], "--gc-grace"),
        (&["--gc-grace", "600000000000000000000s"], "--gc-grace"),
        (&["--gc-grace", "8days"], "--gc-grace"),
        (&["--gc-grace", "soon"], "--gc-grace"),
        (&["--lease-duration", "1000000000y"], "--lease-duration"),
        (&["--lease-duration", "0s"], "--lease-duration"),
        (&["--lease-duration", "68years"], "--lease-duration"),
        (&["--renew-deadline", "1000000000y"], "--renew-deadline"),
        (&["--renew-deadline", "0s"], "--renew-deadline"),
        (&["--retry-period", "0s"], "--retry-period"),
        (&["--retry-period", "1000000000y"], "--retry-period"),
        (
            &["--lease-duration", "10s", "--renew-deadline", "20s"],
            "--renew-deadline",
        ),
        (
            &["--renew-deadline", "2s", "--retry-period", "5s"],
            "--retry-period",
        ),
        (&["--api-concurrency", "0"], "--api-concurrency"),
        (&["--api-concurrency=-1"], "--api-concurrency"),
        (&["--api-concurrency", "10001"], "--api-concurrency"),
        (
            &["--api-concurrency", "18446744073709551616"],
            "--api-concurrency",
        ),
        (&["--api-concurrency", "many"], "--api-concurrency"),
    ];
    for (flags, named) in cases {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_hereabouts-controller"))
            .args(*flags)
            .args(["--http-addr", "127.0.0.1:0"])
            .env_clear()
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .expect("run controller");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}: refused");
        assert!(
            !stderr.contains("panicked"),
            "{flags:?}: no panic: {stderr}"
        );
        assert!(stderr.contains(named), "{flags:?}: names {named}: {stderr}");
        assert!(
            !stderr.contains("Kubernetes configuration"),
            "{flags:?}: refused before connecting: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{flags:?}: exits at once"
        );
    }
}

// === NAD configurations ====================================================

#[tokio::test]
async fn nads_with_bad_ipam_get_a_warning_naming_the_field_and_nothing_else() {
    let (kit, ns) = setup("bad-nad").await;
    let replica = controller(&ns, &[]);
    replica.wait_ready().await.expect("controller ready");
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(kit.client.clone(), &ns.name);
    let ipam = |extra: Value| -> String {
        let mut ipam = json!({"type": "hereabouts", "range": "100.64.10.0/24"});
        if let (Some(m), Value::Object(e)) = (ipam.as_object_mut(), extra) {
            m.extend(e);
        }
        json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "master": "eth1", "ipam": ipam}).to_string()
    };
    let ranges: Vec<Value> = (0..70)
        .map(|i| json!({"range": format!("100.65.{i}.0/24")}))
        .collect();
    let excludes: Vec<String> = (0..2000)
        .map(|i| format!("100.64.10.{}", i % 250 + 1))
        .collect();
    // (NAD name, spec.config, field, value)
    let cases: Vec<(&str, String, &str, String)> = vec![
        (
            "not-json",
            "{ipam: whereabouts".to_owned(),
            "spec.config",
            String::new(),
        ),
        ("a-list", "[1, 2]".to_owned(), "spec.config", "array".into()),
        (
            "range-33",
            ipam(json!({"range": "100.64.10.0/33"})),
            "ipam.range",
            "100.64.10.0/33".into(),
        ),
        (
            "range-garbage",
            ipam(json!({"range": "blue"})),
            "ipam.range",
            "blue".into(),
        ),
        (
            "range-number",
            ipam(json!({"range": 5})),
            "ipam.range",
            "5".into(),
        ),
        (
            "range-v6-zero",
            ipam(json!({"range": "::/0"})),
            "ipam.range",
            "::/0".into(),
        ),
        (
            "range-host",
            ipam(json!({"range": "100.64.10.1/32"})),
            "ipam.range",
            "100.64.10.1/32".into(),
        ),
        (
            "range-inverted",
            ipam(json!({"range": "100.64.10.9-100.64.10.2/24"})),
            "ipam.range",
            "100.64.10.2".into(),
        ),
        (
            "start-outside",
            ipam(json!({"range_start": "203.0.113.1"})),
            "ipam.range_start",
            "203.0.113.1".into(),
        ),
        (
            "end-garbage",
            ipam(json!({"range_end": "end"})),
            "ipam.range_end",
            "end".into(),
        ),
        (
            "exclude-garbage",
            ipam(json!({"exclude": ["100.64.10.0/99"]})),
            "ipam.exclude[0]",
            "100.64.10.0/99".into(),
        ),
        (
            "exclude-all",
            ipam(json!({"exclude": ["100.64.10.0/24"]})),
            "ipam.exclude",
            "100.64.10.0/24".into(),
        ),
        (
            "hold-sometimes",
            ipam(json!({"hold_released": "sometimes"})),
            "ipam.hold_released",
            "sometimes".into(),
        ),
        (
            "cooldown-forever",
            ipam(json!({"release_cooldown": "1000000000y"})),
            "ipam.release_cooldown",
            "1000000000y".into(),
        ),
        (
            "exclude-2000",
            ipam(json!({"exclude": excludes})),
            "ipam.exclude",
            "2000".into(),
        ),
        (
            "ipranges-70",
            ipam(json!({"ipRanges": ranges})),
            "ipam.ipRanges",
            "70".into(),
        ),
        (
            "ipranges-string",
            ipam(json!({"ipRanges": ["100.65.0.0/24"]})),
            "ipam.ipRanges[0]",
            "100.65.0.0/24".into(),
        ),
        (
            "ipranges-duplicate",
            ipam(json!({"ipRanges": [{"range": "100.64.10.0/24"}]})),
            "ipam.ipRanges[0].range",
            "100.64.10.0/24".into(),
        ),
        (
            "gateway-garbage",
            ipam(json!({"gateway": "gw"})),
            "ipam.gateway",
            "gw".into(),
        ),
        (
            "network-name-long",
            ipam(json!({"network_name": "n".repeat(250)})),
            "ipam.network_name",
            "nnnnnnnn".into(),
        ),
        (
            "network-name-upper",
            ipam(json!({"network_name": "Blue"})),
            "ipam.network_name",
            "Blue".into(),
        ),
        (
            "timeout-huge",
            ipam(json!({"request_timeout": 1e300})),
            "ipam.request_timeout",
            "1e+300".into(),
        ),
        (
            "timeout-years",
            ipam(json!({"request_timeout": "1000000000y"})),
            "ipam.request_timeout",
            "1000000000y".into(),
        ),
        (
            "overlapping-string",
            ipam(json!({"enable_overlapping_ranges": "false"})),
            "ipam.enable_overlapping_ranges",
            "false".into(),
        ),
        (
            "conflist-bad-second",
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "macvlan", "ipam": {"type": "hereabouts", "range": "100.64.10.0/24"}},
            {"type": "bridge", "ipam": {"type": "whereabouts", "range": "100.64.11.0/40"}}]})
            .to_string(),
            "plugins[1].ipam.range",
            "100.64.11.0/40".into(),
        ),
        (
            "plugins-not-a-list",
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": {"type": "macvlan"}}).to_string(),
            "plugins",
            "object".into(),
        ),
    ];
    assert!(cases.len() >= 24);
    for (name, config, _, _) in &cases {
        let nad = NetworkAttachmentDefinition::new(
            name,
            NetworkAttachmentDefinitionSpec {
                config: config.clone(),
            },
        );
        nads.create(&PostParams::default(), &nad)
            .await
            .expect("create NAD");
    }
    // After all of them, a good one: the controller keeps serving.
    let good = NetworkAttachmentDefinition::new(
        "good",
        NetworkAttachmentDefinitionSpec {
            config: json!({"cniVersion": "1.0.0", "name": "good", "type": "macvlan",
                           "ipam": {"type": "hereabouts", "range": "100.64.20.0/24"}})
            .to_string(),
        },
    );
    nads.create(&PostParams::default(), &good)
        .await
        .expect("create good NAD");

    let events: Api<Event> = Api::namespaced(kit.client.clone(), &ns.name);
    let warnings = eventually("a warning on every bad NAD", 60, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let by_nad: BTreeMap<String, String> = list
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| Some((e.involved_object.name?, e.message?)))
            .collect();
        cases
            .iter()
            .all(|(name, ..)| by_nad.contains_key(*name))
            .then_some(by_nad)
    })
    .await
    .expect("warnings");
    for (name, _, field, value) in &cases {
        let message = &warnings[*name];
        assert!(
            message.contains(field),
            "{name}: {message:.300} does not name {field}"
        );
        assert!(
            message.contains(value.as_str()),
            "{name}: {message:.300} does not show {value}"
        );
    }
    assert!(!warnings.contains_key("good"), "no warning on the good NAD");
    let pools = eventually("the good NAD's pool", 30, || async {
        let names = pool_names(&kit.client, &ns.name).await;
        names.contains("100.64.20.0-24").then_some(names)
    })
    .await
    .expect("pool");
    assert_eq!(
        pools,
        BTreeSet::from(["100.64.20.0-24".to_owned()]),
        "no pool for any bad NAD"
    );
    // And a claim is still answered.
    let pod = pods(&kit.client, &ns.name, "after-nads", 1).await;
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut claim = claim_of(
        &ns.name,
        "after-nads",
        &pod[0],
        vec![range("100.64.20.0/24")],
    );
    // The network the good NAD declares (the controller serves a claim
    // only on ranges its network declares).
    claim.spec.network.name = "good".to_owned();
    api.create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    let got = answers(&kit.client, &ns.name, &["after-nads".to_owned()], 30).await;
    assert_eq!(got["after-nads"].0, "True", "{:?}", got["after-nads"]);
    let mut replica = replica;
    assert!(
        replica.process.running(),
        "the controller survives every bad NAD"
    );
}

// === IPPools edited by hand ================================================

fn pool_object(
    name: &str,
    spec_range: &str,
    entries: &[(&str, &str)],
    shard_of: Option<(&str, u32)>,
) -> IPPool {
    let mut labels = BTreeMap::new();
    if let Some((base, index)) = shard_of {
        labels.insert(
            "hereabouts.dev/pool".to_owned(),
            hereabouts_api::label_value(base),
        );
        labels.insert("hereabouts.dev/shard".to_owned(), index.to_string());
    }
    IPPool {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: (!labels.is_empty()).then_some(labels),
            ..Default::default()
        },
        spec: IPPoolSpec {
            range: spec_range.to_owned(),
            allocations: entries
                .iter()
                .map(|(key, pod)| {
                    (
                        (*key).to_owned(),
                        IPAllocation {
                            id: format!("hand-{pod}"),
                            podref: format!("hand/{pod}"),
                            ifname: "net1".to_owned(),
                        },
                    )
                })
                .collect(),
        },
        status: None,
    }
}

#[tokio::test]
async fn hand_edited_pools_neither_stop_the_controller_nor_lose_their_holders() {
    let (kit, ns) = setup("bad-pool").await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    // (name, range the claims ask for, pool objects, addresses the hand
    // edits hold that no claim may get)
    type Case = (&'static str, &'static str, Vec<IPPool>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "keys-whereabouts-reads",
            "100.64.30.0/28",
            vec![pool_object(
                "100.64.30.0-28",
                "100.64.30.0/28",
                &[("1", "a"), ("+2", "b"), ("003", "c"), ("04", "d")],
                None,
            )],
            vec!["100.64.30.1", "100.64.30.2", "100.64.30.3", "100.64.30.4"],
        ),
        (
            "keys-that-are-no-offset",
            "100.64.31.0/28",
            vec![pool_object(
                "100.64.31.0-28",
                "100.64.31.0/28",
                &[
                    ("-1", "a"),
                    ("1e9", "b"),
                    ("340282366920938463463374607431768211456", "c"),
                    ("abc", "d"),
                    (" 5", "e"),
                    ("0x6", "f"),
                    ("", "g"),
                    ("1", "h"),
                ],
                None,
            )],
            vec!["100.64.31.1"],
        ),
        (
            "offsets-outside-the-range",
            "100.64.32.0/28",
            vec![pool_object(
                "100.64.32.0-28",
                "100.64.32.0/28",
                &[
                    ("16", "a"),
                    ("1000", "b"),
                    ("18446744073709551616", "c"),
                    ("0", "d"),
                    ("15", "e"),
                    ("1", "f"),
                ],
                None,
            )],
            vec!["100.64.32.1"],
        ),
        (
            "range-differs-from-name",
            "100.64.33.0/28",
            vec![pool_object(
                "100.64.33.0-28",
                "10.9.9.0/24",
                &[("1", "a"), ("2", "b")],
                None,
            )],
            vec!["100.64.33.1", "100.64.33.2"],
        ),
        (
            "range-is-nonsense",
            "100.64.34.0/28",
            vec![pool_object(
                "100.64.34.0-28",
                "nonsense",
                &[("1", "a")],
                None,
            )],
            vec!["100.64.34.1"],
        ),
        (
            "one-owner-twice",
            "100.64.35.0/28",
            vec![pool_object(
                "100.64.35.0-28",
                "100.64.35.0/28",
                &[("1", "a"), ("2", "a"), ("3", "a")],
                None,
            )],
            vec!["100.64.35.1", "100.64.35.2", "100.64.35.3"],
        ),
        (
            "full-of-hand-edits",
            "100.64.36.0/29",
            vec![pool_object(
                "100.64.36.0-29",
                "100.64.36.0/29",
                &[
                    ("1", "a"),
                    ("2", "b"),
                    ("3", "c"),
                    ("4", "d"),
                    ("5", "e"),
                    ("+6", "f"),
                ],
                None,
            )],
            vec![
                "100.64.36.1",
                "100.64.36.2",
                "100.64.36.3",
                "100.64.36.4",
                "100.64.36.5",
                "100.64.36.6",
            ],
        ),
        (
            "duplicate-across-shards",
            "100.65.0.0/16",
            vec![
                pool_object(
                    "100.65.0.0-16",
                    "100.65.0.0/16",
                    &[("1", "a"), ("2", "b")],
                    Some(("100.65.0.0-16", 0)),
                ),
                pool_object(
                    "100.65.0.0-16-s1",
                    "100.65.0.0/16",
                    &[("1", "c"), ("3", "d"), ("129", "e")],
                    Some(("100.65.0.0-16", 1)),
                ),
                pool_object(
                    "100.65.0.0-16-s99999999999999999999999",
                    "100.65.0.0/16",
                    &[("4", "f")],
                    Some(("100.65.0.0-16", 2)),
                ),
                pool_object(
                    "100.65.0.0-16-sx",
                    "100.65.0.0/16",
                    &[("5", "g")],
                    Some(("100.65.0.0-16", 3)),
                ),
            ],
            vec!["100.65.0.1", "100.65.0.2", "100.65.0.3", "100.65.0.129"],
        ),
    ];
    for (_, _, objects, _) in &cases {
        for pool in objects {
            pools
                .create(&PostParams::default(), pool)
                .await
                .expect("create hand-edited pool");
        }
    }
    // The hand edits name pods that do not exist: keep the collector (which
    // would rightly free them) out of this test.
    let replica = controller(&ns, &["--gc-schedule", "0 0 1 1 *", "--gc-grace", "7days"]);
    replica.wait_ready().await.expect("controller ready");
    // Six claims per case, and one more on a clean pool.
    let per_case = 6;
    let owners = pods(
        &kit.client,
        &ns.name,
        "claimant",
        cases.len() * per_case + 1,
    )
    .await;
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let mut names = Vec::new();
    for (c, (case, cidr, _, _)) in cases.iter().enumerate() {
        for i in 0..per_case {
            let name = format!("{case}-{i}");
            let claim = claim_of(
                &ns.name,
                &name,
                &owners[c * per_case + i],
                vec![range(cidr)],
            );
            api.create(&PostParams::default(), &claim)
                .await
                .expect("claim");
            names.push(name);
        }
    }
    let clean = claim_of(
        &ns.name,
        "clean",
        &owners[cases.len() * per_case],
        vec![range("100.64.40.0/24")],
    );
    api.create(&PostParams::default(), &clean)
        .await
        .expect("claim");
    names.push("clean".to_owned());
    let got = answers(&kit.client, &ns.name, &names, 90).await;
    assert_eq!(
        got["clean"].0, "True",
        "a clean pool is served: {:?}",
        got["clean"]
    );
    let mut given: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (case, _, _, held) in &cases {
        for i in 0..per_case {
            let name = format!("{case}-{i}");
            let (status, reason, message, addresses) = &got[&name];
            if status != "True" {
                // Only a range the hand edits filled may refuse, and then as exhausted.
                assert_eq!(reason, "Exhausted", "{name}: {message}");
                continue;
            }
            for address in addresses {
                let ip: IpAddr = address
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .parse()
                    .expect("ip");
                assert!(
                    !held.contains(&ip.to_string().as_str()),
                    "{name} got {ip}, which the hand-edited pool holds for someone else"
                );
                if let Some(other) = given.insert(ip, name.clone()) {
                    panic!("{ip} given to {other} and {name}");
                }
            }
        }
    }
    let mut replica = replica;
    assert!(
        replica.process.running(),
        "the controller survives hand-edited pools"
    );
}

// === claims written directly ===============================================

#[tokio::test]
async fn claims_with_absurd_specs_are_refused_naming_the_field() {
    let (kit, ns) = setup("bad-claim").await;
    let replica = controller(&ns, &[]);
    replica.wait_ready().await.expect("controller ready");
    let owners = pods(&kit.client, &ns.name, "owner", 20).await;
    let many_excludes: Vec<String> = (0..5000).map(|i| format!("2001:db8:1::{i:x}")).collect();
    let with = |f: &dyn Fn(&mut ClaimRange)| {
        let mut r = range("100.64.50.0/24");
        f(&mut r);
        vec![r]
    };
    let long_network = "n".repeat(253 - "-100.64.50.0-24".len() + 1);
    // (claim name, ranges, network_name, static IPs, reason, field, value)
    type Case = (
        &'static str,
        Vec<ClaimRange>,
        Option<String>,
        Vec<String>,
        &'static str,
        &'static str,
        String,
    );
    let cases: Vec<Case> = vec![
        (
            "no-ranges",
            vec![],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges",
            String::new(),
        ),
        (
            "range-garbage",
            vec![range("x")],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].range",
            "x".into(),
        ),
        (
            "range-empty",
            vec![range("")],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].range",
            "\"\"".into(),
        ),
        (
            "range-prefix-99",
            vec![range("100.64.50.0/99")],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].range",
            "100.64.50.0/99".into(),
        ),
        (
            "range-host",
            vec![range("100.64.50.7/32")],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].range",
            "100.64.50.7/32".into(),
        ),
        (
            "range-v6-zero",
            vec![range("::/0")],
            None,
            vec![],
            "InvalidNetworkName",
            "::/0",
            "::/0".into(),
        ),
        (
            "second-range-bad",
            vec![range("100.64.50.0/24"), range("2001:db8::/300")],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[1].range",
            "2001:db8::/300".into(),
        ),
        (
            "start-garbage",
            with(&|r| r.range_start = Some("start".into())),
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].range_start",
            "start".into(),
        ),
        (
            "end-before-start",
            with(&|r| {
                r.range_start = Some("100.64.50.9".into());
                r.range_end = Some("100.64.50.2".into());
            }),
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].range_end",
            "100.64.50.2".into(),
        ),
        (
            "exclude-garbage",
            with(&|r| r.exclude = vec!["nope".into()]),
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].exclude[0]",
            "nope".into(),
        ),
        (
            "exclude-5000",
            vec![ClaimRange {
                exclude: many_excludes.clone(),
                ..range("2001:db8:1::/64")
            }],
            None,
            vec![],
            "InvalidRange",
            "spec.ranges[0].exclude",
            "5000".into(),
        ),
        (
            "static-garbage",
            vec![range("100.64.50.0/24")],
            None,
            vec!["here".into()],
            "InvalidStaticAddress",
            "spec.staticIPs[0]",
            "here".into(),
        ),
        (
            "static-outside",
            vec![range("100.64.50.0/24")],
            None,
            vec!["203.0.113.9".into()],
            "StaticAddressOutsideRanges",
            "spec.staticIPs[0]",
            "203.0.113.9".into(),
        ),
        (
            "static-network-address",
            vec![range("100.64.50.0/24")],
            None,
            vec!["100.64.50.0".into()],
            "StaticAddressNotAllocatable",
            "100.64.50.0",
            "100.64.50.0".into(),
        ),
        (
            "network-name-over-limit",
            vec![range("100.64.50.0/24")],
            Some(long_network.clone()),
            vec![],
            "InvalidNetworkName",
            "nnnnnnnn",
            "nnnnnnnn".into(),
        ),
        (
            "network-name-upper",
            vec![range("100.64.50.0/24")],
            Some("Blue".into()),
            vec![],
            "InvalidNetworkName",
            "Blue",
            "Blue".into(),
        ),
    ];
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let pools_before = pool_names(&kit.client, &ns.name).await;
    let mut names = Vec::new();
    for (i, (name, ranges, network_name, statics, ..)) in cases.iter().enumerate() {
        let mut claim = claim_of(&ns.name, name, &owners[i], ranges.clone());
        claim.spec.network_name.clone_from(network_name);
        claim.spec.static_ips.clone_from(statics);
        api.create(&PostParams::default(), &claim)
            .await
            .expect("create claim");
        names.push((*name).to_owned());
    }
    // A claim at the name length limit, and a good claim after all of them.
    let long = "c".repeat(253);
    let mut at_limit = claim_of(&ns.name, &long, &owners[18], vec![range("100.64.51.0/24")]);
    at_limit.spec.interface = "n".repeat(15);
    api.create(&PostParams::default(), &at_limit)
        .await
        .expect("claim at the name limit");
    let good = claim_of(&ns.name, "good", &owners[19], vec![range("100.64.51.0/24")]);
    api.create(&PostParams::default(), &good)
        .await
        .expect("good claim");
    names.push(long.clone());
    names.push("good".to_owned());
    let got = answers(&kit.client, &ns.name, &names, 60).await;
    for (name, _, _, _, reason, field, value) in &cases {
        let (status, got_reason, message, addresses) = &got[*name];
        assert_eq!(status, "False", "{name} refused: {message}");
        assert!(addresses.is_empty(), "{name}: no address");
        assert_eq!(got_reason, reason, "{name}: {message}");
        assert!(
            message.contains(field),
            "{name}: {message:.300} does not name {field}"
        );
        assert!(
            message.contains(value.as_str()),
            "{name}: {message:.300} does not show {value}"
        );
        assert!(
            message.len() < 2000,
            "{name}: a readable condition ({} bytes)",
            message.len()
        );
    }
    assert_eq!(
        got[&long].0, "True",
        "a claim named at the length limit is served: {:?}",
        got[&long]
    );
    assert_eq!(got["good"].0, "True", "{:?}", got["good"]);
    let pools_after = pool_names(&kit.client, &ns.name).await;
    let made: BTreeSet<_> = pools_after.difference(&pools_before).cloned().collect();
    assert_eq!(
        made,
        BTreeSet::from(["100.64.51.0-24".to_owned()]),
        "no pool was made for a refused claim"
    );
    let mut replica = replica;
    assert!(
        replica.process.running(),
        "the controller survives every bad claim"
    );
}

/// Failed at 72e7643: `requests()` took the first static IP of each range
/// and silently dropped the rest (the plugin refuses a second one in a
/// range, `RequestError::TwoInOneRange`), and nothing bounded `spec.ranges`,
/// so one claim with 100 ranges made 100 pools.
#[tokio::test]
async fn claims_with_huge_lists_are_refused_naming_the_field() {
    let (kit, ns) = setup("huge-claim").await;
    let replica = controller(&ns, &[]);
    replica.wait_ready().await.expect("controller ready");
    let owners = pods(&kit.client, &ns.name, "owner", 3).await;
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    let statics: Vec<String> = (0..10_000)
        .map(|i| format!("100.66.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let mut ten_thousand = claim_of(
        &ns.name,
        "ten-thousand-statics",
        &owners[0],
        vec![range("100.66.0.0/16")],
    );
    ten_thousand.spec.static_ips = statics;
    let two = {
        let mut c = claim_of(
            &ns.name,
            "two-statics-one-range",
            &owners[1],
            vec![range("100.67.0.0/24")],
        );
        c.spec.static_ips = vec!["100.67.0.5".into(), "100.67.0.6".into()];
        c
    };
    let hundred = claim_of(
        &ns.name,
        "hundred-ranges",
        &owners[2],
        (0..100)
            .map(|i| range(&format!("100.68.{i}.0/24")))
            .collect(),
    );
    for c in [&ten_thousand, &two, &hundred] {
        api.create(&PostParams::default(), c)
            .await
            .expect("create claim");
    }
    let names: Vec<String> = [
        "ten-thousand-statics",
        "two-statics-one-range",
        "hundred-ranges",
    ]
    .map(str::to_owned)
    .to_vec();
    let got = answers(&kit.client, &ns.name, &names, 60).await;
    for (name, field) in [
        ("ten-thousand-statics", "spec.staticIPs"),
        ("two-statics-one-range", "spec.staticIPs[1]"),
        ("hundred-ranges", "spec.ranges"),
    ] {
        let (status, _, message, _) = &got[name];
        assert_eq!(status, "False", "{name} refused: {message}");
        assert!(
            message.contains(field),
            "{name}: {message:.300} does not name {field}"
        );
    }
    assert!(
        pool_names(&kit.client, &ns.name).await.len() < 100,
        "no hundred pools for one claim"
    );
}

/// Failed at 72e7643, two hand edits of shard objects:
/// - an object named `<pool>-s0` (or `-s01` beside `-s1`) is read as the
///   same shard index as `<pool>` itself (`Actor::load` parses the suffix
///   with `parse()` and overwrites `shards[0]`): every write of shard 0
///   then carries the other object's resourceVersion and conflicts, 20
///   attempts per batch, for ever: the pool answers no claim again;
/// - a shard named with an index near `u128::MAX / 128` holding a stray
///   entry: releasing it computes `index * SHARD_SPAN` in
///   `Actor::shard_object`, which overflows (a panic in a debug build; a
///   wrapped, wrong block in release).
#[tokio::test]
async fn hand_edited_shard_names_neither_wedge_nor_crash_a_pool() {
    let (kit, ns) = setup("bad-shard").await;
    let pools: Api<IPPool> = Api::namespaced(kit.client.clone(), &ns.name);
    let gone = format!("{}/gone", ns.name);
    let objects = [
        pool_object(
            "100.64.60.0-24",
            "100.64.60.0/24",
            &[("1", "a")],
            Some(("100.64.60.0-24", 0)),
        ),
        pool_object(
            "100.64.60.0-24-s0",
            "100.64.60.0/24",
            &[("2", "b")],
            Some(("100.64.60.0-24", 0)),
        ),
        pool_object(
            "100.64.61.0-24",
            "100.64.61.0/24",
            &[],
            Some(("100.64.61.0-24", 0)),
        ),
        IPPool {
            spec: IPPoolSpec {
                range: "100.64.61.0/24".to_owned(),
                allocations: BTreeMap::from([(
                    "5".to_owned(),
                    IPAllocation {
                        id: "gone".to_owned(),
                        podref: gone.clone(),
                        ifname: "net1".to_owned(),
                    },
                )]),
            },
            ..pool_object(
                "100.64.61.0-24-s3000000000000000000000000000000000000",
                "100.64.61.0/24",
                &[],
                Some(("100.64.61.0-24", 7)),
            )
        },
    ];
    for pool in &objects {
        pools
            .create(&PostParams::default(), pool)
            .await
            .expect("create hand-edited pool");
    }
    // The collector releases the stray entry of the gone pod at once.
    let replica = controller(&ns, &["--gc-grace", "0s", "--gc-schedule", "* * * * * *"]);
    replica.wait_ready().await.expect("controller ready");
    let owners = pods(&kit.client, &ns.name, "shard", 2).await;
    let api: Api<IPClaim> = Api::namespaced(kit.client.clone(), &ns.name);
    for (i, cidr) in ["100.64.60.0/24", "100.64.61.0/24"].iter().enumerate() {
        let claim = claim_of(
            &ns.name,
            &format!("shard-{i}"),
            &owners[i],
            vec![range(cidr)],
        );
        api.create(&PostParams::default(), &claim)
            .await
            .expect("claim");
    }
    let got = answers(
        &kit.client,
        &ns.name,
        &["shard-0".to_owned(), "shard-1".to_owned()],
        30,
    )
    .await;
    assert_eq!(
        got["shard-0"].0, "True",
        "a pool beside a `-s0` object is served: {:?}",
        got["shard-0"]
    );
    let stray = "100.64.61.0-24-s3000000000000000000000000000000000000";
    eventually("the gone pod's stray entry released", 30, || async {
        let p = pools.get(stray).await.ok()?;
        (!p.spec.allocations.contains_key("5")).then_some(())
    })
    .await
    .expect("released");
    let log = hereabouts_kit::local_dir()
        .join("logs")
        .join(format!("{}-a.log", ns.name));
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "the controller panicked: {log:.2000}"
    );
}
