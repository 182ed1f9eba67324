//! Forwarding of names outside our zones to upstream resolvers (being written).
