# Shared by scripts/run and scripts/test: install the Debian packages that are missing, then
# check that what each one provides is really there. Sourced, not run.
#
# Packages are installed with --no-install-recommends, so every package the build and the
# tests use is named here, even where another package merely recommends it (protoc's
# google/protobuf/*.proto files are in libprotobuf-dev, only a Recommends of protobuf-compiler).

# What building Lodestar needs, as `thing|package`: a thing is a command (looked up on PATH)
# or an absolute path (a header, a .proto file). protoc and the protobuf include files for
# etcd-client's generated gRPC code, a C toolchain (also for ring, the cryptography under
# rustls, etcd-client's TLS to etcd) and OpenSSL's headers for the native-tls crates (TLS to
# Mesos masters), clang with libbpf's and the kernel's headers for the BPF programs in ebpf/.
BUILD_PREREQUISITES=(
    "protoc|protobuf-compiler"
    "/usr/include/google/protobuf/descriptor.proto|libprotobuf-dev"
    "/usr/include/google/protobuf/struct.proto|libprotobuf-dev"
    "cc|gcc"
    "/usr/include/stdio.h|libc6-dev"
    "pkg-config|pkg-config"
    "/usr/include/openssl/ssl.h|libssl-dev"
    "clang-19|clang-19"
    "/usr/include/bpf/bpf_helpers.h|libbpf-dev"
    "/usr/include/linux/bpf.h|linux-libc-dev"
)
# What running the demo needs besides: iproute2, for the routes that keep the demo VIPs from
# leaving the machine unsteered; dig and curl, for the README's tour.
RUN_PREREQUISITES=(
    "ip|iproute2"
    "dig|dnsutils"
    "curl|curl"
)
# What the tests need besides: a real etcd and etcdctl, dig (a real DNS client), openssl
# (certificates for the HTTPS master and etcd's TLS), iproute2 (network namespaces for the
# two-site and VIP tests), bpftool (to check what is attached to a cgroup after detach), and
# ethtool (full checksums on a test veth, as a real NIC delivers them to XDP). The benchmarks'
# peers come along, so `cargo bench` works after `scripts/test`: Knot and dnsperf (DNS),
# nftables (DNAT beside the VIP paths), nginx (the VIP benchmark's backends).
TEST_PREREQUISITES=(
    "etcd|etcd-server"
    "etcdctl|etcd-client"
    "dig|dnsutils"
    "openssl|openssl"
    "ip|iproute2"
    "bpftool|bpftool"
    "ethtool|ethtool"
    "knotd|knot"
    "dnsperf|dnsperf"
    "nft|nftables"
    "nginx|nginx-light"
)

# packages_of PREREQ...: the package names, once each.
packages_of() {
    local p
    for p in "$@"; do echo "${p#*|}"; done | sort -u
}

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

# check_prerequisites PREREQ...: fails with one line per missing thing, naming its package.
check_prerequisites() {
    local p thing pkg missing=0
    for p in "$@"; do
        thing="${p%%|*}"
        pkg="${p#*|}"
        if [[ "$thing" == /* ]]; then
            [ -e "$thing" ] && continue
        else
            command -v "$thing" >/dev/null 2>&1 && continue
            # Debian puts some daemons and admin tools in sbin, off a non-root PATH.
            [ -x "/usr/sbin/$thing" ] || [ -x "/sbin/$thing" ] && continue
        fi
        echo "error: $thing is missing (Debian package $pkg)" >&2
        missing=1
    done
    [ "$missing" -eq 0 ] || exit 1
}

# install_prerequisites PREREQ...: installs their packages, then checks each one.
install_prerequisites() {
    # shellcheck disable=SC2046
    ensure_packages $(packages_of "$@")
    check_prerequisites "$@"
}

require_cargo() {
    command -v cargo >/dev/null || {
        echo "error: cargo not found: Lodestar builds with stable Rust (rustup.rs)" >&2
        exit 1
    }
}
