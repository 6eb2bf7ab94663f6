// SPDX-License-Identifier: GPL-2.0
// "btf_tracing": the BTF-powered (trampoline) variants of the same probes, as
// modern libbpf-tools (vfsstat, filetop) ship them: fentry/fexit (5.5), tp_btf
// (5.5) and an LSM hook (BPF_PROG_TYPE_LSM, 5.7, needs CONFIG_BPF_LSM=y to load
// and "bpf" in the active LSM list to attach).
// The targets are chosen to exist in every kernel of the matrix: vfs_read has
// kept its signature since 2.6; do_unlinkat (the libbpf-bootstrap example) is
// gone in 7.2, where it is called filename_unlinkat, and fentry/fexit on it
// fail at load time there (libbpf: "failed to find kernel BTF type ID").
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, u64);
} reads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, u32);
	__type(value, u64);
} read_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} execs SEC(".maps");

SEC("fentry/vfs_read")
int BPF_PROG(read_fentry, struct file *file, char *buf, size_t count, loff_t *pos)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u64 one = 1, *v;

	v = bpf_map_lookup_elem(&reads, &tgid);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&reads, &tgid, &one, BPF_NOEXIST);
	return 0;
}

SEC("fexit/vfs_read")
int BPF_PROG(read_fexit, struct file *file, char *buf, size_t count, loff_t *pos,
	     ssize_t ret)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u64 *v;

	if (ret <= 0)
		return 0;
	v = bpf_map_lookup_elem(&read_bytes, &tgid);
	if (v)
		__sync_fetch_and_add(v, ret);
	else
		bpf_map_update_elem(&read_bytes, &tgid, &ret, BPF_NOEXIST);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 zero = 0;
	u64 *v = bpf_map_lookup_elem(&execs, &zero);

	/* direct BTF pointer access, no bpf_probe_read needed in tp_btf */
	if (v && p->pid != old_pid)
		*v += 1;
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(lsm_file_open, struct file *file)
{
	/* audit-only policy: count opens, never deny */
	u32 zero = 0;
	u64 *v = bpf_map_lookup_elem(&execs, &zero);

	if (v && (file->f_flags & 01000000 /* O_CLOEXEC */))
		*v += 0;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
