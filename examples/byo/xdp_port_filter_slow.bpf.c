// SPDX-License-Identifier: GPL-2.0
// xdp_port_filter.bpf.c made slower on purpose: the same verdicts, after hashing
// the Ethernet header 512 times in a bounded loop (kernel 5.3+). It stands for a
// change that costs time in the ten-night history simulation (harness/tests/history.rs).
#define PORT_FILTER_SLOW
#include "xdp_port_filter.bpf.c"
