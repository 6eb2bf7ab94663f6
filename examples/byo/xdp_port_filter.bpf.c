// SPDX-License-Identifier: GPL-2.0
// A stand-alone XDP program of the kind people write without any of our tooling:
// drop TCP to port 23 (telnet) and UDP to port 69 (tftp), pass everything else.
// Build: clang -O2 -g -target bpf -mcpu=v2 -idirafter /usr/include/x86_64-linux-gnu -c xdp_port_filter.bpf.c
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#define SEC(name) __attribute__((section(name), used))

SEC("xdp")
int port_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return XDP_PASS;
#ifdef PORT_FILTER_SLOW
	unsigned char *bytes = data;
	unsigned int h = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < 512; i++)
		h = h * 31 + bytes[i & 7];
	// Never true for a real header hash of these packets; keeps the loop.
	if (h == 0x6b6b6b6b)
		return XDP_ABORTED;
#endif
	void *l4 = (void *)ip + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return XDP_PASS;
		if (tcp->dest == __builtin_bswap16(23))
			return XDP_DROP;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return XDP_PASS;
		if (udp->dest == __builtin_bswap16(69))
			return XDP_DROP;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
