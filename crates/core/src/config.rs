//! IPAM configuration: the `ipam` section of a CNI network configuration,
//! with every whereabouts option, validated into [`IpamConfig`].
//!
//! Entry points:
//! - [`NetConf::parse`]: the full network configuration a CNI plugin reads
//!   on stdin (`cniVersion`, `name`, `type`, `ipam`, `runtimeConfig`, `args`).
//! - [`find_ipam_sections`]: the hereabouts/whereabouts sections of a NAD's
//!   `spec.config` (a single configuration or a conflist).
//! - [`NetConf::ipam_config`] / [`NetConf::ipam_config_merged`]: validation,
//!   optionally under a flat file ([`merge_flat_file`], [`read_flat_file`]).
//!
//! Options accepted and deliberately unused: `leader_lease_duration`,
//! `leader_renew_deadline`, `leader_retry_period` (whereabouts' plugin takes
//! a Lease on every ADD; hereabouts' plugin takes none, the controller
//! decides and commits with compare-and-swap), `node_slice_size` (whereabouts
//! pre-splits a range into per-node pools to spread write contention; the
//! hereabouts controller batches all pending requests of a pool into one
//! write instead), `sleep_for_race`, `datastore` and the `etcd_*` keys.
//! They are kept in [`IgnoredOptions`]; `node_slice_size` also raises a
//! warning, because whereabouts' per-node pools are not read.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use super::cidr::{Cidr, CidrError, Family, parse_ip};
use super::duration::{self, DurationError};
use super::json::{Obj, WrongType, describe, join};
use super::naming::{NamingError, PoolName, ReservationName, pool_name, reservation_name};
use super::range::{IpRange, RangeError, RangeFields};
pub use super::warning::ConfigWarning;

/// Where whereabouts looks for its flat configuration file, after the
/// NAD's own `configuration_path`.
pub const DEFAULT_FLAT_FILE_PATHS: &[&str] = &[
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
];

/// The most `ipRanges` one configuration takes: an attachment gets one
/// address from each, so this is far beyond any real network (dual-stack
/// needs two), and it bounds the pools one configuration can make.
pub const MAX_RANGES: usize = 64;

/// Why a configuration is refused. Every variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: not valid JSON: {reason}")]
    Json { field: String, reason: String },
    #[error("{field}: missing")]
    Missing { field: String },
    #[error("{field}: expected {expected}, found {found}")]
    WrongType {
        field: String,
        expected: &'static str,
        found: String,
    },
    #[error(
        "{field}: unknown IPAM type {}; expected \"hereabouts\" or \"whereabouts\"",
        crate::excerpt(.value)
    )]
    UnknownType { field: String, value: String },
    #[error("{field}: {} is not an IP address", crate::excerpt(.value))]
    InvalidIp { field: String, value: String },
    #[error("{field}: {source}")]
    InvalidCidr { field: String, source: CidrError },
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("{field}: {source}")]
    Naming { field: String, source: NamingError },
    #[error("{field}: no range to allocate from: give \"range\", \"ipRanges\" or \"addresses\"")]
    NoRange { field: String },
    #[error(
        "{field}: {cidr} is also the range of {other}; one attachment gets one address per range, so list it once"
    )]
    DuplicateRange {
        field: String,
        cidr: Cidr,
        other: String,
    },
    #[error("{field}: {count} entries; at most {max} are accepted")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("{path}: cannot use the flat configuration file: {reason}")]
    FlatFile { path: String, reason: String },
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error("{field} (value taken from the flat file {path}): {source}")]
    FromFlatFile {
        field: String,
        path: String,
        source: Box<ConfigError>,
    },
}

impl ConfigError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigError::Json { .. } => "invalid_json",
            ConfigError::Missing { .. } => "missing_field",
            ConfigError::WrongType { .. } => "wrong_type",
            ConfigError::UnknownType { .. } => "unknown_type",
            ConfigError::InvalidIp { .. } => "invalid_ip",
            ConfigError::InvalidCidr { .. } => "invalid_cidr",
            ConfigError::Range(e) => e.metric_label(),
            ConfigError::Naming { source, .. } => source.metric_label(),
            ConfigError::NoRange { .. } => "no_range",
            ConfigError::DuplicateRange { .. } => "duplicate_range",
            ConfigError::TooMany { .. } => "too_many_entries",
            ConfigError::FlatFile { .. } => "flat_file",
            ConfigError::Duration(e) => e.metric_label(),
            ConfigError::FromFlatFile { source, .. } => source.metric_label(),
        }
    }

    /// The configuration field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Json { field, .. }
            | ConfigError::Missing { field }
            | ConfigError::WrongType { field, .. }
            | ConfigError::UnknownType { field, .. }
            | ConfigError::InvalidIp { field, .. }
            | ConfigError::InvalidCidr { field, .. }
            | ConfigError::Naming { field, .. }
            | ConfigError::NoRange { field }
            | ConfigError::DuplicateRange { field, .. }
            | ConfigError::TooMany { field, .. }
            | ConfigError::FromFlatFile { field, .. } => field,
            ConfigError::Range(e) => e.field(),
            ConfigError::Duration(e) => e.field(),
            ConfigError::FlatFile { path, .. } => path,
        }
    }
}

impl From<WrongType> for ConfigError {
    fn from(e: WrongType) -> Self {
        ConfigError::WrongType {
            field: e.field,
            expected: e.expected,
            found: e.found,
        }
    }
}

/// The `ipam.type`: hereabouts' own name or whereabouts' (drop-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpamKind {
    Hereabouts,
    Whereabouts,
}

impl IpamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IpamKind::Hereabouts => "hereabouts",
            IpamKind::Whereabouts => "whereabouts",
        }
    }

    /// The kind named by an `ipam.type` value, if it is one of ours.
    pub fn from_type(s: &str) -> Option<Self> {
        match s {
            "hereabouts" => Some(IpamKind::Hereabouts),
            "whereabouts" => Some(IpamKind::Whereabouts),
            _ => None,
        }
    }
}

impl fmt::Display for IpamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route to give the pod, as in a CNI result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub dst: Cidr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Further CNI 1.1 route keys (`mtu`, `advmss`, `priority`, `table`,
    /// `scope`), passed through as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// DNS settings, as in a CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// An entry of `addresses`: returned in every result as given, never
/// reserved in a pool (whereabouts' behaviour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticAddress {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
}

/// `kubernetes.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub kubeconfig: Option<String>,
    pub k8s_api_root: Option<String>,
}

/// Options accepted for compatibility and not acted on (see the module
/// documentation for why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredOptions {
    pub leader_lease_duration: Option<i64>,
    pub leader_renew_deadline: Option<i64>,
    pub leader_retry_period: Option<i64>,
    pub node_slice_size: Option<String>,
    pub sleep_for_race: Option<i64>,
    pub datastore: Option<String>,
}

/// A network's `hold_released`: how an address released by a pod's
/// deletion is kept for a pod of the same name coming back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `"off"` (or `false`, or zero): no hold, only the cooldown.
    Off,
    /// A duration: pods whose name comes back (StatefulSet pods, pods
    /// without a controller) are held that long.
    For(std::time::Duration),
}

/// One range of a configuration, with its `IPPool` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeConfig {
    pub range: IpRange,
    pub pool_name: PoolName,
    /// Where it was configured, e.g. `ipam.range` or `ipam.ipRanges[0].range`.
    pub field: String,
}

/// A validated IPAM configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    pub kind: IpamKind,
    /// The network configuration's `cniVersion` (the list's, for a conflist).
    pub cni_version: Option<String>,
    /// The network configuration's `name`.
    pub name: Option<String>,
    /// The top-level `range` first, then `ipRanges` in order; an attachment
    /// gets one address from each.
    pub ranges: Vec<RangeConfig>,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    pub addresses: Vec<StaticAddress>,
    /// `network_name`; `None` for the unnamed network (also for `""`).
    pub network_name: Option<String>,
    /// `enable_overlapping_ranges`, true unless set to false.
    pub enable_overlapping_ranges: bool,
    pub kubernetes: KubernetesConfig,
    pub log_file: Option<String>,
    pub log_level: Option<String>,
    pub configuration_path: Option<String>,
    /// whereabouts' garbage-collection schedule, offered to the controller.
    pub reconciler_cron_expression: Option<String>,
    /// hereabouts' `request_timeout`: how long ADD waits for the allocator
    /// (within [`duration::REQUEST_TIMEOUT`]); `None` for the default.
    pub request_timeout: Option<std::time::Duration>,
    /// hereabouts' `hold_released`; `None` (unset, `"on"` or `true`): the
    /// controller's `--hold-released` for pods whose name comes back.
    pub hold_released: Option<Hold>,
    /// hereabouts' `release_cooldown` (`"off"` is zero); `None`: the
    /// controller's `--release-cooldown`.
    pub release_cooldown: Option<std::time::Duration>,
    pub ignored: IgnoredOptions,
    pub warnings: Vec<ConfigWarning>,
}

impl IpamConfig {
    /// Validates an `ipam` object; `path` names it in errors (`ipam`, or
    /// `plugins[1].ipam` inside a conflist).
    pub fn parse(ipam: &Value, path: &str) -> Result<Self, ConfigError> {
        let Value::Object(map) = ipam else {
            return Err(ConfigError::WrongType {
                field: path.to_owned(),
                expected: "an object",
                found: describe(ipam),
            });
        };
        parse_ipam(Obj::new(map, path))
    }

    /// The `OverlappingRangeIPReservation` name of `ip` in this network.
    pub fn reservation_name(&self, ip: IpAddr) -> Result<ReservationName, NamingError> {
        reservation_name(self.network_name.as_deref(), ip)
    }

    /// The gateway to put beside an address of `range`: `gateway` when it is
    /// of the same family (whereabouts puts it on every address).
    pub fn gateway_for(&self, range: &IpRange) -> Option<IpAddr> {
        self.gateway
            .filter(|gw| Family::of(*gw) == range.cidr().family())
    }
}

fn parse_ipam(o: Obj<'_>) -> Result<IpamConfig, ConfigError> {
    let type_field = o.field("type");
    let kind = match o.str("type")? {
        None => return Err(ConfigError::Missing { field: type_field }),
        Some(t) => IpamKind::from_type(t).ok_or_else(|| ConfigError::UnknownType {
            field: type_field,
            value: t.to_owned(),
        })?,
    };
    let mut warnings = Vec::new();

    let network_name = o.nonempty_str("network_name")?.map(str::to_owned);

    // Ranges: the top-level one first, then ipRanges (whereabouts' order).
    let mut ranges: Vec<RangeConfig> = Vec::new();
    let top_exclude = o.str_array("exclude")?;
    let top_start = o.nonempty_str("range_start")?;
    let top_end = o.nonempty_str("range_end")?;
    if let Some(range) = o.nonempty_str("range")? {
        ranges.push(parse_range(
            o,
            range,
            top_start,
            top_end,
            &top_exclude,
            network_name.as_deref(),
            &mut warnings,
        )?);
    } else {
        for (key, given) in [
            ("range_start", top_start.is_some()),
            ("range_end", top_end.is_some()),
            ("exclude", !top_exclude.is_empty()),
        ] {
            if given {
                warnings.push(ConfigWarning {
                    field: o.field(key),
                    message: "ignored: there is no top-level \"range\" for it to narrow".to_owned(),
                });
            }
        }
    }
    let ip_ranges = o.objects("ipRanges")?;
    if ip_ranges.len() > MAX_RANGES {
        return Err(ConfigError::TooMany {
            field: o.field("ipRanges"),
            count: ip_ranges.len(),
            max: MAX_RANGES,
        });
    }
    for (path, entry) in ip_ranges {
        let e = Obj::new(entry, &path);
        let range = e
            .nonempty_str("range")?
            .ok_or_else(|| ConfigError::Missing {
                field: e.field("range"),
            })?;
        let exclude = e.str_array("exclude")?;
        let start = e.nonempty_str("range_start")?;
        let end = e.nonempty_str("range_end")?;
        ranges.push(parse_range(
            e,
            range,
            start,
            end,
            &exclude,
            network_name.as_deref(),
            &mut warnings,
        )?);
    }
    let mut seen: HashMap<Cidr, usize> = HashMap::new();
    for (i, r) in ranges.iter().enumerate() {
        let cidr = *r.range.cidr();
        if let Some(&j) = seen.get(&cidr) {
            return Err(ConfigError::DuplicateRange {
                field: r.field.clone(),
                cidr,
                other: ranges.get(j).map_or_else(String::new, |o| o.field.clone()),
            });
        }
        for other in &ranges[..i] {
            if other.range.cidr().overlaps(&cidr) {
                warnings.push(ConfigWarning {
                    field: r.field.clone(),
                    message: format!(
                        "{cidr} overlaps {} of {}: the attachment gets an address from each",
                        other.range.cidr(),
                        other.field
                    ),
                });
            }
        }
        seen.insert(cidr, i);
    }

    let gateway = match o.nonempty_str("gateway")? {
        Some(g) => Some(parse_ip(g).ok_or_else(|| ConfigError::InvalidIp {
            field: o.field("gateway"),
            value: g.to_owned(),
        })?),
        None => None,
    };

    let mut routes = Vec::new();
    for (path, r) in o.objects("routes")? {
        let r = Obj::new(r, &path);
        let dst = r.str("dst")?.ok_or_else(|| ConfigError::Missing {
            field: r.field("dst"),
        })?;
        let dst: Cidr = dst.parse().map_err(|source| ConfigError::InvalidCidr {
            field: r.field("dst"),
            source,
        })?;
        let gw = match r.nonempty_str("gw")? {
            Some(g) => Some(parse_ip(g).ok_or_else(|| ConfigError::InvalidIp {
                field: r.field("gw"),
                value: g.to_owned(),
            })?),
            None => None,
        };
        let extra = r
            .map
            .iter()
            .filter(|(k, _)| k.as_str() != "dst" && k.as_str() != "gw")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        routes.push(Route { dst, gw, extra });
    }

    let dns = match o.object("dns")? {
        Some(d) => {
            let path = o.field("dns");
            let d = Obj::new(d, &path);
            let strings = |key: &str| -> Result<Vec<String>, ConfigError> {
                Ok(d.str_array(key)?.into_iter().map(str::to_owned).collect())
            };
            Dns {
                nameservers: strings("nameservers")?,
                domain: d.nonempty_str("domain")?.map(str::to_owned),
                search: strings("search")?,
                options: strings("options")?,
            }
        }
        None => Dns::default(),
    };

    let mut addresses = Vec::new();
    for (path, a) in o.objects("addresses")? {
        let a = Obj::new(a, &path);
        let raw = a.str("address")?.ok_or_else(|| ConfigError::Missing {
            field: a.field("address"),
        })?;
        let (address, cidr) =
            Cidr::parse_with_host(raw).map_err(|source| ConfigError::InvalidCidr {
                field: a.field("address"),
                source,
            })?;
        let gateway = match a.nonempty_str("gateway")? {
            Some(g) => Some(parse_ip(g).ok_or_else(|| ConfigError::InvalidIp {
                field: a.field("gateway"),
                value: g.to_owned(),
            })?),
            None => None,
        };
        addresses.push(StaticAddress {
            address,
            prefix_len: cidr.prefix_len(),
            gateway,
        });
    }

    if ranges.is_empty() && addresses.is_empty() {
        return Err(ConfigError::NoRange {
            field: o.field("range"),
        });
    }

    let kubernetes = match o.object("kubernetes")? {
        Some(k) => {
            let path = o.field("kubernetes");
            let k = Obj::new(k, &path);
            KubernetesConfig {
                kubeconfig: k.nonempty_str("kubeconfig")?.map(str::to_owned),
                k8s_api_root: k.nonempty_str("k8s_api_root")?.map(str::to_owned),
            }
        }
        None => KubernetesConfig::default(),
    };

    let log_level = o.nonempty_str("log_level")?.map(str::to_owned);
    if let Some(level) = &log_level
        && !["debug", "verbose", "error", "panic"].contains(&level.to_lowercase().as_str())
    {
        warnings.push(ConfigWarning {
            field: o.field("log_level"),
            message: format!("{level:?} is not one of debug, verbose, error, panic"),
        });
    }

    let ignored = IgnoredOptions {
        leader_lease_duration: o.int("leader_lease_duration")?,
        leader_renew_deadline: o.int("leader_renew_deadline")?,
        leader_retry_period: o.int("leader_retry_period")?,
        node_slice_size: o.nonempty_str("node_slice_size")?.map(str::to_owned),
        sleep_for_race: o.int("sleep_for_race")?,
        datastore: o.nonempty_str("datastore")?.map(str::to_owned),
    };
    if let Some(size) = &ignored.node_slice_size {
        warnings.push(ConfigWarning {
            field: o.field("node_slice_size"),
            message: format!(
                "{size:?} accepted but not used: hereabouts allocates from the whole range's IPPool \
                 (its controller batches requests, so per-node slices are not needed); addresses \
                 whereabouts handed out from per-node pools are not seen"
            ),
        });
    }

    let request_timeout = match o.get("request_timeout") {
        Some(v) => Some(duration::from_json(
            &o.field("request_timeout"),
            v,
            duration::REQUEST_TIMEOUT,
        )?),
        None => None,
    };

    let hold_released = match o.get("hold_released") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(true)) => None,
        Some(Value::String(s)) if s == "on" => None,
        Some(v) => match rest(&o.field("hold_released"), v)? {
            d if d.is_zero() => Some(Hold::Off),
            d => Some(Hold::For(d)),
        },
    };
    let release_cooldown = match o.get("release_cooldown") {
        None | Some(Value::Null) => None,
        Some(v) => Some(rest(&o.field("release_cooldown"), v)?),
    };

    Ok(IpamConfig {
        kind,
        cni_version: None,
        name: None,
        ranges,
        gateway,
        routes,
        dns,
        addresses,
        network_name,
        enable_overlapping_ranges: o.bool("enable_overlapping_ranges")?.unwrap_or(true),
        kubernetes,
        log_file: o.nonempty_str("log_file")?.map(str::to_owned),
        log_level,
        configuration_path: o.nonempty_str("configuration_path")?.map(str::to_owned),
        reconciler_cron_expression: o
            .nonempty_str("reconciler_cron_expression")?
            .map(str::to_owned),
        request_timeout,
        hold_released,
        release_cooldown,
        ignored,
        warnings,
    })
}

/// A hold or cooldown: `"off"` or `false` (zero), seconds, or a duration
/// with units, within [`duration::REST`].
fn rest(field: &str, v: &Value) -> Result<std::time::Duration, ConfigError> {
    match v {
        Value::Bool(false) => Ok(std::time::Duration::ZERO),
        Value::String(s) if s == "off" => Ok(std::time::Duration::ZERO),
        Value::String(s) if humantime::parse_duration(s).is_err() => Err(DurationError::Invalid {
            field: field.to_owned(),
            value: duration::quoted(s),
            reason: "expected \"off\" or a duration such as \"30s\"".to_owned(),
        }
        .into()),
        v => Ok(duration::from_json(field, v, duration::REST)?),
    }
}

fn parse_range(
    o: Obj<'_>,
    range: &str,
    start: Option<&str>,
    end: Option<&str>,
    exclude: &[&str],
    network_name: Option<&str>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<RangeConfig, ConfigError> {
    let (range, more) = IpRange::parse(&RangeFields {
        path: o.path,
        range,
        range_start: start,
        range_end: end,
        exclude,
    })?;
    warnings.extend(more);
    let field = o.field("range");
    let pool_name =
        pool_name(network_name, range.cidr()).map_err(|source| ConfigError::Naming {
            field: if network_name.is_some() {
                // The network name is the likelier culprit.
                o.field("network_name")
            } else {
                field.clone()
            },
            source,
        })?;
    Ok(RangeConfig {
        range,
        pool_name,
        field,
    })
}

/// A CNI network configuration as a plugin receives it (or as one plugin
/// of a NAD's conflist), with its `ipam` section still raw so that a flat
/// file can be merged under it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: Option<String>,
    pub name: Option<String>,
    /// The plugin `type` (e.g. `macvlan`).
    pub plugin_type: Option<String>,
    /// Index in the conflist's `plugins`, for a NAD conflist.
    pub plugin_index: Option<usize>,
    /// The raw `ipam` object.
    pub ipam: Map<String, Value>,
    /// `runtimeConfig.ips` (the `ips` capability).
    pub runtime_config_ips: Vec<String>,
    /// `args.cni.ips`.
    pub args_cni_ips: Vec<String>,
    /// `prevResult`, for CHECK and DEL.
    pub prev_result: Option<Value>,
    ipam_path: String,
}

impl NetConf {
    /// Parses the network configuration a plugin reads on stdin.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
            field: "stdin".to_owned(),
            reason: e.to_string(),
        })?;
        let Value::Object(map) = &value else {
            return Err(ConfigError::WrongType {
                field: "stdin".to_owned(),
                expected: "an object",
                found: describe(&value),
            });
        };
        Self::from_object(Obj::new(map, ""), None, None, None)
    }

    fn from_object(
        o: Obj<'_>,
        plugin_index: Option<usize>,
        list_version: Option<&str>,
        list_name: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let ipam_path = o.field("ipam");
        let ipam = o
            .object("ipam")?
            .cloned()
            .ok_or_else(|| ConfigError::Missing {
                field: ipam_path.clone(),
            })?;
        let runtime_config_ips = match o.object("runtimeConfig")? {
            Some(rc) => {
                let path = o.field("runtimeConfig");
                Obj::new(rc, &path)
                    .str_array("ips")?
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            }
            None => Vec::new(),
        };
        let args_path = o.field("args");
        let args_cni_ips = match o.object("args")? {
            Some(args) => match Obj::new(args, &args_path).object("cni")? {
                Some(cni) => {
                    let path = join(&args_path, "cni");
                    Obj::new(cni, &path)
                        .str_array("ips")?
                        .into_iter()
                        .map(str::to_owned)
                        .collect()
                }
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        Ok(NetConf {
            cni_version: list_version
                .map(str::to_owned)
                .or(o.nonempty_str("cniVersion")?.map(str::to_owned)),
            name: list_name
                .map(str::to_owned)
                .or(o.nonempty_str("name")?.map(str::to_owned)),
            plugin_type: o.nonempty_str("type")?.map(str::to_owned),
            plugin_index,
            ipam,
            runtime_config_ips,
            args_cni_ips,
            prev_result: o.get("prevResult").cloned(),
            ipam_path,
        })
    }

    /// The `ipam.type`, if it names hereabouts or whereabouts.
    pub fn ipam_kind(&self) -> Option<IpamKind> {
        self.ipam
            .get("type")
            .and_then(Value::as_str)
            .and_then(IpamKind::from_type)
    }

    /// Validates the `ipam` section as it stands.
    pub fn ipam_config(&self) -> Result<IpamConfig, ConfigError> {
        self.finish(parse_ipam(Obj::new(&self.ipam, &self.ipam_path))?)
    }

    /// Validates the `ipam` section with a flat file's values under it
    /// (see [`merge_flat_file`]); `flat` is `(path, contents)`.
    pub fn ipam_config_merged(
        &self,
        flat: Option<(&Path, &Value)>,
    ) -> Result<IpamConfig, ConfigError> {
        let Some((path, flat)) = flat else {
            return self.ipam_config();
        };
        let (merged, from_flat) =
            merge_flat_file(&self.ipam, flat).map_err(|e| ConfigError::FlatFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let parsed = parse_ipam(Obj::new(&merged, &self.ipam_path)).map_err(|e| {
            let field = e.field().to_owned();
            let key = field
                .strip_prefix(self.ipam_path.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .map(|rest| rest.split(['.', '[']).next().unwrap_or(rest));
            match key {
                Some(k) if from_flat.iter().any(|f| f == k) => ConfigError::FromFlatFile {
                    field,
                    path: path.display().to_string(),
                    source: Box::new(e),
                },
                _ => e,
            }
        })?;
        self.finish(parsed)
    }

    fn finish(&self, mut config: IpamConfig) -> Result<IpamConfig, ConfigError> {
        config.cni_version.clone_from(&self.cni_version);
        config.name.clone_from(&self.name);
        Ok(config)
    }

    /// Where to look for the flat file, in whereabouts' order: the NAD's
    /// `configuration_path` first, then [`DEFAULT_FLAT_FILE_PATHS`].
    pub fn flat_file_paths(&self) -> Vec<PathBuf> {
        let own = self
            .ipam
            .get("configuration_path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        own.into_iter()
            .chain(DEFAULT_FLAT_FILE_PATHS.iter().map(PathBuf::from))
            .collect()
    }
}

/// Reads the first flat file that exists among `paths`. `Ok(None)` when
/// none does (whereabouts fails then; hereabouts needs no flat file).
pub fn read_flat_file(paths: &[PathBuf]) -> Result<Option<(PathBuf, Value)>, ConfigError> {
    for path in paths {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(ConfigError::FlatFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let value = serde_json::from_slice(&bytes).map_err(|e| ConfigError::FlatFile {
            path: path.display().to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        return Ok(Some((path.clone(), value)));
    }
    Ok(None)
}

/// Merges a flat file under an `ipam` object the way whereabouts does
/// (mergo): a key takes the flat file's value only where the NAD leaves it
/// unset or at its zero value (`null`, `""`, `0`, `false`, `[]`, `{}`);
/// objects merge key by key. `enable_overlapping_ranges` is never taken
/// from the flat file (whereabouts keeps the NAD's value or the default).
/// Returns the merged object and the top-level keys taken from the file.
pub fn merge_flat_file(
    ipam: &Map<String, Value>,
    flat: &Value,
) -> Result<(Map<String, Value>, Vec<String>), ConfigError> {
    let Value::Object(flat) = flat else {
        return Err(ConfigError::WrongType {
            field: "flat file".to_owned(),
            expected: "an object",
            found: describe(flat),
        });
    };
    let mut merged = ipam.clone();
    let mut taken = Vec::new();
    for (key, value) in flat {
        if key == "enable_overlapping_ranges" {
            continue;
        }
        if merge_value(merged.entry(key.clone()).or_insert(Value::Null), value) {
            taken.push(key.clone());
        }
    }
    Ok((merged, taken))
}

/// Fills `dst` from `src` where `dst` is zero; returns whether anything
/// was taken.
fn merge_value(dst: &mut Value, src: &Value) -> bool {
    if let (Value::Object(d), Value::Object(s)) = (&mut *dst, src) {
        let mut any = false;
        for (k, v) in s {
            any |= merge_value(d.entry(k.clone()).or_insert(Value::Null), v);
        }
        return any;
    }
    if is_zero(dst) && !is_zero(src) {
        *dst = src.clone();
        return true;
    }
    false
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The hereabouts/whereabouts IPAM sections of a NAD's `spec.config`: a
/// single network configuration or a conflist (`plugins`); every plugin is
/// looked at, not only the first. An empty config (the NAD refers to a file
/// on the node) and configurations for other IPAM types give an empty list;
/// malformed JSON is an error. Field names in later errors are relative to
/// `spec.config`, e.g. `plugins[1].ipam.range`.
pub fn find_ipam_sections(spec_config: &str) -> Result<Vec<NetConf>, ConfigError> {
    if spec_config.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(spec_config).map_err(|e| ConfigError::Json {
        field: "spec.config".to_owned(),
        reason: e.to_string(),
    })?;
    let Value::Object(map) = &value else {
        return Err(ConfigError::WrongType {
            field: "spec.config".to_owned(),
            expected: "an object",
            found: describe(&value),
        });
    };
    let root = Obj::new(map, "");
    let relevant = |m: &Map<String, Value>| {
        m.get("ipam")
            .and_then(|i| i.get("type"))
            .and_then(Value::as_str)
            .and_then(IpamKind::from_type)
            .is_some()
    };
    if root.get("plugins").is_none() {
        if !relevant(map) {
            return Ok(Vec::new());
        }
        return Ok(vec![NetConf::from_object(root, None, None, None)?]);
    }
    let version = root.nonempty_str("cniVersion")?;
    let name = root.nonempty_str("name")?;
    let mut found = Vec::new();
    for (i, (path, plugin)) in root.objects("plugins")?.iter().enumerate() {
        if relevant(plugin) {
            found.push(NetConf::from_object(
                Obj::new(plugin, path),
                Some(i),
                version,
                name,
            )?);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn netconf(ipam: Value) -> NetConf {
        let conf = json!({"cniVersion": "0.3.1", "name": "mynet", "type": "macvlan", "ipam": ipam});
        NetConf::parse(conf.to_string().as_bytes()).expect("netconf parses")
    }

    fn parse(ipam: Value) -> Result<IpamConfig, ConfigError> {
        netconf(ipam).ipam_config()
    }

    #[test]
    fn basic_whereabouts_config() {
        let c = parse(json!({
            "type": "whereabouts",
            "log_file": "/tmp/whereabouts.log",
            "log_level": "debug",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
            "range": "192.168.1.5-192.168.1.25/24",
            "gateway": "192.168.10.1",
            "leader_lease_duration": 1500,
        }))
        .expect("valid");
        assert_eq!(c.kind, IpamKind::Whereabouts);
        assert_eq!(c.cni_version.as_deref(), Some("0.3.1"));
        assert_eq!(c.name.as_deref(), Some("mynet"));
        assert_eq!(c.ranges.len(), 1);
        assert_eq!(c.ranges[0].range.cidr().to_string(), "192.168.1.0/24");
        assert_eq!(c.ranges[0].range.first_ip(), ip("192.168.1.5"));
        assert_eq!(c.ranges[0].range.last_ip(), ip("192.168.1.25"));
        assert_eq!(c.ranges[0].pool_name.as_str(), "192.168.1.0-24");
        assert_eq!(c.gateway, Some(ip("192.168.10.1")));
        assert_eq!(c.gateway_for(&c.ranges[0].range), Some(ip("192.168.10.1")));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.ignored.leader_lease_duration, Some(1500));
        assert!(c.enable_overlapping_ranges);
        assert_eq!(
            c.kubernetes.kubeconfig.as_deref(),
            Some("/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig")
        );
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn every_option() {
        let c = parse(json!({
            "type": "hereabouts",
            "range": "10.0.0.0/24",
            "range_start": "10.0.0.10",
            "range_end": "10.0.0.20",
            "exclude": ["10.0.0.15", "10.0.0.16/31"],
            "ipRanges": [
                {"range": "fd00::/120", "exclude": ["fd00::2"]},
                {"range": "10.1.0.0/16", "range_start": "10.1.5.0"}
            ],
            "gateway": "10.0.0.1",
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.0.0.254", "mtu": 1400}],
            "dns": {"nameservers": ["10.0.0.53"], "domain": "cluster.local", "search": ["a"], "options": ["ndots:5"]},
            "addresses": [{"address": "10.2.0.5/24", "gateway": "10.2.0.1"}],
            "network_name": "blue",
            "enable_overlapping_ranges": false,
            "kubernetes": {"kubeconfig": "/k", "k8s_api_root": "https://x"},
            "log_file": "/tmp/h.log",
            "log_level": "verbose",
            "configuration_path": "/etc/h.conf",
            "reconciler_cron_expression": "30 4 * * *",
            "leader_lease_duration": 3000,
            "leader_renew_deadline": 2000,
            "leader_retry_period": 1000,
            "node_slice_size": "/28",
            "sleep_for_race": 0,
            "datastore": "kubernetes",
            "etcd_host": "ignored"
        }))
        .expect("valid");
        assert_eq!(c.kind, IpamKind::Hereabouts);
        let names: Vec<_> = c.ranges.iter().map(|r| r.pool_name.as_str()).collect();
        assert_eq!(
            names,
            ["blue-10.0.0.0-24", "blue-fd00---120", "blue-10.1.0.0-16"]
        );
        let fields: Vec<_> = c.ranges.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "ipam.range",
                "ipam.ipRanges[0].range",
                "ipam.ipRanges[1].range"
            ]
        );
        assert_eq!(c.ranges[0].range.usable_count(), 11 - 3);
        assert_eq!(c.ranges[2].range.first_ip(), ip("10.1.5.0"));
        assert_eq!(c.gateway_for(&c.ranges[1].range), None);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].gw, Some(ip("10.0.0.254")));
        assert_eq!(
            serde_json::to_value(&c.routes[1]).expect("serialises"),
            json!({"dst": "10.9.0.0/16", "gw": "10.0.0.254", "mtu": 1400})
        );
        assert_eq!(c.dns.domain.as_deref(), Some("cluster.local"));
        assert_eq!(
            c.addresses,
            vec![StaticAddress {
                address: ip("10.2.0.5"),
                prefix_len: 24,
                gateway: Some(ip("10.2.0.1"))
            }]
        );
        assert_eq!(c.network_name.as_deref(), Some("blue"));
        assert!(!c.enable_overlapping_ranges);
        assert_eq!(c.kubernetes.k8s_api_root.as_deref(), Some("https://x"));
        assert_eq!(c.configuration_path.as_deref(), Some("/etc/h.conf"));
        assert_eq!(c.reconciler_cron_expression.as_deref(), Some("30 4 * * *"));
        assert_eq!(c.ignored.node_slice_size.as_deref(), Some("/28"));
        assert_eq!(c.ignored.leader_retry_period, Some(1000));
        // node_slice_size and the 10.1/16 vs 10.0/24? (no overlap) -> one warning.
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert_eq!(c.warnings[0].field, "ipam.node_slice_size");
        assert_eq!(
            c.reservation_name(ip("fd00::1")).expect("valid").as_str(),
            "blue-fd00--1"
        );
    }

    #[test]
    fn hold_and_cooldown_options() {
        use std::time::Duration;
        let with = |extra: Value| {
            let mut ipam = json!({"type": "hereabouts", "range": "10.0.0.0/24"});
            for (k, v) in extra.as_object().expect("object") {
                ipam[k] = v.clone();
            }
            parse(ipam)
        };
        let c = with(json!({})).expect("defaults");
        assert_eq!((c.hold_released, c.release_cooldown), (None, None));
        for on in [json!("on"), json!(true), Value::Null] {
            let c = with(json!({"hold_released": on})).expect("on");
            assert_eq!(c.hold_released, None, "{on}: the controller's default");
        }
        for off in [json!("off"), json!(false), json!(0), json!("0s")] {
            let c = with(json!({"hold_released": off, "release_cooldown": off})).expect("off");
            assert_eq!(c.hold_released, Some(Hold::Off), "{off}");
            assert_eq!(c.release_cooldown, Some(Duration::ZERO), "{off}");
        }
        let c = with(json!({"hold_released": "10m", "release_cooldown": 2.5})).expect("durations");
        assert_eq!(c.hold_released, Some(Hold::For(Duration::from_secs(600))));
        assert_eq!(c.release_cooldown, Some(Duration::from_millis(2500)));
        // Refused with the field and the value named.
        for (extra, field, value) in [
            (
                json!({"hold_released": "sometimes"}),
                "ipam.hold_released",
                "\"sometimes\"",
            ),
            (
                json!({"hold_released": "2days"}),
                "ipam.hold_released",
                "\"2days\"",
            ),
            (
                json!({"release_cooldown": -1}),
                "ipam.release_cooldown",
                "-1",
            ),
            (
                json!({"release_cooldown": "on"}),
                "ipam.release_cooldown",
                "\"on\"",
            ),
            (
                json!({"release_cooldown": [5]}),
                "ipam.release_cooldown",
                "an array",
            ),
            (
                json!({"release_cooldown": 1e300}),
                "ipam.release_cooldown",
                "1e+300",
            ),
        ] {
            let e = with(extra.clone()).expect_err(&extra.to_string());
            assert_eq!(e.field(), field, "{extra}");
            let message = e.to_string();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
            assert!(message.contains(value), "{extra}: {message}");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(Value, &str, &str)> = vec![
            (
                json!({"type": "static", "range": "10.0.0.0/24"}),
                "ipam.type",
                "unknown_type",
            ),
            (
                json!({"range": "10.0.0.0/24"}),
                "ipam.type",
                "missing_field",
            ),
            (
                json!({"type": 5, "range": "10.0.0.0/24"}),
                "ipam.type",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/33"}),
                "ipam.range",
                "invalid_cidr",
            ),
            (
                json!({"type": "whereabouts", "range": 10}),
                "ipam.range",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "range": "192.168.1.5-192.168.2.25/28"}),
                "ipam.range",
                "range_start_outside_cidr",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "range_start": "10.0.1.0"}),
                "ipam.range_start",
                "range_start_outside_cidr",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "range_start": "10.0.0.9", "range_end": "10.0.0.8"}),
                "ipam.range_end",
                "range_inverted",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/31"}),
                "ipam.range",
                "range_no_usable_address",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "exclude": ["10.0.0.0/24"]}),
                "ipam.exclude",
                "range_excluded_entirely",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "exclude": "10.0.0.1"}),
                "ipam.exclude",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "exclude": [1]}),
                "ipam.exclude[0]",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": [{"range": "10.0.0.0/24"}, {"range_start": "10.0.0.1"}]}),
                "ipam.ipRanges[1].range",
                "missing_field",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": [{"range": "10.0.0.0/24", "exclude": ["x"]}]}),
                "ipam.ipRanges[0].exclude[0]",
                "invalid_exclusion",
            ),
            (
                json!({"type": "whereabouts", "ipRanges": ["10.0.0.0/24"]}),
                "ipam.ipRanges[0]",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "ipRanges": [{"range": "10.0.0.7/24"}]}),
                "ipam.ipRanges[0].range",
                "duplicate_range",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "gateway": "10.0.0.300"}),
                "ipam.gateway",
                "invalid_ip",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "routes": [{"gw": "10.0.0.1"}]}),
                "ipam.routes[0].dst",
                "missing_field",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "dns": {"nameservers": "1.1.1.1"}}),
                "ipam.dns.nameservers",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "addresses": [{"address": "10.0.0.1"}]}),
                "ipam.addresses[0].address",
                "invalid_cidr",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "enable_overlapping_ranges": "no"}),
                "ipam.enable_overlapping_ranges",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "leader_lease_duration": 1.5}),
                "ipam.leader_lease_duration",
                "wrong_type",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "network_name": "Blue"}),
                "ipam.network_name",
                "invalid_object_name",
            ),
            (
                json!({"type": "whereabouts", "range": "10.0.0.0/24", "kubernetes": "x"}),
                "ipam.kubernetes",
                "wrong_type",
            ),
            (json!({"type": "whereabouts"}), "ipam.range", "no_range"),
        ];
        for (ipam, field, label) in cases {
            let err = parse(ipam.clone()).expect_err(&format!("{ipam} must be refused"));
            assert_eq!(
                (err.field(), err.metric_label()),
                (field, label),
                "{ipam}: {err}"
            );
            assert!(err.to_string().starts_with(field), "{err}");
        }
        let err = NetConf::parse(b"{\"ipam\": {asdf}}").expect_err("bad JSON");
        assert_eq!(err.metric_label(), "invalid_json");
        let err = NetConf::parse(b"{\"name\": \"x\"}").expect_err("no ipam");
        assert_eq!(err.field(), "ipam");
        let err = NetConf::parse(b"[1]").expect_err("not an object");
        assert_eq!(err.metric_label(), "wrong_type");
    }

    #[test]
    fn leading_zeros_and_go_zero_values() {
        let c = parse(json!({
            "type": "whereabouts",
            "range": "00192.00168.1.0/24",
            "range_start": "00192.00168.1.44",
            "range_end": "00192.00168.01.209",
            "gateway": "",
            "network_name": "",
            "routes": null,
        }))
        .expect("valid");
        assert_eq!(c.ranges[0].range.first_ip(), ip("192.168.1.44"));
        assert_eq!(c.ranges[0].range.last_ip(), ip("192.168.1.209"));
        assert_eq!(c.gateway, None);
        assert_eq!(c.network_name, None);
        assert_eq!(c.ranges[0].pool_name.as_str(), "192.168.1.0-24");
    }

    #[test]
    fn flat_file_fills_only_what_is_unset() {
        let nc = netconf(json!({
            "configuration_path": "/tmp/whereabouts.conf",
            "type": "whereabouts",
            "range": "192.168.2.230/24",
            "range_start": "192.168.2.223",
            "gateway": "192.168.10.1",
            "enable_overlapping_ranges": false,
            "kubernetes": {"k8s_api_root": "https://api"},
        }));
        let flat = json!({
            "datastore": "kubernetes",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
            "log_file": "/tmp/whereabouts.log",
            "log_level": "debug",
            "gateway": "192.168.5.5",
            "enable_overlapping_ranges": true,
        });
        let c = nc
            .ipam_config_merged(Some((Path::new("/tmp/whereabouts.conf"), &flat)))
            .expect("valid");
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.log_file.as_deref(), Some("/tmp/whereabouts.log"));
        assert_eq!(c.gateway, Some(ip("192.168.10.1")));
        assert_eq!(c.ranges[0].range.first_ip(), ip("192.168.2.223"));
        assert_eq!(
            c.kubernetes.kubeconfig.as_deref(),
            Some("/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig")
        );
        assert_eq!(c.kubernetes.k8s_api_root.as_deref(), Some("https://api"));
        assert!(
            !c.enable_overlapping_ranges,
            "never taken from the flat file"
        );
        assert_eq!(
            nc.flat_file_paths()[0],
            PathBuf::from("/tmp/whereabouts.conf")
        );
        assert_eq!(nc.flat_file_paths().len(), 4);

        // The range itself may come from the flat file; a bad one is blamed on it.
        let nc = netconf(json!({"type": "whereabouts"}));
        let flat = json!({"range": "10.0.0.0/24"});
        let c = nc
            .ipam_config_merged(Some((Path::new("/f"), &flat)))
            .expect("valid");
        assert_eq!(c.ranges[0].pool_name.as_str(), "10.0.0.0-24");
        let flat = json!({"range": "10.0.0.0/99"});
        let err = nc
            .ipam_config_merged(Some((Path::new("/f"), &flat)))
            .expect_err("bad");
        assert!(matches!(err, ConfigError::FromFlatFile { .. }), "{err}");
        assert_eq!(err.field(), "ipam.range");
        assert!(err.to_string().contains("/f"));
        assert_eq!(
            nc.ipam_config_merged(Some((Path::new("/f"), &json!([1]))))
                .expect_err("bad")
                .metric_label(),
            "flat_file"
        );
    }

    #[test]
    fn reads_flat_files_in_order() {
        let dir = std::env::temp_dir().join(format!("hereabouts-flat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let present = dir.join("whereabouts.conf");
        std::fs::write(&present, r#"{"log_level": "debug"}"#).expect("write");
        let paths = vec![dir.join("missing.conf"), present.clone()];
        let (path, value) = read_flat_file(&paths).expect("reads").expect("found");
        assert_eq!(path, present);
        assert_eq!(value, json!({"log_level": "debug"}));
        assert_eq!(
            read_flat_file(&[dir.join("missing.conf")]).expect("reads"),
            None
        );
        std::fs::write(&present, "{nope").expect("write");
        assert_eq!(
            read_flat_file(&paths).expect_err("bad JSON").metric_label(),
            "flat_file"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn nad_configs_and_conflists() {
        let single = r#"{"cniVersion": "0.3.1", "name": "n", "type": "macvlan",
                         "ipam": {"type": "whereabouts", "range": "10.0.0.0/24"}}"#;
        let found = find_ipam_sections(single).expect("parses");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].plugin_index, None);
        assert_eq!(found[0].ipam_kind(), Some(IpamKind::Whereabouts));

        let list = r#"{"cniVersion": "1.0.0", "name": "lst", "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local"}},
            {"type": "macvlan", "ipam": {"type": "hereabouts", "range": "10.0.0.0/99"}},
            {"type": "tuning"}
        ]}"#;
        let found = find_ipam_sections(list).expect("parses");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].plugin_index, Some(1));
        assert_eq!(found[0].cni_version.as_deref(), Some("1.0.0"));
        assert_eq!(found[0].name.as_deref(), Some("lst"));
        let err = found[0].ipam_config().expect_err("bad range");
        assert_eq!(err.field(), "plugins[1].ipam.range");

        assert!(find_ipam_sections("").expect("empty is fine").is_empty());
        assert!(
            find_ipam_sections(r#"{"type": "x", "ipam": {"type": "dhcp"}}"#)
                .expect("ok")
                .is_empty()
        );
        assert_eq!(
            find_ipam_sections("{").expect_err("bad").field(),
            "spec.config"
        );
        assert_eq!(
            find_ipam_sections(r#"{"plugins": 3}"#)
                .expect_err("bad")
                .field(),
            "plugins"
        );
    }

    #[test]
    fn static_requests_in_the_netconf() {
        let conf = json!({
            "cniVersion": "1.0.0", "name": "n", "type": "macvlan",
            "ipam": {"type": "hereabouts", "range": "10.0.0.0/24"},
            "runtimeConfig": {"ips": ["10.0.0.5/24"]},
            "args": {"cni": {"ips": ["10.0.0.6"]}},
            "prevResult": {"ips": []}
        });
        let nc = NetConf::parse(conf.to_string().as_bytes()).expect("parses");
        assert_eq!(nc.runtime_config_ips, vec!["10.0.0.5/24".to_owned()]);
        assert_eq!(nc.args_cni_ips, vec!["10.0.0.6".to_owned()]);
        assert!(nc.prev_result.is_some());
        let bad = json!({"ipam": {"type": "hereabouts"}, "runtimeConfig": {"ips": "10.0.0.5"}});
        let err = NetConf::parse(bad.to_string().as_bytes()).expect_err("wrong type");
        assert_eq!(err.field(), "runtimeConfig.ips");
        let bad = json!({"ipam": {"type": "hereabouts"}, "args": {"cni": {"ips": [7]}}});
        let err = NetConf::parse(bad.to_string().as_bytes()).expect_err("wrong type");
        assert_eq!(err.field(), "args.cni.ips[0]");
    }
}
