//! The node agent (`hereabouts-install` serving the plugin on a unix
//! socket) against the real API server with a controller running: every
//! verb through the agent, the plugin's direct path when the socket is
//! absent or refuses, an agent killed and restarted in the middle of a
//! burst of ADDs, bad requests on the socket, and pods attached through the
//! real Multus and macvlan with the agent answering.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hereabouts_api::IPClaim;
use hereabouts_kit::Process;
use hereabouts_node::cni::watch::ClaimWatch;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

mod common;
use common::agent::{Agent, NODE, Run, env, environment, plugin, pod, run_through, setup};

fn code_of(run: &Run) -> u64 {
    assert!(!run.success, "expected a failure, got {}", run.stdout);
    run.stdout["code"].as_u64().expect("code")
}

/// The environment a runtime gives one attachment, the agent's socket too.
fn conf(version: &str, range: &str, kubeconfig: &Path) -> Value {
    json!({"cniVersion": version, "name": "agentnet", "type": "macvlan", "master": "eth1",
           "ipam": {"type": "hereabouts", "range": range, "kubernetes": {"kubeconfig": kubeconfig}}})
}

#[tokio::test]
async fn every_verb_through_the_agent() {
    let (client, ns, _controller, kubeconfig, socket) = setup("agent-verbs").await;
    // The agent reads its kubeconfig once, at start; the configurations
    // name it, then it is made unreadable: the plugin's direct path cannot
    // use it any more, so every success below is the agent's.
    let own = socket.with_file_name("agent.kubeconfig");
    std::fs::copy(&kubeconfig, &own).expect("copy kubeconfig");
    let agent = Agent::start(&ns, "agent", &socket, &own);
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "only root reaches the socket");
    std::fs::write(&own, "not: a kubeconfig\n").expect("spoil the kubeconfig");

    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let name = format!("p{i}");
        let uid = pod(&client, &ns.name, &name).await;
        let container = format!("sandbox-{i}");
        let mut stdin = conf(version, "198.51.100.0/24", &own);
        stdin["ipam"]["gateway"] = json!("198.51.100.254");
        let run_as = |command: &str, stdin: &Value| {
            plugin(
                &env(command, &ns.name, &name, &uid, &container, &socket),
                stdin,
            )
        };
        let add = run_as("ADD", &stdin);
        assert!(add.success, "ADD {version}: {}", add.stdout);
        assert_eq!(add.stdout["cniVersion"], *version);
        assert_eq!(
            add.stdout["ips"][0]["address"],
            format!("198.51.100.{}/24", i + 1),
            "lowest free first"
        );
        assert_eq!(add.stdout["ips"][0]["gateway"], "198.51.100.254");
        let again = run_as("ADD", &stdin);
        assert_eq!(again.stdout["ips"], add.stdout["ips"], "a repeated ADD");
        if *version != "0.3.1" {
            let mut check = stdin.clone();
            check["prevResult"] = add.stdout.clone();
            let run = run_as("CHECK", &check);
            assert!(run.success, "CHECK {version}: {}", run.stdout);
            check["prevResult"]["ips"][0]["address"] = json!("198.51.100.200/24");
            assert_eq!(code_of(&run_as("CHECK", &check)), 103);
        }
        if *version == "1.1.0" {
            let status = plugin(
                &[
                    ("CNI_COMMAND", "STATUS".to_owned()),
                    ("NODENAME", NODE.to_owned()),
                    ("HEREABOUTS_AGENT_SOCKET", socket.display().to_string()),
                ],
                &stdin,
            );
            assert!(status.success, "STATUS: {}", status.stdout);
        }
        assert!(run_as("DEL", &stdin).success, "DEL {version}");
        assert!(run_as("DEL", &stdin).success, "DEL is idempotent");
    }
    // Bad input through the agent gets the direct path's codes.
    let uid = pod(&client, &ns.name, "bad").await;
    let bad = |stdin: &Value| plugin(&env("ADD", &ns.name, "bad", &uid, "c-bad", &socket), stdin);
    let mut wrong = conf("1.0.0", "198.51.100.0/33", &own);
    let run = bad(&wrong);
    assert_eq!(code_of(&run), 7);
    assert!(
        run.stdout["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("ipam.range"),
        "{}",
        run.stdout
    );
    wrong = conf("1.0.0", "198.51.100.0/24", &own);
    wrong["runtimeConfig"] = json!({"ips": ["203.0.113.9/24"]});
    assert_eq!(
        code_of(&bad(&wrong)),
        7,
        "a static address outside the range"
    );

    // GC through the agent: one attachment kept, one released.
    let stdin = conf("1.1.0", "203.0.113.0/28", &own);
    for name in ["keep", "drop"] {
        let uid = pod(&client, &ns.name, name).await;
        let run = plugin(
            &env("ADD", &ns.name, name, &uid, &format!("c-{name}"), &socket),
            &stdin,
        );
        assert!(run.success, "{}", run.stdout);
    }
    let mut gc = stdin.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c-keep", "ifname": "net1"}]);
    let run = plugin(
        &[
            ("CNI_COMMAND", "GC".to_owned()),
            ("NODENAME", NODE.to_owned()),
            ("HEREABOUTS_AGENT_SOCKET", socket.display().to_string()),
        ],
        &gc,
    );
    assert!(run.success, "GC: {}", run.stdout);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let left = hereabouts_kit::eventually("GC deleted the stale claim", 10, || async {
        let items = claims.list(&ListParams::default()).await.ok()?.items;
        (items.len() == 1).then_some(items)
    })
    .await
    .expect("one claim left");
    assert_eq!(left[0].spec.pod.name, "keep");

    // The same configuration without the agent: the direct path, whose
    // kubeconfig is unreadable, says so (code 7). Proof that the agent
    // answered everything above.
    drop(agent);
    let uid = pod(&client, &ns.name, "direct").await;
    let run = plugin(
        &env("ADD", &ns.name, "direct", &uid, "c-direct", &socket),
        &conf("1.0.0", "198.51.100.0/24", &own),
    );
    assert_eq!(code_of(&run), 7, "{}", run.stdout);
}

#[tokio::test]
async fn the_direct_path_when_the_socket_is_absent_refuses_or_serves_another_node() {
    let (client, ns, _controller, kubeconfig, socket) = setup("agent-fallback").await;
    let stdin = conf("1.0.0", "198.51.100.0/24", &kubeconfig);
    let add = |pod: &str, uid: &str, socket: &Path| {
        plugin(
            &env("ADD", &ns.name, pod, uid, &format!("c-{pod}"), socket),
            &stdin,
        )
    };
    // No socket at all.
    let uid = pod(&client, &ns.name, "absent").await;
    let run = add("absent", &uid, &socket);
    assert!(run.success, "no socket: {}", run.stdout);
    // A socket file nobody listens on (an agent that crashed): refused.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let uid = pod(&client, &ns.name, "refused").await;
    let run = add("refused", &uid, &socket);
    assert!(run.success, "refused: {}", run.stdout);
    // An agent of another node (one host running several simulated
    // nodes): it never acts for this node's pods; the plugin works alone.
    let other = socket.with_file_name("other.sock");
    let mut agent = Agent::start(&ns, "other-node", &other, &kubeconfig);
    let answer = agent.raw(
        json!({"version": 1, "env": {"command": "ADD", "node_name": "node-b"}, "stdin": "{}", "flat_file": null})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(answer["kind"], "not_served", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("node-b"),
        "{answer}"
    );
    let uid = pod(&client, &ns.name, "elsewhere").await;
    let mut env_b = env("ADD", &ns.name, "elsewhere", &uid, "c-elsewhere", &other);
    env_b[6].1 = "node-b".to_owned();
    let run = plugin(&env_b, &stdin);
    // node-b's claim of a pod bound to node-a: the controller refuses it
    // (PodMismatch, code 11), which shows the request was not the agent's
    // (the agent would have written node-a).
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let filed = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .find(|c| c.spec.pod.name == "elsewhere")
        .expect("the direct path filed a claim");
    assert_eq!(filed.spec.node, "node-b", "{}", run.stdout);
    // Every address handed out is distinct and in the pool.
    let ips: BTreeSet<String> = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items
        .iter()
        .flat_map(|c| c.status.iter().flat_map(|s| s.addresses.clone()))
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    agent.process.kill();
}

#[tokio::test]
async fn an_agent_restart_in_a_burst_of_adds() {
    let (client, ns, _controller, kubeconfig, socket) = setup("agent-restart").await;
    const PODS: usize = 40;
    let mut uids = Vec::new();
    for i in 0..PODS {
        uids.push(pod(&client, &ns.name, &format!("b{i}")).await);
    }
    let stdin = conf("1.0.0", "100.64.0.0/24", &kubeconfig);
    let mut agent = Agent::start(&ns, "agent-1", &socket, &kubeconfig);
    let burst = |uids: &[String]| {
        let handles: Vec<_> = uids
            .iter()
            .enumerate()
            .map(|(i, uid)| {
                let env = env(
                    "ADD",
                    &ns.name,
                    &format!("b{i}"),
                    uid,
                    &format!("c{i}"),
                    &socket,
                );
                let stdin = stdin.clone();
                std::thread::spawn(move || plugin(&env, &stdin))
            })
            .collect();
        handles
    };
    let handles = burst(&uids);
    // SIGKILL mid-burst, then a new agent on the same path.
    std::thread::sleep(Duration::from_millis(150));
    let in_flight = handles.iter().filter(|h| !h.is_finished()).count();
    agent.process.kill();
    eprintln!("{in_flight} of {PODS} ADDs in flight when the agent was killed");
    assert!(in_flight > 0, "the kill must land mid-burst");
    std::thread::sleep(Duration::from_millis(300));
    let _agent = Agent::start(&ns, "agent-2", &socket, &kubeconfig);
    let mut first: BTreeMap<usize, String> = BTreeMap::new();
    let mut retried = 0;
    for (i, handle) in handles.into_iter().enumerate() {
        let run = handle.join().expect("plugin thread");
        if run.success {
            first.insert(
                i,
                run.stdout["ips"][0]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        } else {
            assert_eq!(code_of(&run), 11, "only 'try again later': {}", run.stdout);
            retried += 1;
        }
    }
    eprintln!("burst: {} answered, {retried} asked to retry", first.len());
    // The runtime retries; every pod gets an address, a repeated ADD the
    // same one (through the new agent).
    let again: Vec<Run> = burst(&uids)
        .into_iter()
        .map(|h| h.join().expect("plugin thread"))
        .collect();
    let mut addresses = BTreeSet::new();
    for (i, run) in again.iter().enumerate() {
        assert!(run.success, "b{i}: {}", run.stdout);
        let address = run.stdout["ips"][0]["address"]
            .as_str()
            .expect("address")
            .to_owned();
        if let Some(before) = first.get(&i) {
            assert_eq!(&address, before, "b{i}: a repeated ADD, the same address");
        }
        assert!(
            addresses.insert(address.clone()),
            "{address} handed out twice"
        );
    }
    assert_eq!(addresses.len(), PODS);
    // The pool holds each pod's address once, for that pod.
    let held: BTreeSet<String> = common::pool_holders(&client, &ns.name)
        .await
        .into_iter()
        .collect();
    assert_eq!(held.len(), PODS, "{held:?}");
    // DEL of everything through the agent leaves no claim.
    for (i, uid) in uids.iter().enumerate() {
        let env = env(
            "DEL",
            &ns.name,
            &format!("b{i}"),
            uid,
            &format!("c{i}"),
            &socket,
        );
        assert!(plugin(&env, &stdin).success);
    }
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    hereabouts_kit::eventually("claims deleted", 10, || async {
        claims
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await
    .expect("DEL removed every claim");
}

/// DEL through the agent deletes what the agent's watch last saw of the
/// claim, with no read first. A view gone stale (the claim re-pointed by a
/// newer sandbox's ADD since) must not let the old sandbox's DEL take the
/// newer one's claim or address; a fresh view deletes at once.
#[tokio::test]
async fn a_del_through_a_stale_agent_view_leaves_a_newer_sandboxs_claim() {
    let (client, ns, _controller, kubeconfig, socket) = setup("agent-stale").await;
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf("1.0.0", "203.0.113.0/28", &kubeconfig);
    let add =
        |container: &str| plugin(&env("ADD", &ns.name, "p", &uid, container, &socket), &stdin);
    let first = add("sandbox-old");
    assert!(first.success, "{}", first.stdout);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let only_claim = || async {
        let mut items = claims
            .list(&ListParams::default())
            .await
            .expect("claims")
            .items;
        assert!(items.len() <= 1, "one claim per attachment: {items:?}");
        items.pop()
    };
    // A view of the claim as the old sandbox's, taken now and never updated.
    let stale = Arc::new(ClaimWatch::default());
    stale.observe(watcher::Event::Apply(
        only_claim().await.expect("the claim"),
    ));
    let second = add("sandbox-new");
    assert!(second.success, "{}", second.stdout);
    assert_eq!(
        second.stdout["ips"], first.stdout["ips"],
        "the pod keeps its address"
    );

    let run_with = |command: &str, container: &str, view: &Arc<ClaimWatch>| {
        run_through(
            client.clone(),
            ns.name.clone(),
            view.clone(),
            stdin.to_string(),
            environment(command, &ns.name, &uid, container),
        )
    };
    let del = run_with("DEL", "sandbox-old", &stale).await;
    assert!(del.success, "{:?}", del.stdout);
    let kept = only_claim()
        .await
        .expect("the newer sandbox's claim survives");
    assert_eq!(kept.spec.container_id, "sandbox-new");
    let address = first.stdout["ips"][0]["address"].as_str().expect("address");
    let holders = common::pool_holders(&client, &ns.name).await;
    assert_eq!(
        holders,
        vec![format!("{}/p", ns.name)],
        "{address} is still the pod's in the pool"
    );

    // A view that is current: the DEL deletes exactly that version.
    let fresh = Arc::new(ClaimWatch::default());
    fresh.observe(watcher::Event::Apply(kept));
    let del = run_with("DEL", "sandbox-new", &fresh).await;
    assert!(del.success, "{:?}", del.stdout);
    assert!(
        only_claim().await.is_none(),
        "DEL of the current sandbox deletes the claim"
    );
}

/// A connection closed under a request (by the API server, or a load
/// balancer before it) loses the answer of a claim create that landed: the
/// agent sends the create again, meets its own claim, and the ADD succeeds
/// with that one claim and its one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_create_whose_answer_is_lost_is_sent_again() {
    use common::shaping::{Down, at_once, forwarder, kubectl_proxy, plain_kubeconfig};
    let (client, ns, _controller, _kubeconfig, socket) = setup("agent-resend").await;
    let (_proxy, upstream) = kubectl_proxy().await;
    // The first create's answer is thrown away for half a second (it has
    // long landed by then), then its connection is closed.
    let cut: Arc<std::sync::Mutex<(Option<std::time::Instant>, bool)>> = Arc::default();
    let state = cut.clone();
    let port = forwarder(
        upstream,
        |_, _, chunk| at_once(chunk),
        move |_, line| {
            if !(line.starts_with("POST ") && line.contains("/ipclaims")) {
                return Down::Pass;
            }
            let mut state = state.lock().expect("state");
            match *state {
                (_, true) => Down::Pass,
                (None, false) => {
                    state.0 = Some(std::time::Instant::now());
                    Down::Drop
                }
                (Some(at), false) if at.elapsed() < Duration::from_millis(500) => Down::Drop,
                (Some(_), false) => {
                    state.1 = true;
                    Down::Close
                }
            }
        },
    )
    .await;
    let kubeconfig = plain_kubeconfig(&format!("{}-resend", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let stdin = conf("1.0.0", "203.0.113.16/28", &kubeconfig);
    let run = plugin(&env("ADD", &ns.name, "p", &uid, "sandbox", &socket), &stdin);
    assert!(
        cut.lock().expect("state").1,
        "the forwarder closed the first create's connection"
    );
    assert!(run.success, "the ADD succeeds: {}", run.stdout);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let items = claims
        .list(&ListParams::default())
        .await
        .expect("claims")
        .items;
    assert_eq!(items.len(), 1, "one claim for the attachment: {items:?}");
    let address = run.stdout["ips"][0]["address"].as_str().expect("address");
    let granted = &items[0].status.as_ref().expect("answered").ips;
    assert_eq!(
        granted
            .iter()
            .map(|a| a.address.as_str())
            .collect::<Vec<_>>(),
        vec![address],
        "the ADD answers the claim's address"
    );
    assert_eq!(
        common::pool_holders(&client, &ns.name).await,
        vec![format!("{}/p", ns.name)],
        "{address} is the pod's, once"
    );
}

/// An API server that takes a claim create and never answers it (a hung
/// proxy before it, say) does not hold the ADD for ever: the agent answers
/// "try again later" within the attachment's `request_timeout` and a
/// little more, before the plugin stops waiting for it, and lives on; the
/// runtime's DEL then leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_whose_create_is_never_answered_gives_up_in_time() {
    use common::shaping::{Down, at_once, forwarder, kubectl_proxy, plain_kubeconfig};
    let (client, ns, _controller, _kubeconfig, socket) = setup("agent-hung").await;
    let (_proxy, upstream) = kubectl_proxy().await;
    let port = forwarder(
        upstream,
        |_, _, chunk| at_once(chunk),
        |_, line| {
            if line.starts_with("POST ") && line.contains("/ipclaims") {
                Down::Drop
            } else {
                Down::Pass
            }
        },
    )
    .await;
    let kubeconfig = plain_kubeconfig(&format!("{}-hung", ns.name), port, &ns.name);
    let _agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let uid = pod(&client, &ns.name, "p").await;
    let mut stdin = conf("1.0.0", "203.0.113.32/28", &kubeconfig);
    stdin["ipam"]["request_timeout"] = json!("2s");
    let started = std::time::Instant::now();
    let add = plugin(&env("ADD", &ns.name, "p", &uid, "sandbox", &socket), &stdin);
    let took = started.elapsed();
    assert_eq!(code_of(&add), 11, "try again later: {}", add.stdout);
    let message = add.stdout["msg"].as_str().unwrap_or_default();
    assert!(
        message.contains("did not answer within 7s"),
        "the agent's own answer, not the plugin's fallback: {}",
        add.stdout
    );
    assert!(
        took < Duration::from_secs(11),
        "answered within request_timeout and the agent's overrun: {took:?}"
    );
    let del = plugin(&env("DEL", &ns.name, "p", &uid, "sandbox", &socket), &stdin);
    assert!(del.success, "DEL: {}", del.stdout);
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    let left = || async {
        let claims = claims.list(&ListParams::default()).await.ok()?.items;
        let held = common::pool_holders(&client, &ns.name).await;
        Some((claims, held))
    };
    let gone = hereabouts_kit::eventually("the claim and its address gone", 20, || async {
        let (claims, held) = left().await?;
        (claims.is_empty() && held.is_empty()).then_some(())
    })
    .await;
    assert!(gone.is_ok(), "nothing left behind: {:?}", left().await);
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_the_agent_lives_on() {
    let (client, ns, _controller, kubeconfig, socket) = setup("agent-bad").await;
    let mut agent = Agent::start(&ns, "agent", &socket, &kubeconfig);
    let request = |env: Value, stdin: &str| {
        json!({"version": 1, "env": env, "stdin": stdin, "flat_file": null}).to_string()
    };
    let good_stdin = conf("1.0.0", "198.51.100.0/24", &kubeconfig).to_string();
    // (bytes, expected code, what the message names)
    let cases: Vec<(Vec<u8>, u64, &str)> = vec![
        (b"\x00\xffgarbage".to_vec(), 6, "agent request"),
        (b"".to_vec(), 6, "agent request"),
        (br#"{"version": 1, "env": {}}"#.to_vec(), 6, "stdin"),
        (br#"{"version": 1, "env": {"frob": 1}, "stdin": ""}"#.to_vec(), 6, "frob"),
        (
            request(json!({"command": "ADD", "node_name": NODE}), "{not json").into_bytes(),
            6,
            "stdin",
        ),
        (
            request(json!({"command": "FROB", "node_name": NODE}), &good_stdin).into_bytes(),
            4,
            "CNI_COMMAND",
        ),
        (
            request(
                json!({"command": "ADD", "node_name": NODE, "container_id": "c1", "ifname": "much-too-long-interface"}),
                &good_stdin,
            )
            .into_bytes(),
            4,
            "CNI_IFNAME",
        ),
        (
            request(
                json!({"command": "ADD", "node_name": NODE, "container_id": "c1", "ifname": "net1", "args": "K8S_POD_NAMESPACE=Bad_NS;K8S_POD_NAME=x"}),
                &good_stdin,
            )
            .into_bytes(),
            4,
            "K8S_POD_NAMESPACE",
        ),
        (
            json!({"version": 1, "env": {"command": "ADD", "node_name": NODE}, "stdin": good_stdin, "flat_file": {"path": "/x", "value": 3}})
                .to_string()
                .into_bytes(),
            7,
            "flat_file",
        ),
        (vec![b' '; (4 << 20) + 10], 7, "larger than"),
    ];
    for (body, code, names) in &cases {
        let answer = agent.raw(body);
        assert_eq!(answer["kind"], "answer", "{answer}");
        assert_eq!(answer["success"], false, "{answer}");
        assert_eq!(answer["stdout"]["code"], *code, "{answer}");
        let msg = answer["stdout"]["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(names), "{msg:?} should name {names}");
    }
    // Another protocol version: left to the plugin.
    let answer = agent.raw(br#"{"version": 2, "whatever": true}"#);
    assert_eq!(answer["kind"], "not_served", "{answer}");
    // A connection that sends half a request and goes away.
    {
        let mut stream = UnixStream::connect(&socket).expect("connect");
        stream
            .write_all(b"{\"version\": 1, \"env\"")
            .expect("write");
    }
    assert!(
        agent.process.running(),
        "the agent survived every bad request"
    );
    // And still serves a good one.
    let uid = pod(&client, &ns.name, "after").await;
    let run = plugin(
        &env("ADD", &ns.name, "after", &uid, "c-after", &socket),
        &conf("1.0.0", "198.51.100.0/24", &kubeconfig),
    );
    assert!(run.success, "{}", run.stdout);
    assert!(agent.process.running());
}

#[tokio::test]
async fn pods_through_multus_macvlan_and_the_agent() {
    use hereabouts_api::{NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec};
    let (client, ns, _controller, kubeconfig, socket) = setup("agent-multus").await;
    hereabouts_kit::install_plugin(Path::new(env!("CARGO_BIN_EXE_hereabouts")), "hereabouts")
        .expect("plugin in the CNI bin dir");
    let node = ns.node(&hereabouts_kit::unique("ag")).await.expect("node");
    // As in every_verb_through_the_agent: the NAD names a kubeconfig only
    // the agent could still use, so each ADD that succeeds was the agent's.
    let own = socket.with_file_name("agent.kubeconfig");
    std::fs::copy(&kubeconfig, &own).expect("copy kubeconfig");
    let args: Vec<String> = [
        "--agent-only",
        "--agent-socket",
        &socket.display().to_string(),
        "--kubeconfig",
        &own.display().to_string(),
        "--namespace",
        &ns.name,
        "--node-name",
        &node,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let agent = Agent {
        process: Process::spawn(
            &format!("{}-agent", ns.name),
            Path::new(env!("CARGO_BIN_EXE_hereabouts-install")),
            &args,
            &[],
        )
        .expect("agent"),
        socket: socket.clone(),
    };
    agent.wait_listening();
    std::fs::write(&own, "not: a kubeconfig\n").expect("spoil the kubeconfig");
    let config = json!({"cniVersion": "1.0.0", "name": "agentlan", "type": "macvlan", "master": "eth1",
        "mode": "bridge", "ipam": {"type": "hereabouts", "range": "198.51.100.0/24",
        "agent_socket": socket, "kubernetes": {"kubeconfig": own}}});
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), &ns.name);
    nads.create(
        &PostParams::default(),
        &NetworkAttachmentDefinition::new(
            "agentlan",
            NetworkAttachmentDefinitionSpec {
                config: config.to_string(),
            },
        ),
    )
    .await
    .expect("NAD");
    let net = format!("{}/agentlan", ns.name);
    for pod in ["a", "b", "c"] {
        ns.pod(pod, &node, &net).await.expect("ADD through Multus");
    }
    let mut seen = BTreeSet::new();
    for pod in ["a", "b", "c"] {
        let ips = ns.addresses(pod, "net1").await.expect("addresses");
        assert_eq!(ips.len(), 1, "{pod}: {ips:?}");
        assert!(seen.insert(ips[0].clone()), "{} twice", ips[0]);
    }
    let b = ns.addresses("b", "net1").await.expect("b")[0].clone();
    let b = b.split('/').next().unwrap_or_default().to_owned();
    assert!(
        ns.exec("a", &["ping", "-4", "-c", "1", "-W", "2", &b])
            .await
            .is_ok(),
        "a reaches b over the agent's addresses"
    );
    ns.delete_pod("a").await.expect("DEL through Multus");
    let claims: Api<IPClaim> = Api::namespaced(client.clone(), &ns.name);
    hereabouts_kit::eventually("a's claim deleted", 10, || async {
        let items = claims.list(&ListParams::default()).await.ok()?.items;
        (items.len() == 2 && items.iter().all(|c| c.spec.pod.name != "a")).then_some(())
    })
    .await
    .expect("DEL through the agent removed a's claim");
    // Every claim the agent filed names its node.
    for claim in claims.list(&ListParams::default()).await.expect("claims") {
        assert_eq!(claim.spec.node, node);
    }
    drop(agent);
}
