//! The plugin's side of the socket, in blocking std I/O: connecting to a
//! unix socket and exchanging two small JSON documents needs no async
//! runtime, no TLS and no kube client, so none is started here.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::env::Environment;
use crate::protocol::{self, FlatFile, Request, Response};

/// How long ADD waits for the allocator unless `request_timeout` says (the
/// direct path's default too).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a verb other than ADD may take the agent: a DEL, CHECK, GC or
/// STATUS is a few API calls (the agent and the direct path give such a
/// verb up after that long).
pub const VERB_TIMEOUT: Duration = Duration::from_secs(20);
/// Room beyond that for the agent's own API calls.
const AGENT_MARGIN: Duration = Duration::from_secs(10);

/// How long the plugin waits for the agent before it takes the direct path
/// itself: an ADD the `request_timeout` it asked for (by then a working
/// agent has answered, "try again later" if nothing else), any other verb
/// [`VERB_TIMEOUT`], each plus [`AGENT_MARGIN`]. An agent that is alive but
/// hung (stopped, deadlocked) accepts connections and answers nothing: the
/// node must not stall on it.
fn answer_timeout(
    environment: &Environment,
    config: &Value,
    flat_file: Option<&FlatFile>,
) -> Duration {
    if environment.command.as_deref() != Some("ADD") {
        return VERB_TIMEOUT + AGENT_MARGIN;
    }
    let asked = [Some(&config["ipam"]), flat_file.map(|f| &f.value)]
        .into_iter()
        .flatten()
        .find_map(|o| o.get("request_timeout"));
    asked
        .and_then(|v| {
            hereabouts_core::duration::from_json(
                "ipam.request_timeout",
                v,
                hereabouts_core::duration::REQUEST_TIMEOUT,
            )
            .ok()
        })
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
        + AGENT_MARGIN
}

/// What asking the agent came to.
#[derive(Debug)]
pub enum Asked {
    /// The agent answered: print this.
    Answer {
        stdout: Option<Value>,
        success: bool,
    },
    /// No answer (no socket, refused, gone mid-request, not this agent's
    /// request): take the direct path. The reason is for the log.
    Direct(String),
}

/// The socket to try: `HEREABOUTS_AGENT_SOCKET`, else the configuration's
/// `ipam.agent_socket`, else [`protocol::DEFAULT_SOCKET`].
pub fn socket_path(from_env: Option<&str>, config: &Value) -> PathBuf {
    from_env
        .filter(|p| !p.is_empty())
        .or_else(|| {
            config["ipam"][protocol::SOCKET_KEY]
                .as_str()
                .filter(|p| !p.is_empty())
        })
        .map_or_else(|| PathBuf::from(protocol::DEFAULT_SOCKET), PathBuf::from)
}

/// The node this plugin runs on, as the direct path decides it: `NODENAME`,
/// then the installer's file, then the host name.
pub fn node_name(environment: &Environment) -> Option<String> {
    environment
        .node_name
        .clone()
        .or_else(|| std::fs::read_to_string(crate::env::NODENAME_FILE).ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

/// Asks the agent at `socket` to run this invocation.
pub fn ask(socket: &std::path::Path, environment: &Environment, stdin: &[u8]) -> Asked {
    let direct = |why: String| Asked::Direct(why);
    let Ok(text) = std::str::from_utf8(stdin) else {
        return direct("stdin is not UTF-8".to_owned());
    };
    let Ok(config) = serde_json::from_str::<Value>(text) else {
        // The direct path names what is wrong with it, without the API.
        return direct("stdin is not JSON".to_owned());
    };
    let flat_file = match flat_file(&config) {
        Ok(f) => f,
        Err(why) => return direct(why),
    };
    let timeout = answer_timeout(environment, &config, flat_file.as_ref());
    let mut env = environment.clone();
    env.node_name = node_name(environment);
    let request = Request {
        version: protocol::VERSION,
        env,
        stdin: text.to_owned(),
        flat_file,
    };
    let Ok(body) = serde_json::to_vec(&request) else {
        return direct("cannot encode the request".to_owned());
    };
    if body.len() > protocol::MAX_REQUEST {
        return direct("the request is larger than the agent reads".to_owned());
    }
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return direct(format!("{}: {e}", socket.display())),
    };
    let sent = stream
        .write_all(&body)
        .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
        .and_then(|()| stream.set_read_timeout(Some(timeout)));
    if let Err(e) = sent {
        return direct(format!("sending to {}: {e}", socket.display()));
    }
    let mut answer = Vec::new();
    let read = stream
        .take(protocol::MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut answer);
    match read {
        // Hung: the direct path repeats the verb beside it, which is safe
        // (ADD and DEL are idempotent per attachment; both wait on the same
        // claim).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return direct(format!(
                "the node agent at {} did not answer within {timeout:?}",
                socket.display()
            ));
        }
        Err(e) => return direct(format!("reading from {}: {e}", socket.display())),
        Ok(_) => {}
    }
    match serde_json::from_slice::<Response>(&answer) {
        Ok(Response::Answer { stdout, success }) => Asked::Answer { stdout, success },
        Ok(Response::NotServed { reason }) => direct(reason),
        // Empty or cut short: the agent went away mid-request. What it did
        // is in the API server; the direct path repeats the verb, which is
        // idempotent.
        Err(e) => direct(format!("no whole answer from {}: {e}", socket.display())),
    }
}

/// The flat file as the direct path would read it.
fn flat_file(config: &Value) -> Result<Option<FlatFile>, String> {
    let own = config["ipam"]["configuration_path"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let paths: Vec<PathBuf> = own
        .into_iter()
        .chain(
            hereabouts_core::config::DEFAULT_FLAT_FILE_PATHS
                .iter()
                .map(PathBuf::from),
        )
        .collect();
    match hereabouts_core::read_flat_file(&paths) {
        Ok(found) => Ok(found.map(|(path, value)| FlatFile {
            path: path.display().to_string(),
            value,
        })),
        // The direct path reports it with its code.
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_comes_from_the_environment_then_the_configuration() {
        let config = serde_json::json!({"ipam": {"agent_socket": "/run/x.sock"}});
        assert_eq!(
            socket_path(Some("/tmp/a.sock"), &config),
            PathBuf::from("/tmp/a.sock")
        );
        assert_eq!(socket_path(None, &config), PathBuf::from("/run/x.sock"));
        assert_eq!(
            socket_path(Some(""), &serde_json::json!({"ipam": {}})),
            PathBuf::from(protocol::DEFAULT_SOCKET)
        );
    }

    #[test]
    fn a_hung_agent_is_waited_for_as_long_as_the_verb_may_take() {
        let env = |command: &str| Environment {
            command: Some(command.into()),
            ..Environment::default()
        };
        let nad = |ipam: Value| serde_json::json!({"ipam": ipam});
        let flat = FlatFile {
            path: "/etc/cni/net.d/whereabouts.d/whereabouts.conf".to_owned(),
            value: serde_json::json!({"request_timeout": "5s"}),
        };
        assert_eq!(
            answer_timeout(&env("ADD"), &nad(serde_json::json!({})), None),
            DEFAULT_REQUEST_TIMEOUT + AGENT_MARGIN
        );
        assert_eq!(
            answer_timeout(
                &env("ADD"),
                &nad(serde_json::json!({"request_timeout": "2s"})),
                Some(&flat)
            ),
            Duration::from_secs(2) + AGENT_MARGIN,
            "the NAD's value first"
        );
        assert_eq!(
            answer_timeout(&env("ADD"), &nad(serde_json::json!({})), Some(&flat)),
            Duration::from_secs(5) + AGENT_MARGIN,
            "then the flat file's"
        );
        assert_eq!(
            answer_timeout(
                &env("ADD"),
                &nad(serde_json::json!({"request_timeout": 1e300})),
                None
            ),
            DEFAULT_REQUEST_TIMEOUT + AGENT_MARGIN,
            "a value out of bounds (the direct path refuses it) waits the default"
        );
        for verb in ["DEL", "CHECK", "GC", "STATUS"] {
            assert_eq!(
                answer_timeout(
                    &env(verb),
                    &nad(serde_json::json!({"request_timeout": 3600})),
                    None
                ),
                VERB_TIMEOUT + AGENT_MARGIN,
                "{verb}"
            );
        }
    }

    #[test]
    fn no_socket_means_the_direct_path() {
        let env = Environment {
            command: Some("ADD".into()),
            ..Environment::default()
        };
        let missing = std::env::temp_dir().join(format!("hb-no-agent-{}.sock", std::process::id()));
        match ask(&missing, &env, br#"{"cniVersion":"1.0.0","ipam":{}}"#) {
            Asked::Direct(why) => assert!(why.contains("hb-no-agent"), "{why}"),
            other => panic!("expected the direct path, got {other:?}"),
        }
        // A socket file nobody listens on (an agent that died): refused.
        let stale =
            std::env::temp_dir().join(format!("hb-stale-agent-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&stale);
        drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
        assert!(matches!(
            ask(&stale, &env, br#"{"cniVersion":"1.0.0","ipam":{}}"#),
            Asked::Direct(_)
        ));
        let _ = std::fs::remove_file(&stale);
    }
}
