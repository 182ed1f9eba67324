//! Lodestar's load-balancer control: the BPF loader, typed map wrappers, Maglev tables and the
//! reconciler from a catalog `Snapshot` to maps. Built in the "VIPs" issues.
