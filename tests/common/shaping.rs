//! Shaping the timing between a real component and the real API server,
//! and running the built plugin: `kubectl proxy`, then a small plain-HTTP
//! [`forwarder`] that holds, rewrites, delays or drops one kind of request
//! or response (the adversarial reviews use it; every component and the
//! API server stay the real ones).

use serde_json::Value;

pub async fn kubectl_proxy() -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(hereabouts_kit::kubeconfig_path())
        .args(["proxy", "--port=0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl proxy");
    let mut line = String::new();
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).await.expect("kubectl proxy port");
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl proxy said {line:?}"));
    (child, port)
}

/// A kubeconfig for a plain-HTTP API server on loopback `port`, whose
/// context namespace is `ns`.
pub fn plain_kubeconfig(name: &str, port: u16, ns: &str) -> std::path::PathBuf {
    let path = hereabouts_kit::local_dir().join("kubeconfigs").join(name);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: p, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: p, user: {{}}}}]\ncontexts: [{{name: p, context: {{cluster: p, user: p, namespace: {ns}}}}}]\n\
             current-context: p\n"
        ),
    )
    .expect("kubeconfig");
    path
}

/// What a [`forwarder`] does with what the server sends on a connection.
pub enum Down {
    /// Forward it now.
    Pass,
    /// Forward it this much later (in order: a response falling behind).
    Delay(std::time::Duration),
    /// Throw it away (a watch goes quiet).
    Drop,
    /// Close the connection (a watch breaks).
    Close,
}

/// The bytes a request chunk is forwarded as, when its hold is over.
pub type Held = std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>>;

/// Forwards the chunk at once, unchanged.
pub fn at_once(chunk: Vec<u8>) -> Held {
    Box::pin(std::future::ready(chunk))
}

/// A plain-HTTP forwarder on a loopback port (returned) to `upstream` (a
/// `kubectl proxy`). `request(connection, request line, chunk)` sees each
/// chunk a client sends that starts a request and returns the bytes to
/// send on (the same, or rewritten) when it is ready to let them go (it
/// may hold them); `response(connection, its last request line)` decides
/// about each chunk the server sends back, and is asked at least every
/// 100 ms while the server is silent (so [`Down::Close`] can break a quiet
/// watch). Connections are numbered from 1.
pub async fn forwarder<Q, R>(upstream: u16, request: Q, response: R) -> u16
where
    Q: Fn(u64, &str, Vec<u8>) -> Held + Send + Sync + 'static,
    R: Fn(u64, &str) -> Down + Send + Sync + 'static,
{
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    let (request, response) = (Arc::new(request), Arc::new(response));
    tokio::spawn(async move {
        let mut connections = 0u64;
        while let Ok((client, _)) = listener.accept().await {
            connections += 1;
            let conn = connections;
            let (request, response) = (request.clone(), response.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let line = Arc::new(Mutex::new(String::new()));
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let last = line.clone();
                let up = async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let mut bytes = buf[..n].to_vec();
                        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                        let first = String::from_utf8_lossy(first).trim_end().to_owned();
                        if first.ends_with(" HTTP/1.1") {
                            last.lock().expect("line").clone_from(&first);
                            bytes = request(conn, &first, bytes).await;
                        }
                        if server_write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                };
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                let down = async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let read = tokio::time::timeout(
                            std::time::Duration::from_millis(100),
                            server_read.read(&mut buf),
                        )
                        .await;
                        let shape = response(conn, &line.lock().expect("line"));
                        let n = match (read, &shape) {
                            (_, Down::Close) | (Ok(Ok(0) | Err(_)), _) => break,
                            (Err(_), _) => continue,
                            (Ok(Ok(n)), _) => n,
                        };
                        let delay = match shape {
                            Down::Drop => continue,
                            Down::Delay(d) => d,
                            Down::Pass | Down::Close => std::time::Duration::ZERO,
                        };
                        if tx
                            .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                };
                let deliver = async move {
                    while let Some((at, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(at).await;
                        if client_write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    let _ = client_write.shutdown().await;
                };
                tokio::select! {
                    () = up => {}
                    ((), ()) = async { tokio::join!(down, deliver) } => {}
                }
            });
        }
    });
    port
}

/// A forwarder whose pod watches go quiet while `stall` is set.
pub async fn stalling_pod_watch(
    upstream: u16,
    stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::Ordering;
    forwarder(
        upstream,
        |_, _, chunk| at_once(chunk),
        move |_, line| {
            let pod_watch =
                line.starts_with("GET ") && line.contains("/pods?") && line.contains("watch=true");
            if pod_watch && stall.load(Ordering::SeqCst) {
                Down::Drop
            } else {
                Down::Pass
            }
        },
    )
    .await
}

/// A forwarder to `upstream` able to open a gap in the watches `watched`
/// picks out (by their request line) that ends in a relist: while `stall`
/// is set such a watch's bytes are dropped (it goes quiet); `cut` then
/// closes that connection, and the next such watch is sent with
/// `resourceVersion=1`, which the real API server answers 410 Gone ("too
/// old resource version"), as it does for a watch that was down longer
/// than its cache's history, so the watcher lists again.
pub async fn gap_in_watch(
    upstream: u16,
    watched: fn(&str) -> bool,
    stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    expire_next: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::Ordering;
    // Connections whose watch started after the cut: they stay.
    let after_cut = std::sync::Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<u64>::new(),
    ));
    let after = after_cut.clone();
    let cut_up = cut.clone();
    forwarder(
        upstream,
        move |conn, line, chunk| {
            if !watched(line) {
                return at_once(chunk);
            }
            if cut_up.load(Ordering::SeqCst) {
                after.lock().expect("set").insert(conn);
            }
            let Some(at) = line
                .find("resourceVersion=")
                .filter(|_| expire_next.swap(false, Ordering::SeqCst))
            else {
                return at_once(chunk);
            };
            let from = at + "resourceVersion=".len();
            let to = line[from..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(line.len(), |i| from + i);
            let rewritten = format!("{}1{}", &line[..from], &line[to..]);
            eprintln!("gap proxy: {line} -> {rewritten}");
            let mut out = rewritten.into_bytes();
            out.extend_from_slice(&chunk[line.len()..]);
            at_once(out)
        },
        move |conn, line| {
            if !watched(line) || after_cut.lock().expect("set").contains(&conn) {
                Down::Pass
            } else if cut.load(Ordering::SeqCst) {
                Down::Close
            } else if stall.load(Ordering::SeqCst) {
                Down::Drop
            } else {
                Down::Pass
            }
        },
    )
    .await
}

/// One request held until released: armed, seen, let go.
#[derive(Default)]
pub struct Hold {
    pub armed: std::sync::atomic::AtomicBool,
    pub seen: std::sync::atomic::AtomicBool,
    pub go: std::sync::atomic::AtomicBool,
    /// The status line the API server answered the held request with.
    pub answer: std::sync::Mutex<Option<String>>,
}

impl Hold {
    /// Until the held request has reached the forwarder.
    pub async fn wait_seen(&self, what: &str) {
        hereabouts_kit::eventually(what, 20, || async {
            self.seen
                .load(std::sync::atomic::Ordering::SeqCst)
                .then_some(())
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: never sent"));
    }

    /// The API server's answer to the held request, once it came.
    pub async fn answered(&self, what: &str) -> String {
        hereabouts_kit::eventually(what, 20, || async {
            self.answer.lock().expect("answer").clone()
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"))
    }
}

/// A request hook holding, while `hold` is armed, the first `method`
/// request on exactly `path` (query left out) until `hold.go`.
pub fn holding(
    method: &'static str,
    path: String,
    hold: std::sync::Arc<Hold>,
) -> impl Fn(u64, &str, Vec<u8>) -> Held + Send + Sync + 'static {
    move |_, line, chunk| {
        let target = line.split(' ').nth(1).unwrap_or_default();
        let target = target.split('?').next().unwrap_or_default();
        let ours = line.starts_with(&format!("{method} ")) && target == path;
        if !ours
            || !hold.armed.load(std::sync::atomic::Ordering::SeqCst)
            || hold.seen.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return at_once(chunk);
        }
        let hold = hold.clone();
        Box::pin(async move {
            // At most 60 s, the API server's own request timeout.
            for _ in 0..1200 {
                if hold.go.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            chunk
        })
    }
}

/// Output of one plugin run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
}

pub fn plugin(env: &[(String, String)], stdin: &Value) -> Run {
    let out = hereabouts_kit::plugin::call(
        std::path::Path::new(env!("CARGO_BIN_EXE_hereabouts")),
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &stdin.to_string(),
    )
    .expect("plugin output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// The CNI environment of (pod, net1) in sandbox `container`.
pub fn cni_env(
    command: &str,
    ns: &str,
    pod: &(String, String),
    container: &str,
) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", command.to_owned()),
        ("CNI_CONTAINERID", container.to_owned()),
        ("CNI_NETNS", "/var/run/netns/unused".to_owned()),
        ("CNI_IFNAME", "net1".to_owned()),
        ("CNI_PATH", "/usr/lib/cni".to_owned()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=true;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={};K8S_POD_UID={};K8S_POD_INFRA_CONTAINER_ID={container}",
                pod.0, pod.1
            ),
        ),
        ("NODENAME", "simulated".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
