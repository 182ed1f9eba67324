//! Lodestar's BPF programs, written in C and compiled by clang from this crate's build script.
//! The programs and the shared header arrive with the "VIPs" issues.
