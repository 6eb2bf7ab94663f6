// SPDX-License-Identifier: GPL-2.0
// "profile": a sampling profiler (perf_event, 4.9). The `counts` map is left
// at max_entries 0 in the object, as libbpf-tools' profile does with its
// -stack-storage-size / -max-entries options: the loader MUST call
// bpf_map__set_max_entries() before load, otherwise map creation fails
// (EINVAL). Filters are `const volatile` rodata.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define MAX_STACK_DEPTH 127

const volatile pid_t targ_pid = -1;
const volatile bool user_stacks_only = false;
const volatile bool kernel_stacks_only = false;

struct key_t {
	u32 pid;
	s32 kern_stack_id;
	s32 user_stack_id;
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384);
	__type(key, u32);
	__uint(value_size, MAX_STACK_DEPTH * sizeof(u64));
} stackmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0); /* set by the loader */
	__type(key, struct key_t);
	__type(value, u64);
} counts SEC(".maps");

SEC("perf_event")
int do_perf_event(struct bpf_perf_event_data *ctx)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 pid = id >> 32;
	struct key_t key = {};
	u64 one = 1, *v;

	if (targ_pid != -1 && targ_pid != pid)
		return 0;
	key.pid = pid;
	bpf_get_current_comm(&key.name, sizeof(key.name));
	key.kern_stack_id = user_stacks_only ? -1 : bpf_get_stackid(&ctx->regs, &stackmap, 0);
	key.user_stack_id = kernel_stacks_only ? -1 :
		bpf_get_stackid(&ctx->regs, &stackmap, BPF_F_USER_STACK);
	v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
