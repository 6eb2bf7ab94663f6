// SPDX-License-Identifier: GPL-2.0 OR MIT
// Hardware counters (instructions, cycles, ...) around each run of one BPF
// program, taken the way `bpftool prog profile` takes them (its profiler.bpf.c):
// an fentry program reads every counter when the target starts, an fexit program
// when it returns. Unlike bpftool, which only sums, every run's difference is kept
// (`runs`), so the agent reports per-run medians and spread, and the counters'
// enabled/running times, so a multiplexed counter is scaled and marked.
//
// The agent sets the attach target (the program to profile, by fd), `num_cpu`
// and `num_metric`, sizes `events` (one perf event per CPU and metric, at
// cpu + metric * num_cpu as in bpftool) and fills it before attaching. The code
// between the readings follows bpftool's profiler closely, so that both count the
// same instructions around a run (the agent cross-checks against bpftool).
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)BPF_FUNC_get_smp_processor_id;
static long (*bpf_perf_event_read_value)(void *map, __u64 flags, struct bpf_perf_event_value *buf,
					 __u32 buf_size) = (void *)BPF_FUNC_perf_event_read_value;

#define MAX_METRICS 4
#define MAX_RUNS 4096

/* Set by the agent before loading (read-only data, as bpftool's profiler does, so
 * no map lookup sits between a counter reading and the program). */
const volatile __u32 num_cpu = 1;
const volatile __u32 num_metric = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
} events SEC(".maps");

/* The readings at entry, per CPU and metric. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_METRICS);
	__type(key, __u32);
	__type(value, struct bpf_perf_event_value);
} at_entry SEC(".maps");

/* Run r, metric m at r * MAX_METRICS + m: the counters' differences over the run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RUNS * MAX_METRICS);
	__type(key, __u32);
	__type(value, struct bpf_perf_event_value);
} runs SEC(".maps");

/* [0]: how many runs `runs` holds. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} recorded SEC(".maps");

/* Entry: the map slots first, then the counters, one after the other, in the order
 * of `events` (the window of each starts right after its own reading). */
SEC("fentry/km_profile_target")
int km_profile_fentry(void *ctx)
{
	struct bpf_perf_event_value *slot[MAX_METRICS];
	__u32 key = bpf_get_smp_processor_id();
	__u32 i;

	for (i = 0; i < num_metric && i < MAX_METRICS; i++) {
		__u32 m = i;

		slot[i] = bpf_map_lookup_elem(&at_entry, &m);
		if (!slot[i])
			return 0;
	}
	for (i = 0; i < num_metric && i < MAX_METRICS; i++) {
		struct bpf_perf_event_value now;

		if (bpf_perf_event_read_value(&events, key, &now, sizeof(now)))
			return 0;
		*slot[i] = now;
		key += num_cpu;
	}
	return 0;
}

/* Exit: every counter first, then the bookkeeping (outside the windows). */
SEC("fexit/km_profile_target")
int km_profile_fexit(void *ctx)
{
	struct bpf_perf_event_value now[MAX_METRICS];
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 i, zero = 0;

	for (i = 0; i < num_metric && i < MAX_METRICS; i++) {
		if (bpf_perf_event_read_value(&events, cpu + i * num_cpu, now + i, sizeof(*now)))
			return 0;
	}
	__u32 *n = bpf_map_lookup_elem(&recorded, &zero);
	if (!n || *n >= MAX_RUNS)
		return 0;
	__u32 run = *n;
	for (i = 0; i < num_metric && i < MAX_METRICS; i++) {
		__u32 m = i, at = run * MAX_METRICS + i;
		struct bpf_perf_event_value *before = bpf_map_lookup_elem(&at_entry, &m);
		struct bpf_perf_event_value *out = bpf_map_lookup_elem(&runs, &at);

		/* A run whose entry reading failed (counter 0) is not kept. */
		if (!before || !out || !before->counter)
			return 0;
		out->counter = now[i].counter - before->counter;
		out->enabled = now[i].enabled - before->enabled;
		out->running = now[i].running - before->running;
	}
	*n = run + 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
