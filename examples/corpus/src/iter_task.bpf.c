// SPDX-License-Identifier: GPL-2.0
// "iter_task": a BPF iterator over all tasks (a `ps` in BPF): SEC("iter/task")
// is BPF_PROG_TYPE_TRACING with expected attach BPF_TRACE_ITER; task iterators
// and bpf_seq_printf arrived in 5.8.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	if (ctx->meta->seq_num == 0)
		BPF_SEQ_PRINTF(seq, "    tgid      pid comm\n");
	BPF_SEQ_PRINTF(seq, "%8d %8d %s\n", task->tgid, task->pid, task->comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
