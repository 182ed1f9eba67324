/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * A BTF-defined map pinned by name under the agent's pin path, where the loader adopts it
 * after checking its type, key and value sizes and capacity (l4lb/src/adopt.rs). `flags` is
 * the map's map_flags (0 for none).
 */
#ifndef PINNED_MAP_H
#define PINNED_MAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PINNED_MAP(name, map_type, entries, key_type, value_type, flags) \
	struct {                                                         \
		__uint(type, map_type);                                  \
		__uint(max_entries, entries);                            \
		__uint(map_flags, flags);                                \
		__type(key, key_type);                                   \
		__type(value, value_type);                               \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                     \
	} name SEC(".maps")

#endif /* PINNED_MAP_H */
