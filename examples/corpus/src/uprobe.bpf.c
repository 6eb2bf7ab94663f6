// SPDX-License-Identifier: GPL-2.0
// "uprobe": a memleak/ksyscall style tool: uprobe + uretprobe on libc malloc
// (BPF_PROG_TYPE_KPROBE, uprobes 4.3) and a ksyscall probe (libbpf's
// SEC("ksyscall/kill"): a kprobe on the arch syscall wrapper __x64_sys_kill,
// which exists since 4.17; BPF_KSYSCALL reads the wrapped pt_regs with CO-RE).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, u64);
} sizes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);   /* address */
	__type(value, u64); /* size */
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} kills SEC(".maps");

SEC("uprobe//lib/x86_64-linux-gnu/libc.so.6:malloc")
int BPF_UPROBE(malloc_enter, size_t size)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 sz = size;

	bpf_map_update_elem(&sizes, &tid, &sz, BPF_ANY);
	return 0;
}

SEC("uretprobe//lib/x86_64-linux-gnu/libc.so.6:malloc")
int BPF_URETPROBE(malloc_exit, void *addr)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 a = (u64)addr, *sz;

	sz = bpf_map_lookup_elem(&sizes, &tid);
	if (!sz)
		return 0;
	if (a)
		bpf_map_update_elem(&allocs, &a, sz, BPF_ANY);
	bpf_map_delete_elem(&sizes, &tid);
	return 0;
}

SEC("ksyscall/kill")
int BPF_KSYSCALL(kill_entry, pid_t pid, int sig)
{
	u32 zero = 0;
	u64 *v;

	if (sig != 9)
		return 0;
	v = bpf_map_lookup_elem(&kills, &zero);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
