// SPDX-License-Identifier: GPL-2.0
// "kfunc_task": sigsnoop-style lookup of the *target* task of a signal with the
// kfuncs bpf_task_from_pid() / bpf_task_release() (both first in v6.2:
// commits 3f0e6f2b41d3 and 90660309b0c7, merged for 6.2). The program type is
// tp_btf (BPF_PROG_TYPE_TRACING), which can call these kfuncs since 6.2.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;

struct sig_event {
	u32 sender;
	u32 target;
	int sig;
	char target_comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, struct sig_event);
} last_sig SEC(".maps");

SEC("tp_btf/signal_generate")
int BPF_PROG(sig_generate, int sig, struct kernel_siginfo *info,
	     struct task_struct *task, int group, int result)
{
	struct sig_event ev = {};
	struct task_struct *t;

	ev.sender = bpf_get_current_pid_tgid() >> 32;
	ev.target = task->tgid;
	ev.sig = sig;
	t = bpf_task_from_pid(ev.target);
	if (!t)
		return 0;
	bpf_probe_read_kernel_str(ev.target_comm, sizeof(ev.target_comm), t->comm);
	bpf_task_release(t);
	bpf_map_update_elem(&last_sig, &ev.sender, &ev, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
