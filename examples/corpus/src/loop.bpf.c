// SPDX-License-Identifier: GPL-2.0
// "loop": bpf_loop (helper 181, kernel 5.17) runs a callback up to 1<<23
// times without the verifier unrolling it. Older verifiers reject the call
// as "invalid func unknown#181".
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct loop_ctx {
	u64 fds;
	u64 sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} result SEC(".maps");

static long step(u64 i, struct loop_ctx *lc)
{
	lc->sum += i * lc->fds;
	return 0; /* continue */
}

SEC("tracepoint/syscalls/sys_enter_close")
int close_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct loop_ctx lc = { .fds = ctx->args[0], .sum = 0 };
	u32 zero = 0;
	u64 *v;

	bpf_loop(1000, step, &lc, 0);
	v = bpf_map_lookup_elem(&result, &zero);
	if (v)
		*v = lc.sum;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
