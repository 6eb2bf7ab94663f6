// SPDX-License-Identifier: GPL-2.0 OR MIT
// FizzBuzzFibonacci with bpf_loop (5.17+): the Fibonacci walk runs in a bpf_loop
// callback. Same verdicts as the Rust classifier (xdp-classifier-common): Fizz,
// Buzz and FizzBuzz are dropped, everything else passes. It exists so the matrix
// shows a feature gate at work: ignored below 5.17, checked from 6.1 on.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

#define SEC(name) __attribute__((section(name), used))

static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)BPF_FUNC_loop;

struct fib_walk {
	__u32 n;
	__u32 a;
	__u32 b;
	__u32 found;
};

static long fib_step(__u64 index, void *data)
{
	struct fib_walk *w = data;

	if (w->a == w->n) {
		w->found = 1;
		return 1; /* stop */
	}
	__u32 next = w->a + w->b;
	w->a = w->b;
	w->b = next;
	return 0;
}

SEC("xdp")
int xdp_classifier_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end)
		return XDP_PASS;
	if (eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return XDP_PASS;

	__u8 n = __builtin_bswap32(ip->saddr) & 0xff;
	struct fib_walk w = { .n = n, .a = 0, .b = 1, .found = 0 };
	bpf_loop(14, fib_step, &w, 0);

	if (w.found)
		return XDP_PASS; /* Fibonacci */
	if (n % 3 == 0 || n % 5 == 0)
		return XDP_DROP; /* Fizz, Buzz, FizzBuzz */
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
