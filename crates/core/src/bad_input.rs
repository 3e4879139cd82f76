//! Malformed and hostile input to the pure parsers, as tables: each case
//! has a name, the input, and the field (and value) its refusal must name.
//! The same inputs reach the plugin and the controller (tests/bad_input.rs);
//! here they are checked without a process or a server.

use serde_json::{Value, json};

use super::{
    Allocation, ConfigError, IpRange, LoadIssue, NetConf, Pool, RangeFields, parse_allocation_key,
};

fn netconf(ipam: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "bad", "type": "macvlan", "ipam": ipam})
}

fn refusal(stdin: &Value) -> ConfigError {
    let text = stdin.to_string();
    match NetConf::parse(text.as_bytes()).and_then(|nc| nc.ipam_config()) {
        Ok(config) => panic!("accepted {text:.200}: {config:?}"),
        Err(e) => e,
    }
}

#[test]
fn ipam_configurations_are_refused_naming_field_and_value() {
    let many = |n: usize, f: &dyn Fn(usize) -> String| -> Vec<String> { (0..n).map(f).collect() };
    let huge_exclude = many(1025, &|i| format!("198.51.100.{}", i % 250 + 1));
    let huge_ranges: Vec<Value> = (0..65)
        .map(|i| json!({"range": format!("100.64.{i}.0/24")}))
        .collect();
    let long_name = "n".repeat(250);
    // (name, ipam, field named, value shown)
    let cases: Vec<(&str, Value, &str, String)> = vec![
        (
            "type missing",
            json!({"range": "198.51.100.0/24"}),
            "ipam.type",
            String::new(),
        ),
        (
            "type number",
            json!({"type": 7, "range": "198.51.100.0/24"}),
            "ipam.type",
            "7".into(),
        ),
        (
            "type unknown",
            json!({"type": "dhcp", "range": "198.51.100.0/24"}),
            "ipam.type",
            "dhcp".into(),
        ),
        (
            "range prefix 33",
            json!({"type": "hereabouts", "range": "198.51.100.0/33"}),
            "ipam.range",
            "198.51.100.0/33".into(),
        ),
        (
            "range prefix 129",
            json!({"type": "hereabouts", "range": "2001:db8::/129"}),
            "ipam.range",
            "2001:db8::/129".into(),
        ),
        (
            "range prefix huge",
            json!({"type": "hereabouts", "range": "198.51.100.0/340282366920938463463374607431768211456"}),
            "ipam.range",
            "340282366920938463463374607431768211456".into(),
        ),
        (
            "range prefix negative",
            json!({"type": "hereabouts", "range": "198.51.100.0/-1"}),
            "ipam.range",
            "198.51.100.0/".into(),
        ),
        (
            "range no prefix",
            json!({"type": "hereabouts", "range": "198.51.100.0"}),
            "ipam.range",
            "198.51.100.0".into(),
        ),
        (
            "range garbage",
            json!({"type": "hereabouts", "range": "blue"}),
            "ipam.range",
            "blue".into(),
        ),
        (
            "range number",
            json!({"type": "hereabouts", "range": 24}),
            "ipam.range",
            "24".into(),
        ),
        (
            "range object",
            json!({"type": "hereabouts", "range": {"cidr": "198.51.100.0/24"}}),
            "ipam.range",
            "object".into(),
        ),
        (
            "range /32 host",
            json!({"type": "hereabouts", "range": "198.51.100.1/32"}),
            "ipam.range",
            "198.51.100.1/32".into(),
        ),
        (
            "range /31",
            json!({"type": "hereabouts", "range": "198.51.100.0/31"}),
            "ipam.range",
            "198.51.100.0/31".into(),
        ),
        (
            "range /128",
            json!({"type": "hereabouts", "range": "2001:db8::1/128"}),
            "ipam.range",
            "2001:db8::1/128".into(),
        ),
        (
            "range ::/0 makes no object name",
            json!({"type": "hereabouts", "range": "::/0"}),
            "ipam.range",
            "::/0".into(),
        ),
        (
            "range mapped v4",
            json!({"type": "hereabouts", "range": "::ffff:198.51.100.0/120"}),
            "ipam.range",
            "::ffff:198.51.100.0/120".into(),
        ),
        (
            "range A-B inverted",
            json!({"type": "hereabouts", "range": "198.51.100.20-198.51.100.10/24"}),
            "ipam.range",
            "198.51.100.10".into(),
        ),
        (
            "range A-B start outside",
            json!({"type": "hereabouts", "range": "203.0.113.5-198.51.100.10/24"}),
            "ipam.range",
            "203.0.113.5".into(),
        ),
        (
            "range A-B garbage start",
            json!({"type": "hereabouts", "range": "x-198.51.100.10/24"}),
            "ipam.range",
            "\"x\"".into(),
        ),
        (
            "range_start garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_start": "x"}),
            "ipam.range_start",
            "x".into(),
        ),
        (
            "range_start outside",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_start": "203.0.113.5"}),
            "ipam.range_start",
            "203.0.113.5".into(),
        ),
        (
            "range_start other family",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_start": "2001:db8::5"}),
            "ipam.range_start",
            "2001:db8::5".into(),
        ),
        (
            "range_end garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_end": "1.2.3"}),
            "ipam.range_end",
            "1.2.3".into(),
        ),
        (
            "range_end before start",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_start": "198.51.100.50", "range_end": "198.51.100.10"}),
            "ipam.range_end",
            "198.51.100.10".into(),
        ),
        (
            "range_start number",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "range_start": 5}),
            "ipam.range_start",
            "5".into(),
        ),
        (
            "exclude not a list",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "exclude": "198.51.100.5"}),
            "ipam.exclude",
            "198.51.100.5".into(),
        ),
        (
            "exclude entry garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "exclude": ["198.51.100.5", "x/y"]}),
            "ipam.exclude[1]",
            "x/y".into(),
        ),
        (
            "exclude entry number",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "exclude": [5]}),
            "ipam.exclude[0]",
            "5".into(),
        ),
        (
            "exclude swallows all",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "exclude": ["198.51.100.0/24"]}),
            "ipam.exclude",
            "198.51.100.0/24".into(),
        ),
        (
            "exclude over the limit",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "exclude": huge_exclude}),
            "ipam.exclude",
            "1025".into(),
        ),
        (
            "ipRanges not a list",
            json!({"type": "hereabouts", "ipRanges": {"range": "198.51.100.0/24"}}),
            "ipam.ipRanges",
            "object".into(),
        ),
        (
            "ipRanges entry string",
            json!({"type": "hereabouts", "ipRanges": ["198.51.100.0/24"]}),
            "ipam.ipRanges[0]",
            "198.51.100.0/24".into(),
        ),
        (
            "ipRanges entry without range",
            json!({"type": "hereabouts", "ipRanges": [{"range_start": "198.51.100.5"}]}),
            "ipam.ipRanges[0].range",
            String::new(),
        ),
        (
            "ipRanges bad second",
            json!({"type": "hereabouts", "ipRanges": [{"range": "198.51.100.0/24"}, {"range": "2001:db8::/200"}]}),
            "ipam.ipRanges[1].range",
            "2001:db8::/200".into(),
        ),
        (
            "ipRanges duplicate",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "ipRanges": [{"range": "198.51.100.0/24"}]}),
            "ipam.ipRanges[0].range",
            "198.51.100.0/24".into(),
        ),
        (
            "ipRanges over the limit",
            json!({"type": "hereabouts", "ipRanges": huge_ranges}),
            "ipam.ipRanges",
            "65".into(),
        ),
        (
            "no range at all",
            json!({"type": "hereabouts"}),
            "ipam.range",
            String::new(),
        ),
        (
            "gateway garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "gateway": "gw"}),
            "ipam.gateway",
            "gw".into(),
        ),
        (
            "gateway number",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "gateway": 1}),
            "ipam.gateway",
            "1".into(),
        ),
        (
            "routes entry without dst",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "routes": [{"gw": "198.51.100.1"}]}),
            "ipam.routes[0].dst",
            String::new(),
        ),
        (
            "routes dst garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "routes": [{"dst": "everywhere"}]}),
            "ipam.routes[0].dst",
            "everywhere".into(),
        ),
        (
            "routes gw garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "router"}]}),
            "ipam.routes[0].gw",
            "router".into(),
        ),
        (
            "dns not an object",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "dns": ["1.1.1.1"]}),
            "ipam.dns",
            "array".into(),
        ),
        (
            "dns nameservers number",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "dns": {"nameservers": 5}}),
            "ipam.dns.nameservers",
            "5".into(),
        ),
        (
            "addresses entry garbage",
            json!({"type": "hereabouts", "addresses": [{"address": "nowhere"}]}),
            "ipam.addresses[0].address",
            "nowhere".into(),
        ),
        (
            "addresses entry without prefix",
            json!({"type": "hereabouts", "addresses": [{"address": "198.51.100.5"}]}),
            "ipam.addresses[0].address",
            "198.51.100.5".into(),
        ),
        (
            "network_name number",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "network_name": 5}),
            "ipam.network_name",
            "5".into(),
        ),
        (
            "network_name over the length limit",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "network_name": long_name.clone()}),
            "ipam.network_name",
            "nnnnnnnn".into(),
        ),
        (
            "network_name not a name",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "network_name": "Blue Net"}),
            "ipam.network_name",
            "Blue Net".into(),
        ),
        (
            "network_name with slash",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "network_name": "a/b"}),
            "ipam.network_name",
            "a/b".into(),
        ),
        (
            "overlapping not a bool",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "enable_overlapping_ranges": "yes"}),
            "ipam.enable_overlapping_ranges",
            "yes".into(),
        ),
        (
            "kubernetes not an object",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "kubernetes": "/etc/kubeconfig"}),
            "ipam.kubernetes",
            "/etc/kubeconfig".into(),
        ),
        (
            "kubeconfig number",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "kubernetes": {"kubeconfig": 5}}),
            "ipam.kubernetes.kubeconfig",
            "5".into(),
        ),
        (
            "leader lease as text",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "leader_lease_duration": "1500"}),
            "ipam.leader_lease_duration",
            "1500".into(),
        ),
        (
            "request_timeout 1e300",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 1e300}),
            "ipam.request_timeout",
            "1e+300".into(),
        ),
        (
            "request_timeout 1e19",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 1e19}),
            "ipam.request_timeout",
            "1e+19".into(),
        ),
        (
            "request_timeout u64 max",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": u64::MAX}),
            "ipam.request_timeout",
            "18446744073709551615".into(),
        ),
        (
            "request_timeout over an hour",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 3601}),
            "ipam.request_timeout",
            "3601".into(),
        ),
        (
            "request_timeout zero",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": 0}),
            "ipam.request_timeout",
            "0".into(),
        ),
        (
            "request_timeout negative",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": -30}),
            "ipam.request_timeout",
            "-30".into(),
        ),
        (
            "request_timeout text years",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": "1000000000y"}),
            "ipam.request_timeout",
            "1000000000y".into(),
        ),
        (
            "request_timeout text garbage",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": "soon"}),
            "ipam.request_timeout",
            "soon".into(),
        ),
        (
            "request_timeout bool",
            json!({"type": "hereabouts", "range": "198.51.100.0/24", "request_timeout": true}),
            "ipam.request_timeout",
            "true".into(),
        ),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for (name, ipam, field, value) in &cases {
        let e = refusal(&netconf(ipam.clone()));
        let text = e.to_string();
        assert!(
            e.field() == *field || text.starts_with(&format!("{field}:")),
            "{name}: names {:?}, not {field}: {text:.300}",
            e.field()
        );
        assert!(
            text.contains(value.as_str()),
            "{name}: does not show {value:?}: {text:.300}"
        );
        assert!(
            text.len() < 2000,
            "{name}: the message stays readable ({} bytes)",
            text.len()
        );
    }
}

#[test]
fn stdin_documents_are_refused_naming_field() {
    // (name, stdin, field named)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", b"".to_vec(), "stdin"),
        ("not JSON", b"{cniVersion: 1}".to_vec(), "stdin"),
        ("truncated", br#"{"cniVersion": "1.0.0", "ipam": {"type": "#.to_vec(), "stdin"),
        ("a string", br#""ipam""#.to_vec(), "stdin"),
        ("an array", br"[]".to_vec(), "stdin"),
        ("null", b"null".to_vec(), "stdin"),
        ("invalid UTF-8", b"{\"cniVersion\": \"\xff\xfe\"}".to_vec(), "stdin"),
        ("deep nesting", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "stdin"),
        ("ipam missing", br#"{"cniVersion": "1.0.0", "name": "n", "type": "macvlan"}"#.to_vec(), "ipam"),
        ("ipam a string", br#"{"cniVersion": "1.0.0", "name": "n", "ipam": "whereabouts"}"#.to_vec(), "ipam"),
        ("name a number", br#"{"cniVersion": "1.0.0", "name": 5, "ipam": {}}"#.to_vec(), "name"),
        ("cniVersion a number", br#"{"cniVersion": 1.0, "name": "n", "ipam": {}}"#.to_vec(), "cniVersion"),
        ("runtimeConfig.ips a string", br#"{"cniVersion": "1.0.0", "name": "n", "ipam": {}, "runtimeConfig": {"ips": "198.51.100.5"}}"#.to_vec(), "runtimeConfig.ips"),
        ("args.cni.ips numbers", br#"{"cniVersion": "1.0.0", "name": "n", "ipam": {}, "args": {"cni": {"ips": [5]}}}"#.to_vec(), "args.cni.ips[0]"),
    ];
    for (name, stdin, field) in &cases {
        let e = match NetConf::parse(stdin) {
            Ok(nc) => panic!("{name}: accepted {nc:?}"),
            Err(e) => e,
        };
        assert!(
            e.field() == *field || e.to_string().starts_with(field),
            "{name}: names {:?}, not {field}: {e}",
            e.field()
        );
    }
}

#[test]
fn hand_edited_pool_keys_hold_what_whereabouts_reads() {
    // (key, offset whereabouts' strconv.ParseInt(key, 10, 64) reads in a /24)
    let keys: &[(&str, Option<u128>)] = &[
        ("5", Some(5)),
        ("+6", Some(6)),
        ("007", Some(7)),
        ("-1", None),
        ("1e9", None),
        ("340282366920938463463374607431768211456", None),
        ("", None),
        (" 8", None),
        ("8 ", None),
        ("0x9", None),
        ("+", None),
        ("++9", None),
        ("٩", None),
        ("9.0", None),
    ];
    for (key, want) in keys {
        assert_eq!(parse_allocation_key(key), *want, "key {key:?}");
    }
    let range: IpRange = "198.51.100.0/24".parse().expect("range");
    let held = keys.iter().enumerate().map(|(i, (k, _))| {
        (
            *k,
            Allocation::new(format!("c{i}"), format!("ns/hand-{i}"), "net1"),
        )
    });
    let (mut pool, issues) = Pool::from_keyed(range, held);
    let invalid: Vec<String> = issues
        .iter()
        .filter_map(|i| match i {
            LoadIssue::InvalidKey { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(invalid.len(), 11, "{issues:?}");
    for (key, want) in keys {
        if want.is_none() {
            assert!(
                invalid.contains(&(*key).to_owned()),
                "{key:?} reported: {issues:?}"
            );
        }
    }
    // Offsets 1-4 are free; 5, 6 and 7 are held, whatever their key's spelling.
    let mut given = Vec::new();
    for i in 0..6 {
        let a = pool
            .allocate(Allocation::new(
                format!("new{i}"),
                format!("ns/new-{i}"),
                "net1",
            ))
            .expect("room");
        given.push(a.offset);
    }
    assert_eq!(given, [1, 2, 3, 4, 8, 9]);
}

#[test]
fn hand_edited_pool_offsets_outside_or_twice_are_reported_and_never_given_again() {
    let range: IpRange = "198.51.100.0/24".parse().expect("range");
    let a = |i: u32| Allocation::new(format!("c{i}"), format!("ns/p{i}"), "net1");
    let entries = vec![
        ("0", a(0)),   // the network address
        ("255", a(1)), // the last address
        ("256", a(2)), // beyond the /24
        ("18446744073709551616", a(3)),
        ("1", a(4)),
        ("01", a(5)), // the same offset spelled twice
        ("2", a(4)),  // one owner holding two addresses
    ];
    let (mut pool, issues) = Pool::from_keyed(range, entries);
    let labels: Vec<&str> = issues.iter().map(LoadIssue::metric_label).collect();
    for want in [
        "not_usable",
        "outside_cidr",
        "duplicate_offset",
        "duplicate_owner",
    ] {
        assert!(labels.contains(&want), "{want} in {issues:?}");
    }
    for issue in &issues {
        let text = issue.to_string();
        assert!(
            text.chars().any(|c| c.is_ascii_digit()),
            "names the offset: {text}"
        );
    }
    let next = pool.allocate(a(9)).expect("room");
    assert_eq!(next.offset, 3, "1 and 2 are held");
}

#[test]
fn claim_ranges_are_refused_naming_the_claim_field() {
    let huge: Vec<String> = (0..2000).map(|i| format!("2001:db8::{i:x}")).collect();
    let huge: Vec<&str> = huge.iter().map(String::as_str).collect();
    // (name, range, start, end, exclude, field, value)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Vec<&'a str>,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "empty range",
            "",
            None,
            None,
            vec![],
            "spec.ranges[0].range",
            "\"\"",
        ),
        (
            "garbage range",
            "x",
            None,
            None,
            vec![],
            "spec.ranges[0].range",
            "x",
        ),
        (
            "prefix 200",
            "2001:db8::/200",
            None,
            None,
            vec![],
            "spec.ranges[0].range",
            "200",
        ),
        (
            "host route",
            "100.64.0.1/32",
            None,
            None,
            vec![],
            "spec.ranges[0].range",
            "100.64.0.1/32",
        ),
        (
            "start garbage",
            "100.64.0.0/24",
            Some("start"),
            None,
            vec![],
            "spec.ranges[0].range_start",
            "start",
        ),
        (
            "end outside",
            "100.64.0.0/24",
            None,
            Some("100.63.0.1"),
            vec![],
            "spec.ranges[0].range_end",
            "100.63.0.1",
        ),
        (
            "inverted",
            "100.64.0.0/24",
            Some("100.64.0.9"),
            Some("100.64.0.2"),
            vec![],
            "spec.ranges[0].range_end",
            "100.64.0.2",
        ),
        (
            "exclude garbage",
            "100.64.0.0/24",
            None,
            None,
            vec!["100.64.0.0/99"],
            "spec.ranges[0].exclude[0]",
            "100.64.0.0/99",
        ),
        (
            "exclude everything",
            "100.64.0.0/30",
            None,
            None,
            vec!["100.64.0.1", "100.64.0.2"],
            "spec.ranges[0].exclude",
            "100.64.0.0/30",
        ),
        (
            "2,000 exclusions",
            "2001:db8::/64",
            None,
            None,
            huge,
            "spec.ranges[0].exclude",
            "2000",
        ),
    ];
    for (name, range, start, end, exclude, field, value) in &cases {
        let e = IpRange::parse(&RangeFields {
            path: "spec.ranges[0]",
            range,
            range_start: *start,
            range_end: *end,
            exclude,
        })
        .expect_err(name);
        let text = e.to_string();
        assert!(
            e.field().starts_with(field) || text.starts_with(field),
            "{name}: {text}"
        );
        assert!(
            text.contains(value),
            "{name}: does not show {value}: {text}"
        );
    }
}

#[test]
fn huge_values_are_quoted_bounded_naming_the_field() {
    let huge = "x".repeat(600_000);
    let range_value = format!("{huge}/24");
    let address_value = format!("{huge}-100.64.0.9/24");
    let prefix_value = format!("100.64.0.0/{huge}");
    // (range, start, exclude, field)
    let cases: Vec<(&str, Option<&str>, Vec<&str>, &str)> = vec![
        (&range_value, None, vec![], "spec.ranges[0].range"),
        (&prefix_value, None, vec![], "spec.ranges[0].range"),
        (&address_value, None, vec![], "spec.ranges[0].range"),
        (
            "100.64.0.0/24",
            Some(&huge),
            vec![],
            "spec.ranges[0].range_start",
        ),
        ("100.64.0.0/24", None, vec![&huge], "spec.ranges[0].exclude"),
    ];
    for (range, start, exclude, field) in cases {
        let err = IpRange::parse(&RangeFields {
            path: "spec.ranges[0]",
            range,
            range_start: start,
            range_end: None,
            exclude: &exclude,
        })
        .expect_err("refused");
        let message = err.to_string();
        assert!(message.starts_with(field), "{message:.300}");
        assert!(
            message.len() < 1000,
            "{field}: a {} byte message",
            message.len()
        );
        assert!(message.contains("bytes in all)"), "{message}");
    }
    let ipam = netconf(json!({"type": huge, "range": "198.51.100.0/24"}));
    let message = refusal(&ipam).to_string();
    assert!(
        message.starts_with("ipam.type") && message.len() < 1000,
        "{message:.300}"
    );
}
