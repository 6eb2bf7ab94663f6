// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * USDT tracer for test_grp:test_idx: reads arg0, counts hits, sums arg0 and
 * sends each value through a ring buffer. Attached by libbpf (usdt.bpf.h),
 * which resolves the argument's location from the binary's .note.stapsdt.
 *
 * Built with clang -g -O2 -mcpu=v2 and no vmlinux.h: __sync_fetch_and_add with
 * an unused result is the old BPF_XADD, which 5.10 accepts.
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* 0 = any process (the attach also filters by pid when asked). */
const volatile __u32 target_pid = 0;

__u64 hits = 0;
__u64 sum = 0;
__u64 arg_errors = 0;
__u64 dropped = 0;
/* The last bpf_usdt_arg failure (-errno) and the IP it happened at: -ESRCH means
 * libbpf found no spec for the IP (without BPF cookies, before 5.15, specs are
 * looked up by IP), anything else a failed read of the argument. */
__s64 last_arg_error = 0;
__u64 last_error_ip = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} values SEC(".maps");

SEC("usdt")
int test_idx(struct pt_regs *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	long arg = 0;
	__s64 *slot;

	if (target_pid && pid != target_pid)
		return 0;
	long err = bpf_usdt_arg(ctx, 0, &arg);
	if (err) {
		__sync_fetch_and_add(&arg_errors, 1);
		last_arg_error = err;
		last_error_ip = PT_REGS_IP(ctx);
		return 0;
	}
	__sync_fetch_and_add(&hits, 1);
	__sync_fetch_and_add(&sum, arg);
	slot = bpf_ringbuf_reserve(&values, sizeof(*slot), 0);
	if (!slot) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	*slot = arg;
	bpf_ringbuf_submit(slot, 0);
	return 0;
}
