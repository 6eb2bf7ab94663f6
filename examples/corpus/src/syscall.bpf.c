// SPDX-License-Identifier: GPL-2.0
// "syscall": a BPF_PROG_TYPE_SYSCALL program (5.14), run from userspace with
// BPF_PROG_RUN; it is sleepable and may call bpf_sys_bpf (helper 166, 5.14),
// the building block of light skeleton loaders. Here it creates an array map.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct args {
	int map_fd;
	u32 max_entries;
};

SEC("syscall")
int create_map(struct args *ctx)
{
	union bpf_attr attr = {};

	attr.map_type = BPF_MAP_TYPE_ARRAY;
	attr.key_size = 4;
	attr.value_size = 8;
	attr.max_entries = ctx->max_entries;
	ctx->map_fd = bpf_sys_bpf(BPF_MAP_CREATE, &attr, sizeof(attr));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
