//! The names a runtime gives an attachment: the interface name and the
//! container (sandbox) ID. The plugin checks them in the environment it is
//! given (`CNI_IFNAME`, `CNI_CONTAINERID`); the controller checks them
//! again in the claims it serves, which any holder of a node credential
//! can write. Both are copied into every allocation entry of the range's
//! shared IPPool, so an unbounded one would grow an object every other pod
//! of the range shares past what the API server stores.

/// The most bytes of a Linux interface name (`IFNAMSIZ` 16, with the NUL).
pub const MAX_IFNAME: usize = 15;

/// The most bytes of a container ID: runtimes use 64 hex digits (containerd,
/// CRI-O, Docker); eight times that leaves room for any runtime's scheme
/// while keeping a pool entry small.
pub const MAX_CONTAINER_ID: usize = 512;

/// libcni's `ValidateInterfaceName`: a Linux interface name. The reason
/// when it is not one.
pub fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.len() > MAX_IFNAME {
        Err("it is longer than 15 bytes (a Linux interface name)")
    } else if name == "." || name == ".." {
        Err("it cannot be \".\" or \"..\"")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Err("it cannot hold '/', ':', white space or control characters")
    } else {
        Ok(())
    }
}

/// libcni's `ValidateContainerID`, with a length bound. The reason when it
/// is not one.
pub fn check_container_id(id: &str) -> Result<(), &'static str> {
    let first_ok = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !first_ok || !rest_ok {
        Err("it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'")
    } else if id.len() > MAX_CONTAINER_ID {
        Err("it is longer than 512 bytes")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["net1", "eth0", "a", "fifteen-chars-x", "é"] {
            assert_eq!(check_ifname(ok), Ok(()), "{ok}");
        }
        let long = "n".repeat(MAX_IFNAME + 1);
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\nb", long.as_str()] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        assert!(check_ifname(&"n".repeat(1 << 20)).is_err());
    }

    #[test]
    fn container_ids() {
        let max = "a".repeat(MAX_CONTAINER_ID);
        for ok in ["0123abcd", "k8s_pod.x-1", max.as_str()] {
            assert_eq!(check_container_id(ok), Ok(()), "{ok:.20}");
        }
        let long = "a".repeat(MAX_CONTAINER_ID + 1);
        assert_eq!(
            check_container_id(&long),
            Err("it is longer than 512 bytes"),
            "the message says MAX_CONTAINER_ID"
        );
        for bad in ["", "-a", "a/b", "a b", "é"] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
    }
}
