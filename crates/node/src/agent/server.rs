//! The agent's side of the socket: binds it (mode 0600, so only root on the
//! host reaches it), reads one bounded request per connection, runs the
//! verb with the agent's client and shared claim watch, and answers. A
//! request the agent must not serve (another node's, other credentials, a
//! protocol it does not speak) gets [`Response::NotServed`]; a malformed
//! one gets a CNI error naming what is wrong. Nothing panics on input.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::Client;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};

use super::overtaken::Overtaken;
use super::protocol::{self, Request, Response};
use crate::cni::Outcome;
use crate::cni::env::{Command, Environment, Invocation};
use crate::cni::error::{CniError, code};
use crate::cni::verbs::{self, Backend};
use crate::cni::watch::ClaimWatch;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {source}")]
    Kubeconfig {
        field: &'static str,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("rendering the agent's credentials: {0}")]
    Render(#[source] serde_json::Error),
    #[error("building the agent's API client: {0}")]
    Client(#[source] kube::Error),
}

/// The agent's client: from `kubeconfig` when given, else the installer's
/// pieces (the API server, its CA file and the projected token file, which
/// the client reads again as the kubelet rotates it).
pub async fn client(
    kubeconfig: Option<&Path>,
    server: Option<&str>,
    token_file: &Path,
    ca_file: &Path,
) -> Result<Client, Error> {
    let (kubeconfig, field) = match kubeconfig {
        Some(path) => (
            kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                field: "--kubeconfig",
                source,
            })?,
            "--kubeconfig",
        ),
        None => {
            let document = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "hereabouts", "cluster": {
                    "server": server.unwrap_or_default(),
                    "certificate-authority": ca_file,
                }}],
                "users": [{"name": "hereabouts-node", "user": {"tokenFile": token_file}}],
                "contexts": [{"name": "hereabouts", "context": {"cluster": "hereabouts", "user": "hereabouts-node"}}],
                "current-context": "hereabouts",
            });
            let parsed = serde_json::from_value(document).map_err(Error::Render)?;
            (parsed, "--api-server, --token-file, --ca-file")
        }
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|source| Error::Kubeconfig { field, source })?;
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    Client::try_from(config).map_err(Error::Client)
}

/// What every request the agent serves shares.
pub struct Agent {
    pub client: Client,
    /// Where the pools (and the controller's Lease) live.
    pub namespace: String,
    /// The node this agent serves, and no other.
    pub node: String,
    /// The kubeconfig the agent was started with, if any: a configuration
    /// naming it (or the installer's, or none) is served with the agent's
    /// client; one naming other credentials is left to the plugin.
    pub kubeconfig: Option<PathBuf>,
    pub claims: Arc<ClaimWatch>,
    /// The ADDs running, and which a DEL of their attachment overtook.
    overtaken: Overtaken,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("namespace", &self.namespace)
            .field("node", &self.node)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// How often the agent runs an overtaken ADD's DEL again before it leaves
/// the claim to the pod's deletion (its owner reference).
const DEL_AGAIN_ATTEMPTS: u32 = 3;

/// How often the agent reads the API server's clock.
const CLOCK_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Reads the API server's clock (the `Date` of its answer to `GET
/// /version`, which every client may read) now and every [`CLOCK_EVERY`],
/// so the deadline each claim carries (`hereabouts.dev/answer-by`) is on
/// the clock its creation time is read on.
async fn learn_clock(client: Client, claims: Arc<ClaimWatch>) {
    static HTTP_DATE: k8s_openapi::jiff::fmt::rfc2822::DateTimeParser =
        k8s_openapi::jiff::fmt::rfc2822::DateTimeParser::new();
    loop {
        match http::Request::get("/version").body(kube::client::Body::empty()) {
            Ok(request) => match client.send(request).await {
                Ok(response) => {
                    let answered = std::time::Instant::now();
                    let date = response
                        .headers()
                        .get(http::header::DATE)
                        .and_then(|d| HTTP_DATE.parse_timestamp(d.as_bytes()).ok());
                    match date {
                        Some(date) => claims.clock_sample(date, answered),
                        None => tracing::debug!("the API server's answer has no Date"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not read the API server's clock"),
            },
            Err(e) => tracing::debug!(error = %e, "could not ask for the API server's clock"),
        }
        tokio::time::sleep(CLOCK_EVERY).await;
    }
}

impl Agent {
    /// An agent for `node`; its claim watch starts at once.
    pub fn start(
        client: Client,
        namespace: String,
        node: String,
        kubeconfig: Option<PathBuf>,
    ) -> Arc<Self> {
        let claims = Arc::new(ClaimWatch::default());
        tokio::spawn(claims.clone().run(client.clone(), node.clone()));
        tokio::spawn(learn_clock(client.clone(), claims.clone()));
        Arc::new(Agent {
            client,
            namespace,
            node,
            kubeconfig,
            claims,
            overtaken: Overtaken::default(),
        })
    }

    /// Whether a configuration naming `kubeconfig` is the agent's to serve.
    fn serves_credentials(&self, kubeconfig: Option<&Path>) -> bool {
        match kubeconfig {
            None => true,
            Some(path) => {
                path == Path::new(verbs::DEFAULT_KUBECONFIG)
                    || self.kubeconfig.as_deref() == Some(path)
            }
        }
    }

    /// The answer to one request's bytes.
    pub async fn answer(&self, body: &[u8]) -> Response {
        let request: Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                // An older or newer plugin: let it do the work itself.
                if let Ok(value) = serde_json::from_slice::<Value>(body)
                    && value["version"].as_u64() != Some(u64::from(protocol::VERSION))
                {
                    return Response::NotServed {
                        reason: format!(
                            "request version {}: this agent speaks version {}",
                            value["version"],
                            protocol::VERSION
                        ),
                    };
                }
                return refused(
                    code::DECODING,
                    format!("agent request: not a request document: {e}"),
                );
            }
        };
        if request.version != protocol::VERSION {
            return Response::NotServed {
                reason: format!(
                    "request version {}: this agent speaks version {}",
                    request.version,
                    protocol::VERSION
                ),
            };
        }
        let mut environment = request.env;
        match environment.node_name.as_deref() {
            Some(node) if node != self.node => {
                return Response::NotServed {
                    reason: format!(
                        "the agent serves node {:?}; the request is for node {node:?}",
                        self.node
                    ),
                };
            }
            Some(_) => {}
            None => environment.node_name = Some(self.node.clone()),
        }
        let stdin = request.stdin.as_bytes();
        let flat_file = match request.flat_file {
            Some(f) => {
                if !f.value.is_object() {
                    return refused(
                        code::INVALID_CONFIG,
                        format!("agent request: flat_file {:?} is not a JSON object", f.path),
                    );
                }
                Some((PathBuf::from(f.path), f.value))
            }
            None => None,
        };
        // Whose credentials the configuration asks for: the agent's own,
        // or the plugin's to use itself. A configuration that does not
        // parse is answered here, with the error the direct path gives.
        let command = Command::parse(environment.command.as_deref());
        if let Ok(command) = command
            && command != Command::Version
            && let Ok(inv) = Invocation::parse(command, environment.clone(), stdin)
            && let Ok(kubeconfig) = verbs::kubeconfig_of(&inv, flat_file.as_ref())
            && !self.serves_credentials(kubeconfig.as_deref())
        {
            return Response::NotServed {
                reason: format!(
                    "the configuration names the kubeconfig {}, not the node agent's",
                    kubeconfig
                        .map(|k| k.display().to_string())
                        .unwrap_or_default()
                ),
            };
        }
        let backend = Backend::Agent {
            client: &self.client,
            namespace: &self.namespace,
            claims: &self.claims,
            flat_file: flat_file.as_ref(),
        };
        let attachment = environment
            .container_id
            .clone()
            .zip(environment.ifname.clone());
        let outcome = match (command, attachment) {
            (Ok(Command::Add), Some(attachment)) => {
                let start = self.overtaken.begin_add(&attachment);
                let outcome = crate::cni::run_with(environment.clone(), stdin, backend).await;
                if self.overtaken.end_add(&attachment, start) {
                    self.del_again(environment, stdin, backend).await;
                    Outcome {
                        stdout: Some(
                            CniError::try_again(format!(
                                "a DEL of this attachment (container {:?}, interface {:?}) \
                                 arrived while its ADD ran: what the ADD filed is released",
                                attachment.0, attachment.1
                            ))
                            .to_json(&crate::cni::error_version(stdin)),
                        ),
                        success: false,
                    }
                } else {
                    outcome
                }
            }
            (Ok(Command::Del), Some(attachment)) => {
                self.overtaken.del(&attachment);
                crate::cni::run_with(environment, stdin, backend).await
            }
            _ => crate::cni::run_with(environment, stdin, backend).await,
        };
        Response::Answer {
            stdout: outcome.stdout,
            success: outcome.success,
        }
    }

    /// Runs again the DEL that overtook an ADD of the attachment, now that
    /// the ADD has ended (its create landed or can only land past its
    /// deadline). A DEL that keeps failing is logged: the claim then stays
    /// with the pod until its deletion, never given to another.
    async fn del_again(&self, mut environment: Environment, stdin: &[u8], backend: Backend<'_>) {
        environment.command = Some("DEL".to_owned());
        for attempt in 1..=DEL_AGAIN_ATTEMPTS {
            let outcome = crate::cni::run_with(environment.clone(), stdin, backend).await;
            if outcome.success {
                return;
            }
            tracing::warn!(
                attempt,
                container = environment.container_id.as_deref().unwrap_or_default(),
                interface = environment.ifname.as_deref().unwrap_or_default(),
                error = %outcome.stdout.unwrap_or_default(),
                "running again the DEL that overtook an ADD failed"
            );
            if attempt < DEL_AGAIN_ATTEMPTS {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn refused(code: u32, msg: String) -> Response {
    Response::Answer {
        stdout: Some(CniError::new(code, msg).to_json("1.1.0")),
        success: false,
    }
}

/// The socket as bound: removed on shutdown only while it is still this
/// agent's (a newer agent may have bound the path since).
#[derive(Debug)]
pub struct Bound {
    pub path: PathBuf,
    identity: (u64, u64),
}

impl Bound {
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds `path` with mode 0600: bound under a temporary name, narrowed,
/// then renamed into place, so the path never answers with a wider mode and
/// a stale socket of a crashed agent is replaced at once. The directory is
/// made 0755 if missing.
pub fn bind(path: &Path) -> Result<(UnixListener, Bound), Error> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io("creating the socket's directory", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io("setting the mode of", dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(io("binding", &tmp))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting the mode of", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("placing the socket at", path)));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let meta = std::fs::symlink_metadata(path).map_err(io("reading", path))?;
    Ok((
        listener,
        Bound {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        },
    ))
}

/// How long a connection may take to send its request: a plugin writes it
/// at once; a peer that never finishes is dropped.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves connections until `shutdown`; each in a task of its own.
pub async fn serve(
    listener: UnixListener,
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = agent.clone();
                    tokio::spawn(async move { connection(stream, &agent).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the agent socket failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

async fn connection(mut stream: UnixStream, agent: &Agent) {
    let mut body = Vec::new();
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        (&mut stream)
            .take(protocol::MAX_REQUEST as u64 + 1)
            .read_to_end(&mut body),
    )
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no whole request within the read timeout",
        ))
    });
    let oversized = body.len() > protocol::MAX_REQUEST;
    let response = match read {
        Err(e) => {
            tracing::debug!(error = %e, "reading a request failed");
            return;
        }
        Ok(_) if oversized => refused(
            code::INVALID_CONFIG,
            format!("agent request: larger than {} bytes", protocol::MAX_REQUEST),
        ),
        Ok(_) => {
            let started = std::time::Instant::now();
            let response = agent.answer(&body).await;
            match &response {
                Response::Answer { success, .. } => tracing::debug!(
                    success,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "answered"
                ),
                Response::NotServed { reason } => tracing::debug!(reason, "not served"),
            }
            response
        }
    };
    let Ok(bytes) = serde_json::to_vec(&response) else {
        return;
    };
    if let Err(e) = stream.write_all(&bytes).await {
        tracing::debug!(error = %e, "answering a request failed (the plugin went away)");
    }
    if oversized {
        // The rest of the request is unread: closing now would reset the
        // connection and could destroy the answer before the plugin reads
        // it. Finish ours, then let the sender finish (within the timeout).
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(
            READ_TIMEOUT,
            tokio::io::copy(&mut stream, &mut tokio::io::sink()),
        )
        .await;
    }
    let _ = stream.shutdown().await;
}
