// SPDX-License-Identifier: GPL-2.0
// "tracing": a classic multi-program tracing tool (unlinksnoop/opensnoop style).
// Four program types that all predate 5.10: kprobe, kretprobe, tracepoint, raw_tp.
// The pid/uid filters are `const volatile` globals in .rodata that the loader
// fills in before load (needs global data, kernel 5.2).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

const volatile pid_t targ_tgid = 0;
const volatile bool targ_failed_only = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, u32);   /* tid */
	__type(value, u64); /* start ns */
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

enum { CNT_UNLINK, CNT_UNLINK_FAIL, CNT_OPENAT, CNT_SWITCH };

static __always_inline bool filtered(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return targ_tgid && targ_tgid != tgid;
}

static __always_inline void bump(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("kprobe/do_unlinkat")
int BPF_KPROBE(unlink_entry, int dfd, struct filename *name)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 ts = bpf_ktime_get_ns();

	if (filtered())
		return 0;
	bpf_map_update_elem(&start, &tid, &ts, BPF_ANY);
	return 0;
}

SEC("kretprobe/do_unlinkat")
int BPF_KRETPROBE(unlink_exit, long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 *tsp = bpf_map_lookup_elem(&start, &tid);

	if (!tsp)
		return 0;
	bpf_map_delete_elem(&start, &tid);
	if (targ_failed_only && ret >= 0)
		return 0;
	bump(ret < 0 ? CNT_UNLINK_FAIL : CNT_UNLINK);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter(struct trace_event_raw_sys_enter *ctx)
{
	char fname[64];

	if (filtered())
		return 0;
	bpf_probe_read_user_str(fname, sizeof(fname), (const char *)ctx->args[1]);
	bump(CNT_OPENAT);
	return 0;
}

SEC("raw_tp/sched_switch")
int BPF_PROG(sched_switch_raw, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	pid_t pid = BPF_CORE_READ(next, pid);

	if (pid)
		bump(CNT_SWITCH);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
