# Shared by scripts/run and scripts/test: install Debian packages that are missing.
# Sourced, not run.

# ensure_packages PKG...: apt-get installs the ones not installed yet (one `apt-get update` first).
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing packages ${missing[*]}; run this script as root so it can install them" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What building Lodestar needs: protoc for etcd-client's generated gRPC code, OpenSSL's
# headers for TLS to Mesos masters, and clang with libbpf's and the kernel's headers for the
# BPF programs in ebpf/.
BUILD_PACKAGES=(protobuf-compiler libssl-dev pkg-config clang-19 libbpf-dev linux-libc-dev)
# What the tests need besides: a real etcd and etcdctl, dig (a real DNS client), and openssl
# (a certificate for the HTTPS master), iproute2 (network namespaces for the two-site and VIP
# tests), bpftool (to check what is attached to a cgroup after detach), and ethtool (full
# checksums on a test veth, as a real NIC delivers them to XDP).
TEST_PACKAGES=(etcd-server etcd-client dnsutils openssl iproute2 bpftool ethtool)

require_cargo() {
    command -v cargo >/dev/null || {
        echo "error: cargo not found: Lodestar builds with stable Rust (rustup.rs)" >&2
        exit 1
    }
}
