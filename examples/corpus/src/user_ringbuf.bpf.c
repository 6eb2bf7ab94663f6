// SPDX-License-Identifier: GPL-2.0
// "user_ringbuf": userspace -> kernel messages over BPF_MAP_TYPE_USER_RINGBUF
// (map type 31, kernel 6.1), consumed with bpf_user_ringbuf_drain (helper
// 209, 6.1) whose callback gets each sample as a dynptr (bpf_dynptr_read,
// helper 201, 5.19).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct cmd {
	u32 op;
	u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 256 * 1024);
} commands SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u32);
} watched SEC(".maps");

static long handle_cmd(struct bpf_dynptr *dynptr, void *ctx)
{
	struct cmd c;

	if (bpf_dynptr_read(&c, sizeof(c), dynptr, 0, 0))
		return 1; /* stop draining */
	if (c.op == 1)
		bpf_map_update_elem(&watched, &c.pid, &c.op, BPF_ANY);
	else
		bpf_map_delete_elem(&watched, &c.pid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int drain_commands(void *ctx)
{
	bpf_user_ringbuf_drain(&commands, handle_cmd, NULL, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
