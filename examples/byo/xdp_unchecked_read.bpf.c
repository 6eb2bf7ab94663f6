// SPDX-License-Identifier: GPL-2.0
// A classic verifier rejection: reading the IPv4 header without checking it lies
// before data_end. Every kernel must refuse this program.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(name) __attribute__((section(name), used))

SEC("xdp")
int unchecked_read(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	struct iphdr *ip = data + sizeof(struct ethhdr);

	/* missing: if ((void *)(ip + 1) > (void *)(long)ctx->data_end) return XDP_PASS; */
	return ip->protocol == 6 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
