//! Rust face of the local control plane kit in `e2e/`: integration and e2e
//! tests start (or reuse) the real API server, get a client, a namespace of
//! their own, simulated nodes and pods, and leave nothing behind.
//!
//! The shell scripts beside this crate do the work (`cluster.sh`, `node.sh`,
//! `pod.sh`); this crate calls them, so a test and a person at a shell drive
//! the cluster the same way.

pub mod plugin;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::process::Command;
use tokio::sync::OnceCell;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("{script} {args:?} failed ({status}): {stderr}")]
    Script {
        script: &'static str,
        args: Vec<String>,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("could not run {script}: {source}")]
    Spawn {
        script: &'static str,
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{what} did not happen within {seconds}s")]
    Timeout { what: String, seconds: u64 },
    #[error("multus result is not JSON: {0}")]
    Result(#[from] serde_json::Error),
    #[error("a spawned task failed: {0}")]
    Task(String),
}

pub type Result<T, E = KitError> = std::result::Result<T, E>;

/// The repository root (where `e2e/` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the kit keeps its state; honours `HB_LOCAL` like the scripts do.
pub fn local_dir() -> PathBuf {
    std::env::var_os("HB_LOCAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".local"))
}

pub fn kubeconfig_path() -> PathBuf {
    local_dir().join("kubeconfig")
}

/// The CNI bin dir of the simulated nodes: reference plugins, Multus,
/// whereabouts, and whatever a test installs there.
pub fn cni_bin_dir() -> PathBuf {
    local_dir().join("cni").join("bin")
}

async fn script(name: &'static str, args: &[&str]) -> Result<Output> {
    let output = Command::new(repo_root().join("e2e").join(name))
        .args(args)
        .output()
        .await
        .map_err(|source| KitError::Spawn {
            script: name,
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(KitError::Script {
            script: name,
            args: args.iter().map(ToString::to_string).collect(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// One per test binary: the running local control plane and a client for it.
#[derive(Clone)]
pub struct Kit {
    pub client: Client,
}

impl std::fmt::Debug for Kit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kit")
            .field("kubeconfig", &kubeconfig_path())
            .finish()
    }
}

static CLUSTER_UP: OnceCell<()> = OnceCell::const_new();

/// Starts the local control plane unless it already runs (once per test
/// binary), and connects. Each call makes its own client: every
/// `#[tokio::test]` has its own runtime, and a client's connections die with
/// the runtime that made them.
pub async fn kit() -> Result<Kit> {
    CLUSTER_UP
        .get_or_try_init(|| async { script("cluster.sh", &["up"]).await.map(drop) })
        .await?;
    Ok(Kit {
        client: client().await?,
    })
}

/// A fresh client for the local control plane (e.g. one per simulated
/// controller replica).
pub async fn client() -> Result<Client> {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).map_err(|e| KitError::Kubeconfig {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| KitError::Kubeconfig {
            path,
            message: e.to_string(),
        })?;
    Ok(Client::try_from(config)?)
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, safe for Kubernetes objects and
/// short enough for node and link names.
pub fn unique(prefix: &str) -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id() % 100_000)
}

/// Polls `probe` every 100 ms until it yields `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(what: &str, seconds: u64, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(KitError::Timeout {
                what: what.to_owned(),
                seconds,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A namespace of the test's own, with its `default` service account
/// present (pods need it). Deleted when dropped, with everything in it;
/// the simulated pods and nodes made through it are removed first.
#[derive(Debug)]
pub struct TestNamespace {
    pub name: String,
    pods: std::sync::Mutex<Vec<String>>,
    nodes: std::sync::Mutex<Vec<String>>,
}

impl Kit {
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = unique(prefix);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"hereabouts.dev/test": "true"}}
        }))?;
        namespaces.create(&PostParams::default(), &ns).await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        let made = eventually("default service account", 10, || async {
            accounts.get_opt("default").await.ok().flatten()
        })
        .await;
        if made.is_err() {
            // kube-controller-manager's watches back off after an API
            // server restart (the fault suite's): make the account the way
            // its serviceaccount controller would.
            let default: ServiceAccount =
                serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?;
            match accounts.create(&PostParams::default(), &default).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(TestNamespace {
            name,
            pods: Default::default(),
            nodes: Default::default(),
        })
    }
}

/// What Multus printed for an ADD: the CNI result of the pod's default
/// network, and the pod's attachments as Multus annotated them.
#[derive(Debug)]
pub struct Attached {
    pub result: serde_json::Value,
}

impl TestNamespace {
    /// A simulated node (Node object, network namespace, uplink on the
    /// shared segment), removed with this namespace.
    pub async fn node(&self, name: &str) -> Result<String> {
        script("node.sh", &["add", name]).await?;
        lock(&self.nodes).push(name.to_owned());
        Ok(name.to_owned())
    }

    /// Creates a Pod bound to `node` asking for `networks` (the
    /// `k8s.v1.cni.cncf.io/networks` annotation) and runs Multus ADD for it.
    pub async fn pod(&self, name: &str, node: &str, networks: &str) -> Result<Attached> {
        lock(&self.pods).push(name.to_owned());
        let out = script("pod.sh", &["add", &self.name, name, node, networks]).await?;
        Ok(Attached {
            result: serde_json::from_slice(&out.stdout)?,
        })
    }

    /// Runs Multus with `command` (ADD, DEL, CHECK) for an existing pod.
    pub async fn cni(&self, command: &str, pod: &str) -> Result<Output> {
        script("pod.sh", &["cni", command, &self.name, pod]).await
    }

    /// DEL through Multus, then the pod's namespace and object go.
    pub async fn delete_pod(&self, pod: &str) -> Result<()> {
        script("pod.sh", &["del", &self.name, pod]).await?;
        lock(&self.pods).retain(|p| p != pod);
        Ok(())
    }

    /// The pod disappears the way a crashed node loses it: no DEL is sent.
    pub async fn vanish_pod(&self, pod: &str) -> Result<()> {
        script("pod.sh", &["vanish", &self.name, pod]).await?;
        lock(&self.pods).retain(|p| p != pod);
        Ok(())
    }

    /// Runs a command inside the pod's network namespace.
    pub async fn exec(&self, pod: &str, command: &[&str]) -> Result<Output> {
        let mut args = vec!["exec", &self.name, pod];
        args.extend_from_slice(command);
        script("pod.sh", &args).await
    }

    /// The IP addresses (with prefix length) on `ifname` inside the pod.
    pub async fn addresses(&self, pod: &str, ifname: &str) -> Result<Vec<String>> {
        let out = self
            .exec(pod, &["ip", "-j", "addr", "show", "dev", ifname])
            .await?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(links
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["scope"] == "global")
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect())
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await: run the scripts synchronously. Cleanup is best
        // effort; `make cluster-down` removes whatever is left.
        let e2e = repo_root().join("e2e");
        for pod in lock(&self.pods).drain(..) {
            let _ = std::process::Command::new(e2e.join("pod.sh"))
                .args(["vanish", &self.name, &pod])
                .output();
        }
        for node in lock(&self.nodes).drain(..) {
            let _ = std::process::Command::new(e2e.join("node.sh"))
                .args(["remove", &node])
                .output();
        }
        // No kubelet confirms pod deletions: force them, or the namespace
        // stays Terminating for ever.
        let kubectl = |args: &[&str]| {
            let _ = std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(kubeconfig_path())
                .args(args)
                .output();
        };
        kubectl(&[
            "delete",
            "pods",
            "--all",
            "-n",
            &self.name,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Deletes an object and waits until it is gone.
pub async fn delete_and_wait<K>(api: &Api<K>, name: &str, seconds: u64) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    eventually(&format!("deletion of {name}"), seconds, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

/// Whether this kernel can make ipvlan links (`e2e/ipvlan.sh`).
pub async fn ipvlan_available() -> bool {
    script("ipvlan.sh", &[]).await.is_ok()
}

/// A child process killed (SIGKILL) when dropped, e.g. a controller
/// replica under test.
#[derive(Debug)]
pub struct Process {
    child: Option<std::process::Child>,
    pub name: String,
}

impl Process {
    /// Starts `program` with `args`, stderr to `<local>/logs/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> std::io::Result<Self> {
        let logs = local_dir().join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = std::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Process {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// SIGKILL: the process gets no chance to clean up (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the exit (a graceful shutdown).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok()
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Restarts one part of the local control plane (`apiserver` or `etcd`),
/// the API server with `extra` flags after its usual ones (they win), and
/// waits until it serves again (`cluster.sh restart`).
pub async fn restart(component: &str, extra: &[&str]) -> Result<()> {
    let mut args = vec!["restart", component];
    args.extend_from_slice(extra);
    script("cluster.sh", &args).await.map(drop)
}

/// The process id of the replica holding the controller's Lease in
/// `namespace` (its identity is `<host>_<pid>`), if one holds it.
pub async fn leader_pid(client: &Client, namespace: &str) -> Option<u32> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases.get_opt("hereabouts-controller").await.ok()??;
    lease
        .spec?
        .holder_identity?
        .rsplit_once('_')?
        .1
        .parse()
        .ok()
}

/// Sends `signal` ("KILL", "STOP", "CONT", ...) to process `pid` (one this
/// test started, e.g. [`Process::id`]); whether it was delivered.
pub fn signal(pid: u32, signal: &str) -> bool {
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

/// The value of `--<flag>=<value>` among a harness's arguments (the last
/// one wins), if present and parseable.
pub fn arg_value<T: std::str::FromStr>(args: &[String], flag: &str) -> Option<T> {
    args.iter()
        .rev()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The comma-separated values of every `--<flag>=a,b`.
pub fn arg_list(args: &[String], flag: &str) -> Vec<String> {
    args.iter()
        .filter_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
        .flat_map(|s| s.split(','))
        .map(str::to_owned)
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A hereabouts-controller replica scoped to one test namespace (pools,
/// reservations, Lease and watched objects all there), killed when dropped.
#[derive(Debug)]
pub struct Controller {
    pub process: Process,
    pub port: u16,
}

impl Controller {
    /// Starts `binary` (the test's `CARGO_BIN_EXE_hereabouts-controller`)
    /// with short lease timings and `extra` flags.
    pub fn start(binary: &Path, ns: &TestNamespace, name: &str, extra: &[&str]) -> Result<Self> {
        Self::start_as(binary, ns, name, extra, &kubeconfig_path())
    }

    /// [`Controller::start`] with the credentials of `kubeconfig` (e.g. a
    /// service account's, [`TestNamespace::service_account`]).
    pub fn start_as(
        binary: &Path,
        ns: &TestNamespace,
        name: &str,
        extra: &[&str],
        kubeconfig: &Path,
    ) -> Result<Self> {
        let port = free_port().map_err(|source| KitError::Spawn {
            script: "free_port",
            source,
        })?;
        let http = format!("127.0.0.1:{port}");
        let defaults = [
            ("--namespace", ns.name.as_str()),
            ("--watch-namespace", ns.name.as_str()),
            ("--http-addr", http.as_str()),
            ("--lease-duration", "3s"),
            ("--renew-deadline", "2s"),
            ("--retry-period", "250ms"),
        ];
        // `extra` wins over a default of the same flag.
        let mut args: Vec<String> = defaults
            .iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [(*flag).to_owned(), (*value).to_owned()])
            .collect();
        args.extend(extra.iter().map(ToString::to_string));
        let process = Process::spawn(
            &format!("{}-{name}", ns.name),
            binary,
            &args,
            &[
                ("KUBECONFIG", kubeconfig.display().to_string()),
                ("RUST_LOG", "info,hereabouts=debug".to_owned()),
            ],
        )
        .map_err(|source| KitError::Spawn {
            script: "controller",
            source,
        })?;
        Ok(Controller { process, port })
    }

    /// GET on the controller's HTTP port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:{}{path}", self.port),
            ])
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.parse().ok()?, body.to_owned()))
    }

    /// Waits for `/readyz`.
    pub async fn wait_ready(&self) -> Result<()> {
        eventually("controller /readyz", 30, || async {
            matches!(self.get("/readyz").await, Some((200, _))).then_some(())
        })
        .await
    }
}

impl TestNamespace {
    /// A kubeconfig whose context namespace is this namespace: given to the
    /// CNI plugin (`kubernetes.kubeconfig`), it keeps the test's pools here.
    pub fn kubeconfig(&self) -> Result<PathBuf> {
        let source =
            std::fs::read_to_string(kubeconfig_path()).map_err(|e| KitError::Kubeconfig {
                path: kubeconfig_path(),
                message: e.to_string(),
            })?;
        let scoped = source.replace(
            "context: {cluster: hereabouts-local, user: admin}",
            &format!(
                "context: {{cluster: hereabouts-local, user: admin, namespace: {}}}",
                self.name
            ),
        );
        let path = local_dir().join("kubeconfigs").join(&self.name);
        let io = |e: std::io::Error| KitError::Kubeconfig {
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
        std::fs::write(&path, scoped).map_err(io)?;
        Ok(path)
    }
}

impl TestNamespace {
    /// A ServiceAccount `name` of this namespace, bound to `cluster-admin`
    /// in this namespace only, and a kubeconfig with its token whose context
    /// namespace is this one. Unlike the kit's admin (system:masters, which
    /// the API server's max-in-flight limits exempt), this identity meets
    /// the limits a deployed controller or node meets.
    pub async fn service_account(&self, client: &Client, name: &str) -> Result<PathBuf> {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &self.name);
        let account: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))?;
        accounts.create(&PostParams::default(), &account).await?;
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &self.name);
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.name}]
        }))?;
        bindings.create(&PostParams::default(), &binding).await?;
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig_path())
            .args(["create", "token", name, "-n", &self.name, "--duration=48h"])
            .output()
            .await
            .map_err(|source| KitError::Spawn {
                script: "kubectl create token",
                source,
            })?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let path = local_dir()
            .join("kubeconfigs")
            .join(format!("{}-{name}", self.name));
        let io = |e: std::io::Error| KitError::Kubeconfig {
            path: path.clone(),
            message: e.to_string(),
        };
        if !out.status.success() || token.is_empty() {
            return Err(KitError::Kubeconfig {
                path,
                message: format!(
                    "kubectl create token {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let admin = std::fs::read_to_string(kubeconfig_path()).map_err(io)?;
        let scoped: String = admin
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("token:") {
                    format!("    token: {token}")
                } else if l.trim_start().starts_with("context:") {
                    format!(
                        "  context: {{cluster: hereabouts-local, user: admin, namespace: {}}}",
                        self.name
                    )
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
        std::fs::write(&path, scoped + "\n").map_err(io)?;
        Ok(path)
    }
}

/// Puts `binary` into the simulated nodes' CNI bin dir as `name` (e.g. the
/// test's `CARGO_BIN_EXE_hereabouts` as `hereabouts`).
pub fn install_plugin(binary: &Path, name: &str) -> std::io::Result<()> {
    let dir = cni_bin_dir();
    std::fs::create_dir_all(&dir)?;
    let link = dir.join(name);
    // Tests of one binary install from several threads at once: the
    // temporary link is unique per call, not just per process.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{call}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(binary, &tmp)?;
    std::fs::rename(tmp, link)
}

/// Applies hereabouts' CRDs (server-side apply) and waits until the API
/// server serves them: what `kubectl apply -f crds/` does, for tests and
/// the bench.
pub async fn install_crds(client: &Client) -> std::result::Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("hereabouts").force();
    for (_, crd) in hereabouts_api::definitions() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
    }
    for (_, crd) in hereabouts_api::definitions() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let established = kube::runtime::wait::conditions::is_crd_established();
        let wait = kube::runtime::wait::await_condition(api.clone(), &name, established);
        // Establishing takes milliseconds; give up after a generous bound.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), wait).await;
    }
    Ok(())
}
