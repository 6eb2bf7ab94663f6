// SPDX-License-Identifier: GPL-2.0
// "iter_num": open-coded numeric iterator through libbpf's bpf_for() macro, i.e.
// the kfuncs bpf_iter_num_new/next/destroy (kernel 6.4, "bpf: implement
// numbers iterator", March 2023). The program is tp_btf
// (BPF_PROG_TYPE_TRACING), which may call these kfuncs from 6.4; classic
// tracepoint/perf_event programs may call them only from 6.12 (per
// docs.ebpf.io; not measured here).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef bpf_for
#error "bpf_for needs libbpf >= 1.2 headers (bpf_helpers.h)"
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, u32);
	__type(value, u64);
} hist SEC(".maps");

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fork_hist, struct task_struct *parent, struct task_struct *child)
{
	u64 total = 0;
	int i;

	/* sum the histogram buckets, then bump the one for this parent's nr_threads */
	bpf_for(i, 0, 64) {
		u32 k = i;
		u64 *v = bpf_map_lookup_elem(&hist, &k);

		if (v)
			total += *v;
	}
	{
		u32 k = parent->signal->nr_threads & 63;
		u64 *v = bpf_map_lookup_elem(&hist, &k);

		if (v)
			__sync_fetch_and_add(v, 1);
	}
	if (total > (1ULL << 62)) {
		u32 k = 0;

		bpf_map_delete_elem(&hist, &k); /* arrays refuse: a no-op guard */
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
