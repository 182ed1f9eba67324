//! Lodestar's DNS side: zones built from a catalog `Snapshot`, authoritative answers for the
//! `mesos` and `thisdcos.directory` zones, and forwarding. Built in the "DNS" issue.
