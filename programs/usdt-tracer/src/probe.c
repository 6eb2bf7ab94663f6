/* The traced loop: one USDT probe, test_grp:test_idx, with the index as arg0.
 * Compiled by build.rs (cc crate) into the usdt-tracer library, so every
 * binary that links the library carries the probe in its .note.stapsdt. */
#include <sys/sdt.h>

void km_usdt_loop(int n)
{
	for (int idx = 0; idx < n; idx++)
		DTRACE_PROBE1(test_grp, test_idx, idx);
}
