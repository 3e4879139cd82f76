//! The plugin's verbs. ADD creates (or reuses) the attachment's IPClaim and
//! waits on a watch of that one object for the controller's answer; DEL
//! deletes it; CHECK compares it and the pool with prevResult; GC deletes
//! this node's claims the runtime no longer knows; STATUS asks whether an
//! allocator holds the lease and the pools have room. The plugin never
//! writes a pool and takes no lease.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ObjectMeta;
use kube::{Client, Config, ResourceExt};
use serde_json::Value;

use hereabouts_api::{
    ANSWER_BY_ANNOTATION, FENCED_BY_DEL_ANNOTATION, NETWORK_LABEL, NODE_LABEL, claim_name,
    label_value,
};
use hereabouts_api::{
    ClaimRange, ClaimedAddress, IPClaim, IPClaimSpec, IPPool, NetworkRef, PodRef, Refusal,
};
use hereabouts_core::{IpamConfig, RangeRequest};

use super::env::{Command, Invocation};
use super::error::{CniError, code};
use super::result::{self, ResultIp};
use super::watch::{ClaimWatch, REREAD, Registration, Seen};

/// Where the installer puts the plugin's credentials (its node name:
/// [`hereabouts_plugin::env::NODENAME_FILE`]).
pub const DEFAULT_KUBECONFIG: &str = "/etc/cni/net.d/hereabouts.d/hereabouts.kubeconfig";
/// How long ADD waits for the allocator unless `request_timeout` says.
pub const DEFAULT_TIMEOUT: Duration = hereabouts_plugin::client::DEFAULT_REQUEST_TIMEOUT;

/// How the verbs reach the API server: each plugin process with a client of
/// its own (the direct path), or the node agent's shared client and claim
/// watch, with the flat file the plugin read on the host.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    Direct,
    Agent {
        client: &'a Client,
        /// Where the pools (and the controller's Lease) live.
        namespace: &'a str,
        claims: &'a Arc<ClaimWatch>,
        flat_file: Option<&'a (PathBuf, Value)>,
    },
}

impl std::fmt::Debug for Backend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Direct => f.write_str("Direct"),
            Backend::Agent { namespace, .. } => f
                .debug_struct("Agent")
                .field("namespace", namespace)
                .finish_non_exhaustive(),
        }
    }
}

/// The validated configuration plus what hereabouts adds to it.
struct Plan {
    config: IpamConfig,
    /// The `ipam` object with the flat file merged under it.
    raw: serde_json::Map<String, Value>,
    timeout: Duration,
    kubeconfig: Option<PathBuf>,
}

/// The kubeconfig a configuration asks the plugin to use (the agent serves
/// only its own).
pub fn kubeconfig_of(
    inv: &Invocation,
    flat_file: Option<&(PathBuf, Value)>,
) -> Result<Option<PathBuf>, CniError> {
    let backend_flat = flat_file.cloned();
    plan_with(inv, Some(backend_flat)).map(|p| p.kubeconfig)
}

fn plan(inv: &Invocation, backend: Backend<'_>) -> Result<Plan, CniError> {
    match backend {
        Backend::Direct => plan_with(inv, None),
        Backend::Agent { flat_file, .. } => plan_with(inv, Some(flat_file.cloned())),
    }
}

/// `given`: the flat file as the plugin read it on the host (the agent's
/// path); `None`: read it here.
fn plan_with(inv: &Invocation, given: Option<Option<(PathBuf, Value)>>) -> Result<Plan, CniError> {
    // DEL never waits, so its `request_timeout` is not read: a bad one
    // must not keep a pod's teardown from releasing its addresses.
    let mut conf = std::borrow::Cow::Borrowed(&inv.conf);
    let mut flat = match given {
        Some(given) => given,
        None => hereabouts_core::read_flat_file(&conf.flat_file_paths())?,
    };
    if inv.command == Command::Del {
        conf.to_mut().ipam.remove("request_timeout");
        if let Some((_, Value::Object(values))) = &mut flat {
            values.remove("request_timeout");
        }
    }
    let config = conf.ipam_config_merged(flat.as_ref().map(|(p, v)| (p.as_path(), v)))?;
    let raw = match &flat {
        // Validated just above: the merge succeeds.
        Some((_, values)) => hereabouts_core::merge_flat_file(&conf.ipam, values)
            .map(|(merged, _)| merged)
            .unwrap_or_else(|_| conf.ipam.clone()),
        None => conf.ipam.clone(),
    };
    // Bounded where it is parsed (`hereabouts_core::duration::REQUEST_TIMEOUT`).
    let timeout = config.request_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let own = Path::new(DEFAULT_KUBECONFIG);
    let from_nad = conf
        .ipam
        .get("kubernetes")
        .and_then(|k| k.get("kubeconfig"))
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty());
    let kubeconfig = choose_kubeconfig(
        config.kind,
        from_nad,
        config.kubernetes.kubeconfig.as_deref(),
        own.exists().then_some(own),
    );
    Ok(Plan {
        config,
        raw,
        timeout,
        kubeconfig,
    })
}

/// The kubeconfig the plugin uses. hereabouts' own (written by its
/// installer, `own` when it exists) wins over whereabouts': a NAD that
/// still says "whereabouts" names whereabouts' kubeconfig, and whereabouts'
/// flat file (`whereabouts.d/whereabouts.conf`, merged under every NAD)
/// names it too, and neither's credentials can file claims. Only a
/// kubeconfig a hereabouts NAD names itself is taken over `own`.
fn choose_kubeconfig(
    kind: hereabouts_core::IpamKind,
    from_nad: Option<&str>,
    merged: Option<&str>,
    own: Option<&Path>,
) -> Option<PathBuf> {
    // whereabouts' installer writes its kubeconfig under `whereabouts.d/`;
    // a NAD switched to "hereabouts" may still name it.
    let theirs = |k: &&str| k.contains("/whereabouts.d/");
    match (own, kind) {
        (Some(own), hereabouts_core::IpamKind::Whereabouts) => Some(own.to_path_buf()),
        (Some(own), _) => Some(
            from_nad
                .filter(|k| !theirs(k))
                .map_or_else(|| own.to_path_buf(), PathBuf::from),
        ),
        (None, _) => merged.map(PathBuf::from),
    }
}

/// A client and the namespace pools live in: the agent's, or (direct) the
/// kubeconfig context's, else kube-system: whereabouts' rule.
async fn connect(plan: &Plan, backend: Backend<'_>) -> Result<(Client, String), CniError> {
    match backend {
        Backend::Agent {
            client, namespace, ..
        } => Ok(((*client).clone(), (*namespace).to_owned())),
        Backend::Direct => connect_direct(plan).await,
    }
}

async fn connect_direct(plan: &Plan) -> Result<(Client, String), CniError> {
    let (config, namespace) = match &plan.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                CniError::invalid_config(format!(
                    "kubernetes.kubeconfig: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let namespace = kubeconfig
                .current_context
                .as_ref()
                .and_then(|current| kubeconfig.contexts.iter().find(|c| &c.name == current))
                .and_then(|c| c.context.as_ref()?.namespace.clone())
                .unwrap_or_else(|| "kube-system".to_owned());
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| {
                    CniError::invalid_config(format!(
                        "kubernetes.kubeconfig {}: {e}",
                        path.display()
                    ))
                })?;
            (config, namespace)
        }
        None => (
            Config::infer().await.map_err(|e| {
                CniError::invalid_config(format!(
                    "kubernetes.kubeconfig: not set and no default credentials: {e}"
                ))
            })?,
            "kube-system".to_owned(),
        ),
    };
    let mut config = config;
    config.connect_timeout = Some(Duration::from_secs(10));
    let client = Client::try_from(config)
        .map_err(|e| CniError::try_again(format!("cannot build a Kubernetes client: {e}")))?;
    Ok((client, namespace))
}

/// `send`, sent again (twice at most, shortly after) when its connection
/// failed under it: the API server closes connections (a restart, its
/// idle and per-connection limits) and a load balancer before it may too.
/// The answer is lost, not the request, so only what is safe to repeat is
/// sent this way: a read, or a create, which meets itself as a conflict
/// when the first one landed.
async fn resent<T, F, Fut>(mut send: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = Duration::from_millis(50);
    for _ in 0..2 {
        match send().await {
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => {
                tracing::debug!(error = %e, "connection failed under a request; sending it again");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            answered => return answered,
        }
    }
    send().await
}

fn api_error(action: &str, e: &kube::Error) -> CniError {
    CniError::try_again(format!("{action}: {e}"))
}

fn network_name(inv: &Invocation) -> String {
    inv.conf
        .name
        .clone()
        .unwrap_or_else(|| "unnamed".to_owned())
}

/// NODENAME, then the installer's file, then the host name.
fn node_name(inv: &Invocation) -> String {
    hereabouts_plugin::client::node_name(&inv.env).unwrap_or_else(|| "unknown-node".to_owned())
}

/// The claim's ranges, each with the static address matched to it.
fn claim_ranges(plan: &Plan, matched: &[RangeRequest]) -> Vec<ClaimRange> {
    // The raw fields, so the controller parses exactly what the
    // configuration says (A-B/len, range_start, exclude...), in the order
    // the parsed ranges have: top-level `range` first, then `ipRanges`.
    let config = &plan.config;
    let ipam_raw = &plan.raw;
    let raw_ranges: Vec<&serde_json::Map<String, Value>> = std::iter::once(ipam_raw)
        .filter(|m| {
            m.get("range")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.is_empty())
        })
        .chain(
            ipam_raw
                .get("ipRanges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object),
        )
        .collect();
    config
        .ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let raw = raw_ranges.get(i);
            let text = |key: &str| {
                raw.and_then(|m| m.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let exclude = raw
                .and_then(|m| m.get("exclude"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ClaimRange {
                range: text("range").unwrap_or_else(|| r.range.cidr().to_string()),
                range_start: text("range_start"),
                range_end: text("range_end"),
                exclude,
                gateway: config.gateway_for(&r.range).map(|g| g.to_string()),
                static_ip: match matched.get(i) {
                    Some(RangeRequest::Static(r)) => Some(r.to_string()),
                    _ => None,
                },
            }
        })
        .collect()
}

/// How much longer than its `request_timeout` an ADD may take in all: its
/// create and reads come before the wait. Less than the plugin's margin
/// for the agent, so the agent's answer reaches the runtime.
const ADD_OVERRUN: Duration = Duration::from_secs(5);

/// A verb given up after `limit`, with "try again later". An API server (or
/// a proxy before it) may take a request and never answer, and the client
/// has no read timeout (a quiet watch must outlive any); without this, a
/// plugin process, or an agent's request, would wait for ever.
pub async fn bounded<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, CniError>>,
) -> Result<T, CniError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(CniError::try_again(format!(
            "the API server did not answer within {}s",
            limit.as_secs_f64()
        )))
    })
}

/// ADD: the attachment's addresses, committed by the allocator, within its
/// `request_timeout` and [`ADD_OVERRUN`].
pub async fn add(inv: &Invocation, backend: Backend<'_>) -> Result<Value, CniError> {
    let plan = plan(inv, backend)?;
    let limit = plan.timeout.saturating_add(ADD_OVERRUN);
    // On the API server's clock, which the claim's creation time is read
    // on, and never later than the moment this ADD gives up: only an agent
    // knows it (once it has read the server's `Date` or created a claim).
    // Elsewhere (the direct path, an agent that could not read it yet) a
    // claim carries no deadline: a node's clock behind the API server's
    // must not make every claim late.
    let answer_by = match backend {
        Backend::Agent { claims, .. } => std::time::Instant::now()
            .checked_add(limit)
            .and_then(|then| claims.server_clock_at(then)),
        Backend::Direct => None,
    };
    bounded(limit, add_planned(inv, backend, plan, answer_by)).await
}

async fn add_planned(
    inv: &Invocation,
    backend: Backend<'_>,
    plan: Plan,
    answer_by: Option<Timestamp>,
) -> Result<Value, CniError> {
    // On this node's clock, as a DEL of this sandbox stamps its fence.
    let started = SystemTime::now();
    let (pod_namespace, pod_name) = inv.pod()?;
    let requested = inv.conf.requested_ips(Some(&inv.args))?;
    let matched =
        hereabouts_core::match_requests(plan.config.ranges.iter().map(|r| &r.range), &requested)?;
    if plan.config.ranges.is_empty() {
        // Only `addresses`: nothing to allocate (whereabouts allows this).
        return Ok(result::render(&inv.cni_version, &[], &plan.config));
    }
    let (client, _) = connect(&plan, backend).await?;
    let network = network_name(inv);
    let name = claim_name(&pod_name, &inv.ifname, &network);
    let node = node_name(inv);
    let api: Api<IPClaim> = Api::namespaced(client.clone(), &pod_namespace);
    let pod_uid = match inv.args.pod_uid().filter(|u| !u.is_empty()) {
        Some(uid) => uid.to_owned(),
        None => {
            // Runtimes that do not pass K8S_POD_UID: one more round trip.
            let pods: Api<Pod> = Api::namespaced(client.clone(), &pod_namespace);
            pods.get(&pod_name)
                .await
                .map_err(|e| api_error(&format!("reading pod {pod_namespace}/{pod_name}"), &e))?
                .uid()
                .unwrap_or_default()
        }
    };
    let spec = IPClaimSpec {
        network: NetworkRef {
            namespace: pod_namespace.clone(),
            name: network.clone(),
        },
        ranges: claim_ranges(&plan, &matched),
        network_name: plan.config.network_name.clone(),
        enable_overlapping_ranges: plan.config.enable_overlapping_ranges,
        interface: inv.ifname.clone(),
        pod: PodRef {
            namespace: pod_namespace.clone(),
            name: pod_name.clone(),
            uid: pod_uid.clone(),
        },
        container_id: inv.container_id.clone(),
        node: node.clone(),
        // Also the flat list, which a controller or an IPClaim schema that
        // predates `staticIP` reads (the controller checks they agree).
        static_ips: matched
            .iter()
            .filter_map(|m| match m {
                RangeRequest::Static(r) => Some(r.to_string()),
                RangeRequest::Dynamic => None,
            })
            .collect(),
    };
    let mut claim = IPClaim::new(&name, spec);
    claim.metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(pod_namespace.clone()),
        labels: Some(BTreeMap::from([
            (NODE_LABEL.to_owned(), label_value(&node)),
            (NETWORK_LABEL.to_owned(), label_value(&network)),
        ])),
        annotations: answer_by
            .map(|t| BTreeMap::from([(ANSWER_BY_ANNOTATION.to_owned(), format!("{t:.3}"))])),
        owner_references: (!pod_uid.is_empty()).then(|| {
            vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod_name.clone(),
                uid: pod_uid.clone(),
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    // Registered before the create, so the shared watch cannot show the
    // answer before anyone listens for it.
    let registration = match backend {
        Backend::Agent { claims, .. } => Some(claims.register(&pod_namespace, &name)),
        Backend::Direct => None,
    };
    let post = PostParams::default();
    let current = match resent(|| api.create(&post, &claim)).await {
        Ok(created) => {
            if let Backend::Agent { claims, .. } = backend
                && let Some(at) = &created.metadata.creation_timestamp
            {
                claims.clock_sample(at.0, std::time::Instant::now());
            }
            created
        }
        Err(kube::Error::Api(e)) if e.code == 409 => take_over(&api, &claim, started).await?,
        Err(e) => {
            return Err(api_error(
                &format!("creating IPClaim {pod_namespace}/{name}"),
                &e,
            ));
        }
    };
    let answered = match registration {
        Some(registration) => {
            wait_on_shared_watch(&api, current, plan.timeout, registration).await?
        }
        None => wait_for_answer(&api, current, plan.timeout).await?,
    };
    let status = answered.status.unwrap_or_default();
    granted_as_asked(&matched, &status.ips)?;
    let ips: Vec<ResultIp> = status
        .ips
        .iter()
        .filter_map(|a| ResultIp::parse(&a.address, a.gateway.as_deref()))
        .collect();
    Ok(result::render(&inv.cni_version, &ips, &plan.config))
}

/// Reads of the claim before a takeover that keeps meeting writes gives up.
const TAKEOVER_ATTEMPTS: usize = 3;

/// The claim an ADD's create met under its name (a repeated ADD, a pod
/// recreated under the same name, or this create sent again after its
/// answer was lost), made this ADD's own: `claim` as the ADD would have
/// created it. A takeover that meets a write in between (the controller's
/// answer, another ADD's takeover) reads the claim again and decides again.
///
/// A claim a DEL of this very sandbox fenced after this ADD began is left
/// alone: the runtime has torn the sandbox down (a plugin killed with its
/// request's context, the agent still running its ADD), and a takeover now
/// would land after that DEL and get an address for no one.
async fn take_over(
    api: &Api<IPClaim>,
    claim: &IPClaim,
    started: SystemTime,
) -> Result<IPClaim, CniError> {
    let name = claim.name_any();
    let namespace = claim.namespace().unwrap_or_default();
    let deadline = claim.annotations().get(ANSWER_BY_ANNOTATION);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut existing = match resent(|| api.get_opt(&name)).await {
            Ok(Some(existing)) => existing,
            // Deleted since the create met it (the controller's delete of
            // an abandoned claim, a DEL): this ADD's own claim, then.
            Ok(None) => match api.create(&PostParams::default(), claim).await {
                Ok(created) => return Ok(created),
                Err(kube::Error::Api(e)) if e.code == 409 && attempts < TAKEOVER_ATTEMPTS => {
                    continue;
                }
                Err(e) => {
                    return Err(api_error(
                        &format!("creating IPClaim {namespace}/{name}"),
                        &e,
                    ));
                }
            },
            Err(e) => {
                return Err(api_error(
                    &format!("reading IPClaim {namespace}/{name}"),
                    &e,
                ));
            }
        };
        if fenced_by(existing.annotations(), &claim.spec.container_id)
            .is_some_and(|at| at >= started)
        {
            return Err(CniError::try_again(format!(
                "IPClaim {namespace}/{name}: a DEL of sandbox {} ran while this ADD did; not taking the claim over",
                claim.spec.container_id
            )));
        }
        let same = existing.spec == claim.spec;
        let answer = answer_of(&existing);
        if same && answer.as_ref().is_some_and(Result::is_err) {
            // Refused before (the range was full, the static address
            // taken): a repeated ADD asks again, with a claim of its own.
            // Changed since read: the create below meets the change.
            delete_exact(api, &existing).await.map_err(|e| {
                api_error(&format!("deleting refused IPClaim {namespace}/{name}"), &e)
            })?;
            return api
                .create(&PostParams::default(), claim)
                .await
                .map_err(|e| api_error(&format!("creating IPClaim {namespace}/{name}"), &e));
        }
        if same
            && (answer.is_some() || existing.annotations().get(ANSWER_BY_ANNOTATION) == deadline)
        {
            return Ok(existing);
        }
        // Another spec, or this very attachment's unanswered claim under
        // an earlier ADD's deadline (the create of an ADD that gave up,
        // landed late): the controller deletes that one as abandoned
        // unless this ADD takes it over with its own deadline.
        existing.spec = claim.spec.clone();
        existing.metadata.owner_references = claim.metadata.owner_references.clone();
        existing.metadata.labels = claim.metadata.labels.clone();
        let annotations = existing.metadata.annotations.get_or_insert_default();
        match deadline {
            Some(by) => annotations.insert(ANSWER_BY_ANNOTATION.to_owned(), by.clone()),
            None => annotations.remove(ANSWER_BY_ANNOTATION),
        };
        match api.replace(&name, &PostParams::default(), &existing).await {
            Ok(taken) => return Ok(taken),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < TAKEOVER_ATTEMPTS => {}
            Err(e) => {
                return Err(api_error(
                    &format!("updating IPClaim {namespace}/{name}"),
                    &e,
                ));
            }
        }
    }
}

/// Every static address asked for is the one granted for its range: never
/// silently replaced (an allocator that did not read the request, e.g. one
/// older than the per-range contract behind a schema that dropped it,
/// answers with another address; the runtime's DEL then frees it).
fn granted_as_asked(matched: &[RangeRequest], granted: &[ClaimedAddress]) -> Result<(), CniError> {
    for (i, request) in matched.iter().enumerate() {
        let RangeRequest::Static(asked) = request else {
            continue;
        };
        let got = granted
            .get(i)
            .map(|g| g.address.as_str())
            .unwrap_or_default();
        let got_ip = got.split('/').next().and_then(hereabouts_core::parse_ip);
        if got_ip != Some(asked.ip) {
            return Err(CniError::new(
                code::STATIC_ADDRESS_NOT_ALLOCATABLE,
                format!(
                    "{}[{}]: {} was asked of range {i}, but the allocator answered {}: is the controller (or the IPClaim CRD) older than the plugin?",
                    asked.source,
                    asked.index,
                    asked,
                    hereabouts_core::excerpt(got)
                ),
            ));
        }
    }
    Ok(())
}

/// `Some(Ok)` when the claim is answered Ready, `Some(Err)` when refused.
fn answer_of(claim: &IPClaim) -> Option<Result<(), CniError>> {
    let status = claim.status.as_ref()?;
    if status.observed_generation != claim.metadata.generation {
        return None;
    }
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    if ready.status == "True" {
        return Some(Ok(()));
    }
    let code = Refusal::from_reason(&ready.reason).map_or(code::TRY_AGAIN_LATER, cni_code);
    Some(Err(CniError::new(
        code,
        format!("{}: {}", ready.reason, ready.message),
    )))
}

/// The CNI error code of a refusal.
fn cni_code(refusal: Refusal) -> u32 {
    match refusal {
        Refusal::Exhausted => code::EXHAUSTED,
        Refusal::StaticAddressTaken | Refusal::StaticAddressConflict => {
            code::STATIC_ADDRESS_TAKEN
        }
        Refusal::StaticAddressNotAllocatable | Refusal::StaticAddressOutsideRanges => {
            code::STATIC_ADDRESS_NOT_ALLOCATABLE
        }
        Refusal::InvalidRange
        | Refusal::InvalidClaim
        | Refusal::InvalidStaticAddress
        | Refusal::InvalidNetworkName
        | Refusal::InvalidIPAMClaimReference => code::INVALID_CONFIG,
        // Who may claim what is the cluster's policy, not a fault of the
        // configuration: a pod not yet seen may be seen on a retry.
        Refusal::PodNotInNamespace
        | Refusal::PodNotFound
        | Refusal::PodMismatch
        | Refusal::InterfaceClaimed
        | Refusal::UndeclaredRange
        | Refusal::UndeclaredNetwork
        | Refusal::Retrying
        // An IPAMClaim (or NAD) KubeVirt has yet to make or fix.
        | Refusal::IPAMClaimNotFound
        | Refusal::IPAMClaimMismatch
        | Refusal::InvalidIPAMClaimStatus
        | Refusal::NetworkNotFound => code::TRY_AGAIN_LATER,
    }
}

/// Watches the one claim until the allocator answers or `timeout` passes.
async fn wait_for_answer(
    api: &Api<IPClaim>,
    claim: IPClaim,
    timeout: Duration,
) -> Result<IPClaim, CniError> {
    if let Some(answer) = answer_of(&claim) {
        return answer.map(|()| claim);
    }
    let name = claim.name_any();
    // Only this claim's answer counts: a claim of the same name but another
    // UID (deleted and made again by another ADD) is not ours.
    let uid = claim.uid();
    let ours = |c: &IPClaim| c.uid() == uid;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut version = claim.resource_version().unwrap_or_default();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(CniError::try_again(format!(
                "no allocator answered IPClaim {name} within {timeout:?}: is hereabouts-controller running and leading?"
            )));
        }
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX));
        let stream = match api.watch(&params, &version).await {
            Ok(s) => s,
            Err(e) => return Err(api_error(&format!("watching IPClaim {name}"), &e)),
        };
        let mut stream = std::pin::pin!(stream);
        let next = tokio::time::timeout(left, async {
            while let Some(event) = stream
                .try_next()
                .await
                .map_err(|e| api_error("watch", &e))?
            {
                match event {
                    WatchEvent::Added(c) | WatchEvent::Modified(c) if !ours(&c) => {
                        return Err(CniError::try_again(format!(
                            "IPClaim {name} was replaced by another ADD while waiting"
                        )));
                    }
                    WatchEvent::Added(c) | WatchEvent::Modified(c) => {
                        version = c.resource_version().unwrap_or_default();
                        if let Some(answer) = answer_of(&c) {
                            return answer.map(|()| Some(c));
                        }
                    }
                    WatchEvent::Deleted(_) => {
                        return Err(CniError::try_again(format!(
                            "IPClaim {name} was deleted while waiting"
                        )));
                    }
                    WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                    // Expired version: read the claim afresh below.
                    WatchEvent::Error(_) => return Ok(None),
                }
            }
            Ok(None)
        })
        .await;
        match next {
            Ok(Ok(Some(claim))) => return Ok(claim),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => {
                let fresh = api
                    .get(&name)
                    .await
                    .map_err(|e| api_error(&format!("reading IPClaim {name}"), &e))?;
                if !ours(&fresh) {
                    return Err(CniError::try_again(format!(
                        "IPClaim {name} was replaced by another ADD while waiting"
                    )));
                }
                if let Some(answer) = answer_of(&fresh) {
                    return answer.map(|()| fresh);
                }
                version = fresh.resource_version().unwrap_or_default();
            }
            Err(_) => continue,
        }
    }
}

/// [`wait_for_answer`] on the agent's watch of the node's claims: only this
/// claim's versions (by UID) count, and the claim is read again when the
/// watch has shown nothing at all, of any claim, for [`REREAD`] (a live
/// watch brings every version; under a storm an answer may well take
/// longer than that, and a read per waiting ADD would only add load).
async fn wait_on_shared_watch(
    api: &Api<IPClaim>,
    claim: IPClaim,
    timeout: Duration,
    mut registration: Registration,
) -> Result<IPClaim, CniError> {
    if let Some(answer) = answer_of(&claim) {
        return answer.map(|()| claim);
    }
    let name = claim.name_any();
    let uid = claim.uid();
    let generation = claim.metadata.generation;
    // The watch selects the node's claims by label: one this plugin did not
    // label (an older plugin's) is read every REREAD instead.
    let followed = claim.labels().get(NODE_LABEL) == Some(&label_value(&claim.spec.node));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(CniError::try_again(format!(
                "no allocator answered IPClaim {name} within {timeout:?}: is hereabouts-controller running and leading?"
            )));
        }
        match tokio::time::timeout(left.min(REREAD), registration.events.recv()).await {
            // A version of an older claim of this name (deleted and made
            // again by this ADD), or of an older generation of this one
            // (the shared watch may lag behind the spec this ADD wrote, and
            // an answer to the old spec names addresses the claim may no
            // longer hold): not ours.
            Ok(Some(Seen::Applied(c))) if c.uid() != uid || c.metadata.generation < generation => {}
            Ok(Some(Seen::Applied(c))) => {
                if let Some(answer) = answer_of(&c) {
                    return answer.map(|()| IPClaim::clone(&c));
                }
            }
            Ok(Some(Seen::Deleted(deleted))) if deleted == uid => {
                return Err(CniError::try_again(format!(
                    "IPClaim {name} was deleted while waiting"
                )));
            }
            Ok(Some(Seen::Deleted(_))) => {}
            // Nothing for this claim, but the watch is live (and follows
            // it): its next version will come through it.
            Err(_) if followed && registration.watch_is_live(REREAD) => {}
            // The watch showed nothing for a while (or went away, or listed
            // again after a gap): read it.
            Ok(None) | Ok(Some(Seen::Relisted)) | Err(_) => {
                let fresh = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| api_error(&format!("reading IPClaim {name}"), &e))?
                    .ok_or_else(|| {
                        CniError::try_again(format!("IPClaim {name} was deleted while waiting"))
                    })?;
                if fresh.uid() != uid {
                    return Err(CniError::try_again(format!(
                        "IPClaim {name} was replaced by another ADD while waiting"
                    )));
                }
                if let Some(answer) = answer_of(&fresh) {
                    return answer.map(|()| fresh);
                }
                if registration.events.is_closed() {
                    // Cannot happen while the agent runs (its watch holds
                    // the senders); wait by reading alone if it does.
                    tokio::time::sleep(left.min(REREAD)).await;
                }
            }
        }
    }
}

/// DEL: deletes the attachment's claim; succeeds when it is gone already,
/// when its namespace is gone, or when a newer ADD took it over.
pub async fn del(inv: &Invocation, backend: Backend<'_>) -> Result<Value, CniError> {
    let plan = match plan(inv, backend) {
        Ok(plan) => plan,
        // A configuration that cannot have allocated anything has nothing
        // to release; refusing DEL would only wedge the pod's teardown.
        Err(e) if e.code == code::INVALID_CONFIG => return Ok(Value::Null),
        Err(e) => return Err(e),
    };
    let Ok((pod_namespace, pod_name)) = inv.pod() else {
        return Ok(Value::Null);
    };
    if plan.config.ranges.is_empty() {
        return Ok(Value::Null);
    }
    let (client, _) = connect(&plan, backend).await?;
    let name = claim_name(&pod_name, &inv.ifname, &network_name(inv));
    let api: Api<IPClaim> = Api::namespaced(client, &pod_namespace);
    // The agent's watch saw the claim as this sandbox's: delete exactly that
    // version, with no read. Anything else the watch says (another
    // sandbox's, unseen) may be stale, and is read below.
    if let Backend::Agent { claims, .. } = backend
        && let Some(known) = claims.known(&pod_namespace, &name)
        && known.container_id == inv.container_id
    {
        match delete_version(&api, &name, Some(known.uid), Some(known.resource_version)).await {
            Ok(Deleted::Done) => return Ok(Value::Null),
            Ok(Deleted::Changed) => {}
            Err(e) => {
                return Err(api_error(
                    &format!("deleting IPClaim {pod_namespace}/{name}"),
                    &e,
                ));
            }
        }
    }
    // Read, compare the sandbox, delete exactly what was read (UID and
    // version): an ADD of a new sandbox that re-pointed the claim in
    // between changed its version, so this DEL cannot take it; it reads
    // again and finds the claim no longer its own.
    for _ in 0..DEL_ATTEMPTS {
        let existing = match api.get_opt(&name).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(Value::Null),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Value::Null),
            Err(e) => {
                return Err(api_error(
                    &format!("reading IPClaim {pod_namespace}/{name}"),
                    &e,
                ));
            }
        };
        if existing.spec.container_id != inv.container_id {
            match fence(&api, existing, &inv.container_id).await {
                Ok(Deleted::Done) => return Ok(Value::Null),
                Ok(Deleted::Changed) => continue,
                Err(e) => {
                    return Err(api_error(
                        &format!("fencing IPClaim {pod_namespace}/{name}"),
                        &e,
                    ));
                }
            }
        }
        match delete_exact(&api, &existing).await {
            Ok(Deleted::Done) => return Ok(Value::Null),
            Ok(Deleted::Changed) => continue,
            Err(e) => {
                return Err(api_error(
                    &format!("deleting IPClaim {pod_namespace}/{name}"),
                    &e,
                ));
            }
        }
    }
    Err(CniError::try_again(format!(
        "IPClaim {pod_namespace}/{name} kept changing while DEL tried to delete it"
    )))
}

/// Writes a new [`FENCED_BY_DEL_ANNOTATION`] on `claim` as read (its
/// version as the precondition): the claim is another sandbox's, but this
/// DEL's own ADD may have sent a takeover of it that is still on its way
/// (held in the network after the ADD gave up). Decided on the version read
/// here or an older one, that takeover now fails, so it can never land
/// after this DEL and leave an address committed for a torn-down sandbox.
/// `Changed`: the claim moved meanwhile (perhaps that very takeover
/// landed): read it again. A claim of another node is not this node's to
/// write, nor to take over: nothing to fence.
async fn fence(
    api: &Api<IPClaim>,
    mut claim: IPClaim,
    container_id: &str,
) -> Result<Deleted, kube::Error> {
    claim.metadata.annotations.get_or_insert_default().insert(
        FENCED_BY_DEL_ANNOTATION.to_owned(),
        fence_value(container_id, SystemTime::now()),
    );
    match api
        .replace(&claim.name_any(), &PostParams::default(), &claim)
        .await
    {
        Ok(_) => Ok(Deleted::Done),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => Ok(Deleted::Done),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Deleted::Changed),
        Err(e) => Err(e),
    }
}

/// A fence's value: when (nanoseconds since the Unix epoch, on the
/// node's clock) and by which sandbox's DEL; a new value each time.
fn fence_value(container_id: &str, at: SystemTime) -> String {
    let nanos = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos}/{container_id}")
}

/// When a DEL of sandbox `container_id` last fenced the claim with these
/// `annotations`, if it did.
fn fenced_by(annotations: &BTreeMap<String, String>, container_id: &str) -> Option<SystemTime> {
    let value = annotations.get(FENCED_BY_DEL_ANNOTATION)?;
    let (nanos, by) = value.split_once('/')?;
    if by != container_id {
        return None;
    }
    let nanos: u64 = nanos.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

/// Reads before a DEL gives up on a claim that keeps changing.
const DEL_ATTEMPTS: usize = 5;

enum Deleted {
    /// Deleted, or gone already.
    Done,
    /// Not what was read any more (another version or UID).
    Changed,
}

/// Deletes exactly `claim` as read (UID and version as preconditions).
async fn delete_exact(api: &Api<IPClaim>, claim: &IPClaim) -> Result<Deleted, kube::Error> {
    delete_version(
        api,
        &claim.name_any(),
        claim.uid(),
        claim.resource_version(),
    )
    .await
}

/// Deletes the claim `name` only while it is version `resource_version` of
/// the object `uid`.
async fn delete_version(
    api: &Api<IPClaim>,
    name: &str,
    uid: Option<String>,
    resource_version: Option<String>,
) -> Result<Deleted, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(Deleted::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Deleted::Done),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Deleted::Changed),
        Err(e) => Err(e),
    }
}

/// CHECK: the claim still holds prevResult's addresses, and so do the pools.
pub async fn check(inv: &Invocation, backend: Backend<'_>) -> Result<Value, CniError> {
    let plan = plan(inv, backend)?;
    let (pod_namespace, pod_name) = inv.pod()?;
    let prev = inv.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config("prevResult: missing; CHECK needs the result of ADD")
    })?;
    let mut expected: Vec<String> = result::addresses_of(prev);
    let statics: HashSet<String> = plan
        .config
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.address, a.prefix_len))
        .collect();
    expected.retain(|a| !statics.contains(a));
    if plan.config.ranges.is_empty() {
        return Ok(Value::Null);
    }
    let (client, pool_namespace) = connect(&plan, backend).await?;
    let name = claim_name(&pod_name, &inv.ifname, &network_name(inv));
    let api: Api<IPClaim> = Api::namespaced(client.clone(), &pod_namespace);
    let claim = api
        .get_opt(&name)
        .await
        .map_err(|e| api_error(&format!("reading IPClaim {pod_namespace}/{name}"), &e))?
        .ok_or_else(|| {
            CniError::new(
                code::CHECK_FAILED,
                format!("IPClaim {pod_namespace}/{name} no longer exists"),
            )
        })?;
    let held: Vec<String> = claim
        .status
        .as_ref()
        .map(|s| s.addresses.clone())
        .unwrap_or_default();
    let mut want = expected.clone();
    want.sort();
    let mut have = held.clone();
    have.sort();
    if want != have {
        return Err(CniError::new(
            code::CHECK_FAILED,
            format!(
                "prevResult has {expected:?} but IPClaim {pod_namespace}/{name} holds {held:?}"
            ),
        ));
    }
    let pools: Api<IPPool> = Api::namespaced(client, &pool_namespace);
    let pod_ref = format!("{pod_namespace}/{pod_name}");
    for address in claim.status.unwrap_or_default().ips {
        let Ok((ip, cidr)) = hereabouts_core::Cidr::parse_with_host(&address.address) else {
            continue;
        };
        let Some(offset) = cidr.offset_of(ip) else {
            continue;
        };
        let shard =
            hereabouts_core::shard_name(&address.pool, hereabouts_core::shard_index(offset));
        let candidates = [shard, address.pool.clone()];
        let mut found = false;
        for pool_name in candidates {
            if let Some(pool) = pools
                .get_opt(&pool_name)
                .await
                .map_err(|e| api_error(&format!("reading IPPool {pool_name}"), &e))?
            {
                // The pod's own entry, or one of an IPAMClaim of its
                // namespace (a VM's address belongs to the claim; the
                // controller answered this pod with it after checking the
                // pod's reference).
                found |= pool
                    .spec
                    .allocations
                    .get(&hereabouts_core::allocation_key(offset))
                    .is_some_and(|a| {
                        (a.podref == pod_ref && a.ifname == inv.ifname)
                            || hereabouts_api::claim_of_podref(&a.podref)
                                .is_some_and(|(ns, _)| ns == pod_namespace)
                    });
            }
        }
        if !found {
            return Err(CniError::new(
                code::CHECK_FAILED,
                format!(
                    "{} is no longer allocated to {pod_ref} {} in pool {}",
                    address.address, inv.ifname, address.pool
                ),
            ));
        }
    }
    Ok(Value::Null)
}

/// GC (CNI 1.1): deletes this node's claims of this network whose
/// attachment is not among `cni.dev/valid-attachments`.
pub async fn gc(inv: &Invocation, backend: Backend<'_>) -> Result<Value, CniError> {
    let plan = plan(inv, backend)?;
    let valid: HashSet<(String, String)> = inv.raw["cni.dev/valid-attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a["containerID"].as_str()?.to_owned(),
                a["ifname"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let (client, _) = connect(&plan, backend).await?;
    let node = node_name(inv);
    let api: Api<IPClaim> = Api::all(client.clone());
    let selector = format!(
        "{NODE_LABEL}={},{NETWORK_LABEL}={}",
        label_value(&node),
        label_value(&network_name(inv))
    );
    let claims = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| api_error("listing this node's IPClaims", &e))?;
    let stale = claims
        .items
        .into_iter()
        .filter(|c| !valid.contains(&(c.spec.container_id.clone(), c.spec.interface.clone())));
    futures::stream::iter(stale)
        .for_each_concurrent(16, |claim| {
            let client = client.clone();
            async move {
                let api: Api<IPClaim> =
                    Api::namespaced(client, &claim.namespace().unwrap_or_default());
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: claim.uid(),
                        resource_version: claim.resource_version(),
                    }),
                    ..Default::default()
                };
                let _ = api.delete(&claim.name_any(), &params).await;
            }
        })
        .await;
    Ok(Value::Null)
}

/// The controller's Lease: `controller_lease` in the IPAM configuration
/// (`name` or `namespace/name`; the installer's flat file can set it when
/// the controller runs with `--lease-name`), else `hereabouts-controller`
/// beside the pools.
fn controller_lease(plan: &Plan, pool_namespace: &str) -> Result<(String, String), CniError> {
    let Some(value) = plan.raw.get("controller_lease") else {
        return Ok((
            pool_namespace.to_owned(),
            "hereabouts-controller".to_owned(),
        ));
    };
    let text = value.as_str().unwrap_or_default();
    let (namespace, name) = text.split_once('/').unwrap_or((pool_namespace, text));
    let valid = |s: &str| hereabouts_core::naming::check_object_name(s).is_ok();
    if !valid(namespace) || !valid(name) {
        return Err(CniError::invalid_config(format!(
            "ipam.controller_lease: {value} is not a Lease name or namespace/name"
        )));
    }
    Ok((namespace.to_owned(), name.to_owned()))
}

/// Whether `lease` changes (is renewed) within `within`, watching it.
async fn renewed_within(leases: &Api<Lease>, lease: &Lease, within: Duration) -> bool {
    let name = lease.name_any();
    let version = lease.resource_version().unwrap_or_default();
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(u32::try_from(within.as_secs().max(1)).unwrap_or(60));
    let Ok(stream) = leases.watch(&params, &version).await else {
        return false;
    };
    let mut stream = std::pin::pin!(stream);
    let renewed = async {
        while let Ok(Some(event)) = stream.try_next().await {
            if let WatchEvent::Modified(l) = event
                && l.spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    .is_some_and(|h| !h.is_empty())
            {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(within, renewed).await.unwrap_or(false)
}

/// STATUS (CNI 1.1): ready when a controller holds a lease it renews and
/// no pool of this network is exhausted.
pub async fn status(inv: &Invocation, backend: Backend<'_>) -> Result<Value, CniError> {
    let plan = plan(inv, backend)?;
    let (client, pool_namespace) = connect(&plan, backend)
        .await
        .map_err(|e| CniError::new(code::NOT_AVAILABLE, e.msg))?;
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let (lease_namespace, lease_name) = controller_lease(&plan, &pool_namespace)?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_namespace);
    let lease = leases
        .get_opt(&lease_name)
        .await
        .map_err(|e| unavailable(format!("cannot reach the API server: {e}")))?
        .ok_or_else(|| {
            unavailable(format!(
                "no Lease {lease_namespace}/{lease_name}: is hereabouts-controller installed?"
            ))
        })?;
    let spec = lease.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return Err(unavailable(format!(
            "Lease {lease_namespace}/{lease_name} has no holder: addresses cannot be allocated"
        )));
    }
    // Fresh means renewed while we look: the holder's renewTime is its own
    // clock's, and no clock of two machines is compared here. A holder
    // renews several times per lease duration.
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15))
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
    if !renewed_within(&leases, &lease, duration).await {
        return Err(unavailable(format!(
            "Lease {lease_namespace}/{lease_name} was not renewed within {duration:?}: no hereabouts-controller leads, addresses cannot be allocated"
        )));
    }
    let pools: Api<IPPool> = Api::namespaced(client, &pool_namespace);
    for range in &plan.config.ranges {
        let name = range.pool_name.as_str();
        let Some(pool) = pools
            .get_opt(name)
            .await
            .map_err(|e| unavailable(format!("reading IPPool {name}: {e}")))?
        else {
            continue;
        };
        let exhausted = pool.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Exhausted" && c.status == "True")
        });
        if exhausted {
            return Err(unavailable(format!(
                "IPPool {name} ({}) has no free address",
                range.range
            )));
        }
    }
    Ok(Value::Null)
}

#[cfg(test)]
mod kubeconfig_tests {
    use super::*;
    use hereabouts_core::IpamKind;

    #[test]
    fn hereabouts_own_kubeconfig_wins_over_whereabouts_files() {
        let own = Path::new("/etc/cni/net.d/hereabouts.d/hereabouts.kubeconfig");
        let theirs = "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig";
        // A NAD switched to "hereabouts" on a node that still has
        // whereabouts' flat file (which names whereabouts' kubeconfig).
        assert_eq!(
            choose_kubeconfig(IpamKind::Hereabouts, None, Some(theirs), Some(own)),
            Some(own.to_path_buf())
        );
        // A NAD still saying "whereabouts", naming its kubeconfig.
        assert_eq!(
            choose_kubeconfig(IpamKind::Whereabouts, Some(theirs), Some(theirs), Some(own)),
            Some(own.to_path_buf())
        );
        // A NAD switched to "hereabouts" that still names whereabouts'.
        assert_eq!(
            choose_kubeconfig(IpamKind::Hereabouts, Some(theirs), Some(theirs), Some(own)),
            Some(own.to_path_buf())
        );
        // A hereabouts NAD that names a kubeconfig of its own gets it.
        assert_eq!(
            choose_kubeconfig(IpamKind::Hereabouts, Some("/k"), Some("/k"), Some(own)),
            Some(PathBuf::from("/k"))
        );
        // Not installed by the DaemonSet: whatever the configuration says.
        assert_eq!(
            choose_kubeconfig(IpamKind::Hereabouts, None, Some(theirs), None),
            Some(PathBuf::from(theirs))
        );
        assert_eq!(
            choose_kubeconfig(IpamKind::Hereabouts, None, None, None),
            None
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_hash_what_a_label_cannot_hold() {
        assert_eq!(label_value("node-1"), "node-1");
        let long = label_value(&"n".repeat(100));
        assert!(long.len() <= 63 && long.starts_with('h'));
        assert_ne!(label_value("a/b"), "a/b");
    }

    #[test]
    fn a_fence_names_its_sandbox_and_when() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_796_328_104_327_849_310);
        let fence =
            |value: &str| BTreeMap::from([(FENCED_BY_DEL_ANNOTATION.to_owned(), value.to_owned())]);
        assert_eq!(fenced_by(&BTreeMap::new(), "sb-1"), None, "no fence");
        let written = fence(&fence_value("sb-1", at));
        assert_eq!(fenced_by(&written, "sb-1"), Some(at));
        assert_eq!(fenced_by(&written, "sb-2"), None, "another sandbox's fence");
        for bad in [
            "",
            "sb-1",
            "x/sb-1",
            "/sb-1",
            "99999999999999999999999/sb-1",
        ] {
            assert_eq!(
                fenced_by(&fence(bad), "sb-1"),
                None,
                "{bad:?} reads as no fence"
            );
        }
    }
}
