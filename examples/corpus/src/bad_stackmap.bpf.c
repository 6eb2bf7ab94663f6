// SPDX-License-Identifier: GPL-2.0
// "bad_stackmap": a map no kernel creates: a stack trace map whose value_size (12)
// is not a whole number of 8-byte frames. libbpf creates every map of an object
// before loading any program and has no fix-up for this one (it does round a ring
// buffer's size up to a power of two), so the load fails at map creation (EINVAL)
// and never reaches the verifier; the cause names the map and the parameter.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(u32));
	__uint(value_size, 12);
	__uint(max_entries, 128);
} stacks SEC(".maps");

SEC("kprobe/vfs_write")
int BPF_KPROBE(write_stack)
{
	bpf_get_stackid(ctx, &stacks, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
