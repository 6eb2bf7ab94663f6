// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Sampling profiler: a perf_event program run on every sample of a
 * (hardware or software cpu-clock) perf event, one per online CPU.
 * Each sample becomes one ring buffer record with the kernel and user stacks.
 *
 * Built by programs/profiler/build.rs with clang -g -O2 -mcpu=v2 and no
 * vmlinux.h: only UAPI headers and libbpf's bpf_helpers.h, so the object is
 * the same for every kernel from 5.10 (ring buffer needs 5.8) to 7.x.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "profiler.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by userspace before load; 0 = every process. */
const volatile __u32 target_pid = 0;

/* Samples dropped because the ring buffer was full. */
__u64 dropped = 0;
/* Samples the program saw (before any pid filtering it passed). */
__u64 seen = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

SEC("perf_event")
int profile(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct stack_event *e;

	if (target_pid && pid != target_pid)
		return 0;
	__sync_fetch_and_add(&seen, 1);

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&dropped, 1);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid;
	e->tid = (__u32)id;
	e->cpu = bpf_get_smp_processor_id();
	e->_pad = 0;
	if (bpf_get_current_comm(e->comm, sizeof(e->comm)))
		e->comm[0] = 0;
	e->kstack_sz = bpf_get_stack(ctx, e->kstack, sizeof(e->kstack), 0);
	e->ustack_sz = bpf_get_stack(ctx, e->ustack, sizeof(e->ustack), BPF_F_USER_STACK);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
