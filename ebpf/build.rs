//! Compiles the BPF programs in `bpf/` with clang (Debian's `clang-19`, or `$LODESTAR_CLANG`).

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["sock_lb", "xdp_lb", "xdp_floor"];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-env-changed=LODESTAR_CLANG");
    let clang = std::env::var("LODESTAR_CLANG").unwrap_or_else(|_| {
        ["clang-19", "clang"]
            .iter()
            .find(|c| Command::new(c).arg("--version").output().is_ok())
            .unwrap_or(&"clang-19")
            .to_string()
    });
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    for prog in PROGRAMS {
        let src = dir.join("bpf").join(format!("{prog}.c"));
        let obj = out.join(format!("{prog}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg("-I")
            .arg(dir.join("include"))
            .arg("-idirafter")
            .arg(&arch_include)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to compile the BPF programs: {e}\n\
                     install it with: apt-get install clang-19 llvm-19 libbpf-dev \
                     (or set LODESTAR_CLANG)"
                )
            });
        assert!(
            status.success(),
            "{clang} failed on {} (needs libbpf-dev for <bpf/bpf_helpers.h>)",
            src.display()
        );
    }
}
