//! The node installer (`hereabouts-install`, the node DaemonSet's
//! container): puts the CNI plugin into the host's CNI bin dir, with the
//! direct plugin beside it (`hereabouts-direct`, which the plugin runs when
//! no node agent answers), and gives them what they need on the host:
//!
//! - `<cni conf dir>/hereabouts.d/hereabouts.kubeconfig` (mode 0600): the
//!   API server, its CA and this pod's projected service-account token, with
//!   the context namespace set to where the pools live (the plugin reads
//!   pools there);
//! - `<cni conf dir>/hereabouts.d/nodename`: the node's name, which the
//!   plugin writes into its claims.
//!
//! The kubelet rotates the token (it rewrites the projected file before the
//! token expires), so the installer keeps looking and rewrites the
//! kubeconfig whenever what it would write changes. Every write goes to a
//! temporary file in the same directory and is renamed into place: a plugin
//! starting at any moment reads the old file or the new one, never half of
//! one, and a plugin binary being executed is never overwritten in place.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use hereabouts_plugin::DIRECT_PLUGIN;

/// The directory under the CNI configuration dir that holds the plugin's
/// files.
pub const CONFIG_DIR: &str = "hereabouts.d";
pub const KUBECONFIG_FILE: &str = "hereabouts.kubeconfig";
pub const NODENAME_FILE: &str = "nodename";

const BINARY_MODE: u32 = 0o755;
const KUBECONFIG_MODE: u32 = 0o600;
const NODENAME_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("rendering the kubeconfig: {0}")]
    Render(#[from] serde_yaml::Error),
}

impl Error {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    }
}

/// What the installer is told (flags and the pod's environment).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The plugin binary to install (inside the image).
    pub plugin: PathBuf,
    /// The direct plugin (inside the image), installed beside it as
    /// `hereabouts-direct`: what the plugin runs when no agent answers.
    pub direct_plugin: PathBuf,
    /// The names to install it under, e.g. `hereabouts` (and `whereabouts`
    /// to take over NADs that still say `"type": "whereabouts"`).
    pub install_as: Vec<String>,
    /// The host's CNI bin dir as mounted in the pod.
    pub cni_bin_dir: PathBuf,
    /// The host's CNI configuration dir as mounted in the pod.
    pub cni_conf_dir: PathBuf,
    /// The projected service-account token.
    pub token_file: PathBuf,
    /// The API server's CA bundle (PEM).
    pub ca_file: PathBuf,
    /// `https://host:port` of the API server, as the host reaches it.
    pub server: String,
    /// Where the pools live: the kubeconfig context's namespace.
    pub namespace: String,
    pub node_name: String,
}

impl Settings {
    /// Checks what the flags cannot: names that fit in a file name,
    /// non-empty node and namespace.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field, reason: &str| Error::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if self.install_as.is_empty() {
            return Err(invalid("--install-as", "at least one name is needed"));
        }
        for name in &self.install_as {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(Error::Invalid {
                    field: "--install-as",
                    reason: format!("{name:?} is not a plain file name"),
                });
            }
            if name == DIRECT_PLUGIN {
                return Err(Error::Invalid {
                    field: "--install-as",
                    reason: format!("{name:?} is the direct plugin's own name"),
                });
            }
        }
        if self.node_name.trim().is_empty() {
            return Err(invalid(
                "--node-name (NODE_NAME)",
                "empty; the DaemonSet sets it from spec.nodeName",
            ));
        }
        if self.namespace.trim().is_empty() {
            return Err(invalid(
                "--namespace (HEREABOUTS_NAMESPACE)",
                "empty; the DaemonSet sets it from metadata.namespace",
            ));
        }
        if !self.server.starts_with("https://") {
            return Err(Error::Invalid {
                field: "--api-server",
                reason: format!("{:?} is not an https:// URL", self.server),
            });
        }
        Ok(())
    }

    pub fn config_dir(&self) -> PathBuf {
        self.cni_conf_dir.join(CONFIG_DIR)
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.config_dir().join(KUBECONFIG_FILE)
    }

    pub fn nodename_path(&self) -> PathBuf {
        self.config_dir().join(NODENAME_FILE)
    }
}

/// The API server URL: `explicit` when given, else the in-cluster service
/// address from `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
pub fn api_server(
    explicit: Option<&str>,
    service_host: Option<&str>,
    service_port: Option<u16>,
) -> Result<String, Error> {
    if let Some(url) = explicit.filter(|u| !u.is_empty()) {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    match (service_host.filter(|h| !h.is_empty()), service_port) {
        (Some(host), Some(port)) if host.contains(':') => Ok(format!("https://[{host}]:{port}")),
        (Some(host), Some(port)) => Ok(format!("https://{host}:{port}")),
        _ => Err(Error::Invalid {
            field: "--api-server",
            reason: "not set, and KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not \
                     both in the environment"
                .to_owned(),
        }),
    }
}

/// The plugin's kubeconfig: one cluster, one token user, one context whose
/// namespace is where the pools live.
pub fn kubeconfig(
    server: &str,
    ca_pem: &[u8],
    token: &str,
    namespace: &str,
) -> Result<String, Error> {
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "hereabouts",
            "cluster": {
                "server": server,
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
        }],
        "users": [{"name": "hereabouts-node", "user": {"token": token}}],
        "contexts": [{
            "name": "hereabouts",
            "context": {"cluster": "hereabouts", "user": "hereabouts-node", "namespace": namespace},
        }],
        "current-context": "hereabouts",
    });
    let body = serde_yaml::to_string(&document)?;
    Ok(format!(
        "# Written by hereabouts-install from its service-account token; rewritten when the token rotates.\n{body}"
    ))
}

/// Writes `contents` to `path` with `mode` unless the file already holds
/// exactly that; true when it wrote.
fn write_if_changed(
    path: &Path,
    contents: &[u8],
    mode: u32,
    what: &'static str,
) -> Result<bool, Error> {
    let current_mode = std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    if current_mode == Some(mode) && std::fs::read(path).ok().as_deref() == Some(contents) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    // A leftover from a crash might have a wider mode: never reuse it.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io(what, &tmp))?;
    file.write_all(contents).map_err(Error::io(what, &tmp))?;
    file.sync_all().map_err(Error::io(what, &tmp))?;
    // The umask may have narrowed the mode given at creation.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io(what, &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(what, path)(e)
    })?;
    Ok(true)
}

fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(Error::io("setting the mode of", dir))
}

/// Copies the plugin binary into the CNI bin dir under each name; returns
/// the files it (re)wrote.
pub fn install_plugin(settings: &Settings) -> Result<Vec<PathBuf>, Error> {
    let binary = std::fs::read(&settings.plugin)
        .map_err(Error::io("reading the plugin binary", &settings.plugin))?;
    let direct = std::fs::read(&settings.direct_plugin).map_err(Error::io(
        "reading the direct plugin binary",
        &settings.direct_plugin,
    ))?;
    std::fs::create_dir_all(&settings.cni_bin_dir)
        .map_err(Error::io("creating the CNI bin dir", &settings.cni_bin_dir))?;
    let mut written = Vec::new();
    // The direct plugin first: a plugin is never there without it.
    let target = settings.cni_bin_dir.join(DIRECT_PLUGIN);
    if write_if_changed(
        &target,
        &direct,
        BINARY_MODE,
        "installing the direct plugin as",
    )? {
        written.push(target);
    }
    for name in &settings.install_as {
        let target = settings.cni_bin_dir.join(name);
        if write_if_changed(&target, &binary, BINARY_MODE, "installing the plugin as")? {
            written.push(target);
        }
    }
    Ok(written)
}

/// Writes the node name and the kubeconfig from the current token and CA;
/// returns the files it (re)wrote.
pub fn sync_credentials(settings: &Settings) -> Result<Vec<PathBuf>, Error> {
    let token = std::fs::read_to_string(&settings.token_file).map_err(Error::io(
        "reading the service-account token",
        &settings.token_file,
    ))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::Invalid {
            field: "--token-file",
            reason: format!("{} is empty", settings.token_file.display()),
        });
    }
    let ca = std::fs::read(&settings.ca_file)
        .map_err(Error::io("reading the CA bundle", &settings.ca_file))?;
    ensure_dir(&settings.config_dir())?;
    let mut written = Vec::new();
    let nodename = settings.nodename_path();
    let node = format!("{}\n", settings.node_name.trim());
    if write_if_changed(&nodename, node.as_bytes(), NODENAME_MODE, "writing")? {
        written.push(nodename);
    }
    let path = settings.kubeconfig_path();
    let config = kubeconfig(&settings.server, &ca, token, &settings.namespace)?;
    if write_if_changed(&path, config.as_bytes(), KUBECONFIG_MODE, "writing")? {
        written.push(path);
    }
    Ok(written)
}

/// Installs everything, then (unless `once`) keeps the credentials current
/// every `interval` until `shutdown`. A failed refresh is logged and tried
/// again: the plugin keeps the last good kubeconfig meanwhile.
pub async fn run(
    settings: &Settings,
    once: bool,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    settings.validate()?;
    for path in install_plugin(settings)? {
        tracing::info!(path = %path.display(), "installed the CNI plugin");
    }
    for path in sync_credentials(settings)? {
        tracing::info!(path = %path.display(), "wrote");
    }
    if once {
        return Ok(());
    }
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut shutdown => return Ok(()),
        }
        match sync_credentials(settings) {
            Ok(written) => {
                for path in written {
                    tracing::info!(path = %path.display(), "credentials changed; rewrote");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "refreshing the plugin's credentials failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("hereabouts-install-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn settings(root: &Path) -> Settings {
        let image = root.join("image");
        std::fs::create_dir_all(&image).expect("image dir");
        std::fs::write(image.join("hereabouts"), b"\x7fELF plugin v1").expect("plugin");
        std::fs::write(image.join(DIRECT_PLUGIN), b"\x7fELF direct v1").expect("direct");
        std::fs::write(image.join("token"), "token-one\n").expect("token");
        std::fs::write(image.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").expect("ca");
        Settings {
            plugin: image.join("hereabouts"),
            direct_plugin: image.join(DIRECT_PLUGIN),
            install_as: vec!["hereabouts".to_owned()],
            cni_bin_dir: root.join("host/opt/cni/bin"),
            cni_conf_dir: root.join("host/etc/cni/net.d"),
            token_file: image.join("token"),
            ca_file: image.join("ca.crt"),
            server: "https://10.96.0.1:443".to_owned(),
            namespace: "kube-system".to_owned(),
            node_name: "node-a".to_owned(),
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn paths_are_where_the_plugin_looks() {
        let s = Settings {
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            ..settings(&TempDir::new("paths").0)
        };
        assert_eq!(
            s.kubeconfig_path(),
            Path::new(crate::cni::verbs::DEFAULT_KUBECONFIG)
        );
        assert_eq!(
            s.nodename_path(),
            Path::new(hereabouts_plugin::env::NODENAME_FILE)
        );
    }

    #[test]
    fn installs_plugin_kubeconfig_and_node_name() {
        let tmp = TempDir::new("install");
        let s = settings(&tmp.0);
        s.validate().expect("valid");
        let installed = install_plugin(&s).expect("install");
        let target = s.cni_bin_dir.join("hereabouts");
        let direct = s.cni_bin_dir.join(DIRECT_PLUGIN);
        assert_eq!(installed, vec![direct.clone(), target.clone()]);
        assert_eq!(std::fs::read(&target).expect("read"), b"\x7fELF plugin v1");
        assert_eq!(std::fs::read(&direct).expect("read"), b"\x7fELF direct v1");
        assert_eq!(mode(&target), 0o755);
        assert_eq!(mode(&direct), 0o755);

        let written = sync_credentials(&s).expect("credentials");
        assert_eq!(written, vec![s.nodename_path(), s.kubeconfig_path()]);
        assert_eq!(
            std::fs::read_to_string(s.nodename_path()).expect("nodename"),
            "node-a\n"
        );
        assert_eq!(mode(&s.kubeconfig_path()), 0o600);
        let config = kube::config::Kubeconfig::read_from(s.kubeconfig_path()).expect("parse");
        let context = config.contexts[0].context.as_ref().expect("context");
        assert_eq!(context.namespace.as_deref(), Some("kube-system"));
        assert_eq!(config.current_context.as_deref(), Some("hereabouts"));
        let cluster = config.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://10.96.0.1:443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==")
        );
        let text = std::fs::read_to_string(s.kubeconfig_path()).expect("kubeconfig");
        assert!(text.contains("token: token-one\n"), "{text}");
        // Nothing but the files the plugin reads is left behind.
        let mut names: Vec<_> = std::fs::read_dir(s.config_dir())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["hereabouts.kubeconfig", "nodename"]);
    }

    #[test]
    fn rewrites_only_what_changed() {
        let tmp = TempDir::new("rotate");
        let s = settings(&tmp.0);
        install_plugin(&s).expect("install");
        sync_credentials(&s).expect("first");
        assert!(install_plugin(&s).expect("again").is_empty());
        assert!(sync_credentials(&s).expect("unchanged").is_empty());

        // The kubelet rotates the token.
        std::fs::write(&s.token_file, "token-two").expect("rotate");
        assert_eq!(
            sync_credentials(&s).expect("rotated"),
            vec![s.kubeconfig_path()]
        );
        let text = std::fs::read_to_string(s.kubeconfig_path()).expect("kubeconfig");
        assert!(text.contains("token: token-two\n"), "{text}");

        // Someone widened the kubeconfig's mode: put it back.
        std::fs::set_permissions(s.kubeconfig_path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert_eq!(
            sync_credentials(&s).expect("mode"),
            vec![s.kubeconfig_path()]
        );
        assert_eq!(mode(&s.kubeconfig_path()), 0o600);

        // A new image brings a new plugin binary.
        std::fs::write(&s.plugin, b"\x7fELF plugin v2").expect("upgrade");
        assert_eq!(
            install_plugin(&s).expect("upgrade"),
            vec![s.cni_bin_dir.join("hereabouts")]
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let tmp = TempDir::new("refuse");
        let good = settings(&tmp.0);
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    install_as: vec!["../evil".to_owned()],
                    ..good.clone()
                },
                "--install-as",
            ),
            (
                Settings {
                    install_as: vec![DIRECT_PLUGIN.to_owned()],
                    ..good.clone()
                },
                "--install-as",
            ),
            (
                Settings {
                    node_name: " ".to_owned(),
                    ..good.clone()
                },
                "--node-name",
            ),
            (
                Settings {
                    namespace: String::new(),
                    ..good.clone()
                },
                "--namespace",
            ),
            (
                Settings {
                    server: "http://10.96.0.1".to_owned(),
                    ..good.clone()
                },
                "--api-server",
            ),
        ];
        for (settings, field) in cases {
            let e = settings.validate().expect_err(field).to_string();
            assert!(e.starts_with(field), "{e}");
        }
        std::fs::write(&good.token_file, "\n").expect("empty token");
        let e = sync_credentials(&good)
            .expect_err("empty token")
            .to_string();
        assert!(e.starts_with("--token-file"), "{e}");
        let missing = Settings {
            ca_file: tmp.0.join("nope"),
            ..settings(&tmp.0)
        };
        let e = sync_credentials(&missing).expect_err("no CA").to_string();
        assert!(
            e.contains("reading the CA bundle") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn api_server_from_flag_or_service_environment() {
        assert_eq!(
            api_server(
                Some("https://api.example:6443/"),
                Some("10.96.0.1"),
                Some(443)
            )
            .ok(),
            Some("https://api.example:6443".to_owned())
        );
        assert_eq!(
            api_server(None, Some("10.96.0.1"), Some(443)).ok(),
            Some("https://10.96.0.1:443".to_owned())
        );
        assert_eq!(
            api_server(None, Some("fd00::1"), Some(443)).ok(),
            Some("https://[fd00::1]:443".to_owned())
        );
        let e = api_server(None, None, Some(443)).expect_err("no host");
        assert!(e.to_string().starts_with("--api-server"), "{e}");
    }
}
