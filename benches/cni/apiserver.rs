//! The API server's own count of the requests it served
//! (`apiserver_request_total` on its `/metrics`), by verb and resource,
//! read before and after a phase: what each system asks of the API server
//! per call. The difference holds every client's requests during the phase
//! (the system's plugins and controllers, and the kit's garbage collector);
//! the harness itself sends none between the two reads.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::ListParams;

/// Requests served so far, by "VERB resource" ("resource/subresource" for a
/// subresource; "VERB -" for a request outside any resource).
#[derive(Clone, Debug, Default)]
pub struct Requests(BTreeMap<String, f64>);

impl Requests {
    /// Reads the counters; empty if the API server would not say (the
    /// phase then reports no requests rather than wrong ones).
    pub async fn read(client: &Client) -> Self {
        let request = kube::core::Request::new("/metrics").list(&ListParams::default());
        let Ok(request) = request else {
            return Requests::default();
        };
        match client.request_text(request).await {
            Ok(text) => Requests(parse(&text)),
            Err(e) => {
                eprintln!("[bench] the API server's /metrics could not be read: {e}");
                Requests::default()
            }
        }
    }

    /// Requests since `before`, per call of a phase of `calls` calls.
    pub fn per_call_since(&self, before: &Requests, calls: usize) -> BTreeMap<String, f64> {
        if self.0.is_empty() || before.0.is_empty() {
            return BTreeMap::new();
        }
        let calls = calls.max(1) as f64;
        self.0
            .iter()
            .filter_map(|(key, now)| {
                let mut grew = now - before.0.get(key).copied().unwrap_or(0.0);
                if key == "GET -" {
                    // The GET of /metrics that read `before` (a request is
                    // counted once it is answered).
                    grew -= 1.0;
                }
                (grew > 0.0).then(|| (key.clone(), grew / calls))
            })
            .collect()
    }
}

/// Sums `apiserver_request_total` samples by verb and resource.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |name: &str| -> &str {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map_or("", |v| v.trim_end_matches('"'))
        };
        let resource = match (label("resource"), label("subresource")) {
            ("", _) => "-".to_owned(),
            (r, "") => r.to_owned(),
            (r, s) => format!("{r}/{s}"),
        };
        *out.entry(format!("{} {resource}", label("verb")))
            .or_insert(0.0) += value;
    }
    out
}

/// Per-call requests summed by verb (GET, LIST, POST, PUT, PATCH, DELETE,
/// WATCH, ...).
pub fn by_verb(per_call: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (key, n) in per_call {
        let verb = key.split_once(' ').map_or(key.as_str(), |(v, _)| v);
        *out.entry(verb.to_owned()).or_insert(0.0) += n;
    }
    out
}
