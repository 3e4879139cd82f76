#!/usr/bin/env bash
# Exit 0 when this kernel can make ipvlan links, 1 (saying why) when it cannot.
set -u
probe=hbiv$RANDOM
ip link add "${probe}m" type veth peer name "${probe}p" 2>/dev/null || { echo "cannot make a veth to probe ipvlan" >&2; exit 1; }
if ip link add "${probe}i" link "${probe}m" type ipvlan mode l2 2>/dev/null; then
  ip link del "${probe}i"; ip link del "${probe}m"; exit 0
fi
ip link del "${probe}m" 2>/dev/null
echo "not run: no ipvlan in this kernel ($(uname -r))" >&2
exit 1
