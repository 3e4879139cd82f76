//! Shaping the timing between a real component and the real API server,
//! and running the built plugin: `kubectl proxy`, then small plain-HTTP
//! forwarders that hold one kind of request (the adversarial reviews use
//! them; every component and the API server stay the real ones).

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

pub async fn stalling_pod_watch(
    upstream: u16,
    stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u16 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let stall = stall.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let pod_watch = std::sync::Arc::new(AtomicBool::new(false));
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let watching = pod_watch.clone();
                let up = async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let line = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
                        if line.starts_with(b"GET ") {
                            let text = String::from_utf8_lossy(line);
                            watching.store(
                                text.contains("/pods?") && text.contains("watch=true"),
                                Ordering::SeqCst,
                            );
                        }
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async move {
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if pod_watch.load(Ordering::SeqCst) && stall.load(Ordering::SeqCst) {
                            continue; // the watch goes quiet
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(up, down);
            });
        }
    });
    port
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
