/* Shared by profiler.bpf.c and (mirrored by hand) programs/profiler/src/lib.rs. */
#ifndef KM_PROFILER_H
#define KM_PROFILER_H

#define TASK_COMM_LEN 16
#define MAX_STACK_DEPTH 127

struct stack_event {
	__u64 ts_ns;          /* bpf_ktime_get_ns() */
	__u32 pid;            /* thread group id */
	__u32 tid;
	__u32 cpu;
	__s32 kstack_sz;      /* bytes written by bpf_get_stack, or -errno */
	__s32 ustack_sz;
	__u32 _pad;
	char comm[TASK_COMM_LEN];
	__u64 kstack[MAX_STACK_DEPTH];
	__u64 ustack[MAX_STACK_DEPTH];
};

#endif
