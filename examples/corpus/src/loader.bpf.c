// SPDX-License-Identifier: GPL-2.0
// "loader": what a tool's loader does before load, and what happens without it.
// - stack_count: a stack trace map left at value_size 0, as libbpf-tools' offcputime
//   and profile leave it (their loader calls bpf_map__set_value_size with
//   perf_max_stack_depth * 8); kernel-matrix sets 127 * 8 like a real loader.
// - placeholder_read: SEC("fentry/dummy_kprobe_target"), a placeholder the loader
//   replaces (bpf_program__set_attach_target); the manifest's attach_to: names
//   vfs_read, which every kernel of the matrix has.
// - unlink_new: fentry on filename_unlinkat, the 7.2 name of do_unlinkat: the
//   target exists on 7.2 and newer only; older kernels reject it at load (libbpf
//   finds no BTF id) and the message names do_unlinkat as the nearest function.
// - unlink_old: fentry on do_unlinkat: the reverse, gone from 7.2.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(u32));
	__uint(max_entries, 1024);
	/* value_size left to the loader */
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u64);
} hits SEC(".maps");

static __always_inline void count(u32 key)
{
	u64 one = 1, *v = bpf_map_lookup_elem(&hits, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&hits, &key, &one, BPF_NOEXIST);
}

SEC("kprobe/vfs_read")
int BPF_KPROBE(stack_count)
{
	long id = bpf_get_stackid(ctx, &stacks, 0);

	if (id >= 0)
		count((u32)id);
	return 0;
}

SEC("fentry/dummy_kprobe_target")
int BPF_PROG(placeholder_read)
{
	count(1);
	return 0;
}

SEC("fentry/filename_unlinkat")
int BPF_PROG(unlink_new)
{
	count(2);
	return 0;
}

SEC("fentry/do_unlinkat")
int BPF_PROG(unlink_old)
{
	count(3);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
