// SPDX-License-Identifier: GPL-2.0
// "cookie": one kprobe program attached to many functions, each attachment
// tagged by a BPF cookie; bpf_get_attach_cookie (helper 174) arrived in 5.15
// for kprobe/uprobe/tracepoint/perf_event programs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, u64);   /* cookie = function index chosen by userspace */
	__type(value, u64); /* hits */
} hits SEC(".maps");

SEC("kprobe")
int BPF_KPROBE(func_hit)
{
	u64 cookie = bpf_get_attach_cookie(ctx);
	u64 one = 1, *v;

	v = bpf_map_lookup_elem(&hits, &cookie);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&hits, &cookie, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
