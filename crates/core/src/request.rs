//! Static addresses a pod asks for, by the CNI conventions: the `ips`
//! capability (`runtimeConfig.ips`, which Multus fills from the pod's
//! network annotation), `args.cni.ips`, and `IP=` in `CNI_ARGS`
//! (comma-separated, each an address or `address/len`).
//!
//! As in the reference `static` plugin, the first non-empty source in that
//! order wins outright; every source is still validated. Each requested
//! address must fall inside one of the configuration's ranges, which then
//! hands out exactly that address or fails ([`match_requests`]); it is never
//! silently replaced by another. (whereabouts instead returns `IP=` addresses
//! unreserved beside the dynamic ones, which can duplicate addresses.)

use std::fmt;
use std::net::IpAddr;

use super::cidr::{Cidr, parse_ip};
use super::range::IpRange;

/// Where a requested address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpSource {
    RuntimeConfig,
    ArgsCni,
    CniArgs,
    /// An IPClaim's `spec.staticIPs`, as plugins before the per-range
    /// contract wrote them.
    ClaimStaticIps,
    /// An IPClaim's `spec.ranges[i].staticIP`.
    ClaimRange,
}

impl fmt::Display for IpSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpSource::RuntimeConfig => "runtimeConfig.ips",
            IpSource::ArgsCni => "args.cni.ips",
            IpSource::CniArgs => "CNI_ARGS IP",
            IpSource::ClaimStaticIps => "spec.staticIPs",
            IpSource::ClaimRange => "spec.ranges.staticIP",
        })
    }
}

/// One requested address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedIp {
    pub ip: IpAddr,
    /// The prefix length, when given as `address/len`.
    pub prefix_len: Option<u8>,
    pub source: IpSource,
    /// Position in its source's list.
    pub index: usize,
}

impl fmt::Display for RequestedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(len) => write!(f, "{}/{len}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// Why requested addresses are refused; every variant names the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{origin}[{index}]: {} is neither an IP address nor a CIDR", crate::excerpt(.value))]
    InvalidIp {
        origin: IpSource,
        index: usize,
        value: String,
    },
    #[error("CNI_ARGS: {} is not KEY=VALUE", crate::excerpt(.item))]
    MalformedCniArgs { item: String },
    #[error("{origin}[{index}]: {ip} is in none of the configured ranges ({ranges})")]
    OutsideRanges {
        origin: IpSource,
        index: usize,
        ip: IpAddr,
        ranges: String,
    },
    #[error("{origin}[{index}]: {requested} does not match the range {cidr}")]
    PrefixMismatch {
        origin: IpSource,
        index: usize,
        requested: String,
        cidr: Cidr,
    },
    #[error("{origin}[{index}]: {ip} and {other} both fall in {cidr}; one address per range")]
    TwoInOneRange {
        origin: IpSource,
        index: usize,
        ip: IpAddr,
        other: IpAddr,
        cidr: Cidr,
    },
    #[error(
        "spec.ranges[{index}].staticIP and spec.staticIPs disagree on the address of range {index}"
    )]
    ContractsDisagree { index: usize },
}

impl RequestError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RequestError::InvalidIp { .. } => "invalid_requested_ip",
            RequestError::MalformedCniArgs { .. } => "malformed_cni_args",
            RequestError::OutsideRanges { .. } => "requested_ip_outside_ranges",
            RequestError::PrefixMismatch { .. } => "requested_prefix_mismatch",
            RequestError::TwoInOneRange { .. } => "two_requested_ips_in_one_range",
            RequestError::ContractsDisagree { .. } => "static_ip_forms_disagree",
        }
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by ';'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`. Unknown keys are kept (Multus sends
    /// `IgnoreUnknown=1` and Kubernetes keys); empty items are skipped.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        let mut pairs = Vec::new();
        for item in s.split(';').filter(|i| !i.trim().is_empty()) {
            let (k, v) = item
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| RequestError::MalformedCniArgs {
                    item: item.to_owned(),
                })?;
            pairs.push((k.trim().to_owned(), v.to_owned()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (the last one if repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.get("K8S_POD_NAMESPACE")
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.get("K8S_POD_NAME")
    }

    pub fn pod_uid(&self) -> Option<&str> {
        self.get("K8S_POD_UID")
    }

    pub fn infra_container_id(&self) -> Option<&str> {
        self.get("K8S_POD_INFRA_CONTAINER_ID")
    }

    /// `IP=`, split on ','.
    pub fn ips(&self) -> Vec<&str> {
        self.get("IP")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn parse_requested(
    value: &str,
    source: IpSource,
    index: usize,
) -> Result<RequestedIp, RequestError> {
    let invalid = || RequestError::InvalidIp {
        origin: source,
        index,
        value: value.to_owned(),
    };
    let (ip, prefix_len) = if value.contains('/') {
        let (ip, cidr) = Cidr::parse_with_host(value).map_err(|_| invalid())?;
        (ip, Some(cidr.prefix_len()))
    } else {
        (parse_ip(value).ok_or_else(invalid)?, None)
    };
    Ok(RequestedIp {
        ip,
        prefix_len,
        source,
        index,
    })
}

/// The requested addresses: all sources are validated, the first non-empty
/// of `runtimeConfig.ips`, `args.cni.ips`, `CNI_ARGS IP=` is returned.
pub fn requested_ips<S: AsRef<str>>(
    runtime_config_ips: &[S],
    args_cni_ips: &[S],
    cni_args: Option<&CniArgs>,
) -> Result<Vec<RequestedIp>, RequestError> {
    let parse_all = |values: Vec<&str>, source| -> Result<Vec<RequestedIp>, RequestError> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| parse_requested(v, source, i))
            .collect()
    };
    let runtime = parse_all(
        runtime_config_ips.iter().map(AsRef::as_ref).collect(),
        IpSource::RuntimeConfig,
    )?;
    let args = parse_all(
        args_cni_ips.iter().map(AsRef::as_ref).collect(),
        IpSource::ArgsCni,
    )?;
    let env = parse_all(
        cni_args.map(CniArgs::ips).unwrap_or_default(),
        IpSource::CniArgs,
    )?;
    Ok([runtime, args, env]
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap_or_default())
}

impl super::config::NetConf {
    /// The static addresses this attachment asks for (see [`requested_ips`]).
    pub fn requested_ips(
        &self,
        cni_args: Option<&CniArgs>,
    ) -> Result<Vec<RequestedIp>, RequestError> {
        requested_ips(&self.runtime_config_ips, &self.args_cni_ips, cni_args)
    }
}

/// What to ask of one range's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The lowest free address.
    Dynamic,
    /// Exactly this address.
    Static(RequestedIp),
}

/// Assigns each requested address to the first range whose CIDR holds it;
/// other ranges allocate dynamically. Fails for an address in no range, a
/// prefix length that differs from the range's, or two addresses for one
/// range. The result is parallel to `ranges`.
pub fn match_requests<'a>(
    ranges: impl IntoIterator<Item = &'a IpRange>,
    requested: &[RequestedIp],
) -> Result<Vec<RangeRequest>, RequestError> {
    let ranges: Vec<&IpRange> = ranges.into_iter().collect();
    let mut plan = vec![RangeRequest::Dynamic; ranges.len()];
    for req in requested {
        let Some(i) = ranges.iter().position(|r| r.contains(req.ip)) else {
            return Err(RequestError::OutsideRanges {
                origin: req.source,
                index: req.index,
                ip: req.ip,
                ranges: ranges
                    .iter()
                    .map(|r| r.cidr().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let (Some(range), Some(slot)) = (ranges.get(i), plan.get_mut(i)) else {
            continue;
        };
        let cidr = *range.cidr();
        if let Some(len) = req.prefix_len
            && len != cidr.prefix_len()
        {
            return Err(RequestError::PrefixMismatch {
                origin: req.source,
                index: req.index,
                requested: req.to_string(),
                cidr,
            });
        }
        if let RangeRequest::Static(other) = slot {
            return Err(RequestError::TwoInOneRange {
                origin: req.source,
                index: req.index,
                ip: req.ip,
                other: other.ip,
                cidr,
            });
        }
        *slot = RangeRequest::Static(*req);
    }
    Ok(plan)
}

/// The static requests of an IPClaim, one per range, decided by the same
/// rule the plugin applied ([`match_requests`]): `per_range[i]` is range
/// `i`'s `staticIP` as the plugin matched it, and `legacy` the flat
/// `spec.staticIPs`, matched here the same way. Plugins write both, so a
/// controller or an IPClaim schema that predates `staticIP` (which would
/// drop it) still grants the address; when both are present they must name
/// the same addresses in range order, or the claim is refused.
pub fn claim_requests<A: AsRef<str>, B: AsRef<str>>(
    ranges: &[&IpRange],
    per_range: &[Option<A>],
    legacy: &[B],
) -> Result<Vec<RangeRequest>, RequestError> {
    let legacy: Vec<RequestedIp> = legacy
        .iter()
        .enumerate()
        .map(|(i, v)| parse_requested(v.as_ref(), IpSource::ClaimStaticIps, i))
        .collect::<Result<_, _>>()?;
    let mut plan = match_requests(ranges.iter().copied(), &legacy)?;
    if per_range.iter().all(Option::is_none) {
        return Ok(plan);
    }
    let by_legacy = plan.clone();
    plan.iter_mut()
        .for_each(|slot| *slot = RangeRequest::Dynamic);
    for (i, value) in per_range.iter().enumerate() {
        let Some(value) = value else { continue };
        let req = parse_requested(value.as_ref(), IpSource::ClaimRange, i)?;
        let (Some(range), Some(slot)) = (ranges.get(i), plan.get_mut(i)) else {
            return Err(RequestError::OutsideRanges {
                origin: IpSource::ClaimRange,
                index: i,
                ip: req.ip,
                ranges: format!("the claim has {} ranges", ranges.len()),
            });
        };
        // The plugin matched it to this range: it must hold it.
        if let Some(matched) = match_requests([*range], &[req])?.into_iter().next() {
            *slot = matched;
        }
    }
    let ip = |r: &RangeRequest| match r {
        RangeRequest::Static(r) => Some(r.ip),
        RangeRequest::Dynamic => None,
    };
    if !legacy.is_empty()
        && let Some(index) = (0..plan.len()).find(|&i| ip(&plan[i]) != ip(&by_legacy[i]))
    {
        return Err(RequestError::ContractsDisagree { index });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;IP=10.0.0.5/24, fd00::5;",
        )
        .expect("parses");
        assert_eq!(a.pod_namespace(), Some("default"));
        assert_eq!(a.pod_name(), Some("web-0"));
        assert_eq!(a.pod_uid(), Some("u-1"));
        assert_eq!(a.infra_container_id(), Some("abc"));
        assert_eq!(a.ips(), vec!["10.0.0.5/24", "fd00::5"]);
        assert_eq!(
            CniArgs::parse("K8S_POD_NAME")
                .expect_err("no =")
                .metric_label(),
            "malformed_cni_args"
        );
        assert!(CniArgs::parse("").expect("empty").ips().is_empty());
    }

    #[test]
    fn precedence_and_validation() {
        let env = CniArgs::parse("IP=10.0.0.7").expect("parses");
        let none: &[&str] = &[];
        let got = requested_ips(none, none, Some(&env)).expect("valid");
        assert_eq!(
            (got[0].ip, got[0].source),
            (ip("10.0.0.7"), IpSource::CniArgs)
        );
        let got = requested_ips(&["10.0.0.6"], none, Some(&env)).expect("valid");
        assert_eq!(
            (got[0].ip, got[0].source),
            (ip("10.0.0.6"), IpSource::RuntimeConfig)
        );
        let got = requested_ips(none, &["10.0.0.8/24"], Some(&env)).expect("valid");
        assert_eq!(
            (got[0].prefix_len, got[0].source),
            (Some(24), IpSource::ArgsCni)
        );
        // A lower-priority source is still validated.
        let bad = CniArgs::parse("IP=10.0.0.300").expect("parses");
        let err = requested_ips(&["10.0.0.6"], none, Some(&bad)).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "CNI_ARGS IP[0]: \"10.0.0.300\" is neither an IP address nor a CIDR"
        );
        let err = requested_ips(&["10.0.0.1", "x/24"], none, None).expect_err("invalid");
        assert!(err.to_string().starts_with("runtimeConfig.ips[1]"));
    }

    #[test]
    fn matching_to_ranges() {
        let v4: IpRange = "10.0.0.0/24".parse().expect("valid");
        let v6: IpRange = "fd00::/64".parse().expect("valid");
        let none: &[&str] = &[];
        let req = requested_ips(&["fd00::9/64"], none, None).expect("valid");
        let plan = match_requests([&v4, &v6], &req).expect("matches");
        assert_eq!(plan[0], RangeRequest::Dynamic);
        assert!(matches!(plan[1], RangeRequest::Static(r) if r.ip == ip("fd00::9")));
        let label = |ips: &[&str]| {
            let req = requested_ips(ips, none, None).expect("valid");
            match_requests([&v4, &v6], &req)
                .expect_err("refused")
                .metric_label()
        };
        assert_eq!(label(&["10.0.1.1"]), "requested_ip_outside_ranges");
        assert_eq!(label(&["10.0.0.1/16"]), "requested_prefix_mismatch");
        assert_eq!(
            label(&["10.0.0.1", "10.0.0.2"]),
            "two_requested_ips_in_one_range"
        );
    }

    #[test]
    fn a_claim_carries_its_static_requests_per_range_or_the_legacy_list() {
        let v4: IpRange = "10.0.0.0/24".parse().expect("valid");
        let wide: IpRange = "10.0.0.0/16".parse().expect("valid");
        let v6: IpRange = "fd00::/64".parse().expect("valid");
        let ranges = [&v4, &wide, &v6];
        let none: &[&str] = &[];
        // Per range: the address goes exactly where the plugin put it,
        // even when an earlier range's CIDR also holds it.
        let plan = claim_requests(&ranges, &[None, Some("10.0.0.9"), None], none).expect("valid");
        assert_eq!(plan[0], RangeRequest::Dynamic);
        assert!(matches!(plan[1], RangeRequest::Static(r) if r.ip == ip("10.0.0.9")));
        assert_eq!(plan[2], RangeRequest::Dynamic);
        // The legacy list: the first range holding it, as the plugin decides.
        let plan = claim_requests(
            &ranges,
            &[None::<&str>, None, None],
            &["10.0.0.9", "fd00::1/64"],
        )
        .expect("valid");
        assert!(matches!(plan[0], RangeRequest::Static(r) if r.ip == ip("10.0.0.9")));
        assert_eq!(plan[1], RangeRequest::Dynamic);
        assert!(matches!(plan[2], RangeRequest::Static(r) if r.ip == ip("fd00::1")));
        let refusal = |per_range: &[Option<&str>], legacy: &[&str]| {
            claim_requests(&ranges, per_range, legacy).expect_err("refused")
        };
        let e = refusal(&[Some("10.1.0.1"), None, None], none);
        assert_eq!(e.metric_label(), "requested_ip_outside_ranges");
        assert!(
            e.to_string()
                .starts_with("spec.ranges.staticIP[0]: 10.1.0.1"),
            "{e}"
        );
        let e = refusal(&[None, None, None, Some("10.0.0.1")], none);
        assert_eq!(e.metric_label(), "requested_ip_outside_ranges");
        let e = refusal(&[None, Some("10.0.0.1/24"), None], none);
        assert_eq!(e.metric_label(), "requested_prefix_mismatch");
        let e = refusal(&[None, None, Some("fd00::zz")], none);
        assert_eq!(e.metric_label(), "invalid_requested_ip");
        // Both forms, as plugins write them: they must agree.
        let plan = claim_requests(
            &ranges,
            &[Some("10.0.0.9"), None, Some("fd00::1")],
            &["10.0.0.9", "fd00::1"],
        )
        .expect("agreeing forms");
        assert!(matches!(plan[0], RangeRequest::Static(r) if r.ip == ip("10.0.0.9")));
        assert!(matches!(plan[2], RangeRequest::Static(r) if r.ip == ip("fd00::1")));
        let e = refusal(&[Some("10.0.0.1"), None, None], &["fd00::1"]);
        assert_eq!(e.metric_label(), "static_ip_forms_disagree");
        // The flat list puts 10.0.0.9 in the first range holding it.
        let e = refusal(&[None, Some("10.0.0.9"), None], &["10.0.0.9"]);
        assert_eq!(e.metric_label(), "static_ip_forms_disagree");
        assert!(e.to_string().starts_with("spec.ranges[0].staticIP"), "{e}");
        let e = refusal(&[None, None, None], &["10.0.0.1", "10.0.0.2"]);
        assert_eq!(e.metric_label(), "two_requested_ips_in_one_range");
        assert!(e.to_string().starts_with("spec.staticIPs[1]"), "{e}");
    }
}
