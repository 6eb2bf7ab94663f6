// SPDX-License-Identifier: GPL-2.0
// "net": one packet-accounting tool with four attach points sharing one map:
// XDP (4.8), tc classifier SEC("tc") = BPF_PROG_TYPE_SCHED_CLS (4.1, direct
// packet access 4.7), socket filter (3.19) and cgroup_skb/egress (4.10).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define TC_ACT_OK 0

enum { HOOK_XDP, HOOK_TC, HOOK_SOCK, HOOK_CGROUP, HOOK_MAX };

struct stats {
	u64 packets;
	u64 bytes;
	u64 ipv4;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX);
	__type(key, u32);
	__type(value, struct stats);
} hook_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);   /* IPv4 saddr */
	__type(value, u64); /* packets */
} by_src SEC(".maps");

static __always_inline void account(u32 hook, u64 len, bool ipv4)
{
	struct stats *s = bpf_map_lookup_elem(&hook_stats, &hook);

	if (!s)
		return;
	s->packets++;
	s->bytes += len;
	if (ipv4)
		s->ipv4++;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	u64 one = 1, *v;
	u32 saddr;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		account(HOOK_XDP, data_end - data, false);
		return XDP_PASS;
	}
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;
	account(HOOK_XDP, data_end - data, true);
	saddr = iph->saddr;
	v = bpf_map_lookup_elem(&by_src, &saddr);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&by_src, &saddr, &one, BPF_NOEXIST);
	return XDP_PASS;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	account(HOOK_TC, skb->len, skb->protocol == bpf_htons(ETH_P_IP));
	return TC_ACT_OK;
}

SEC("socket")
int sock_count(struct __sk_buff *skb)
{
	u8 ver = 0;

	/* socket filters have no direct packet access: use bpf_skb_load_bytes */
	if (bpf_skb_load_bytes(skb, 0, &ver, 1) == 0)
		account(HOOK_SOCK, skb->len, (ver >> 4) == 4);
	return skb->len; /* keep the whole packet */
}

SEC("cgroup_skb/egress")
int cgroup_egress(struct __sk_buff *skb)
{
	account(HOOK_CGROUP, skb->len, skb->protocol == bpf_htons(ETH_P_IP));
	return 1; /* allow */
}

char LICENSE[] SEC("license") = "GPL";
