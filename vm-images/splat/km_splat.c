// SPDX-License-Identifier: GPL-2.0
/*
 * km_splat: makes the guest kernel print a real WARN, BUG or oops on request,
 * so the harness's splat detection is tested against what kernels really print
 * (the Debian cloud kernels have no lkdtm and userspace cannot cause these).
 *
 *   insmod km_splat.ko what=warn   WARN(1, ...), then loads normally: the kernel goes on
 *   insmod km_splat.ko what=bug    BUG(): "kernel BUG at ...", an oops (invalid opcode)
 *   insmod km_splat.ko what=oops   a NULL pointer write: "BUG: kernel NULL pointer
 *                                  dereference", "Oops: 0002"
 *
 * With the harness's `oops=panic` the last two end in a kernel panic.
 */
#include <linux/bug.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);
MODULE_PARM_DESC(what, "warn, bug or oops");

static int __init km_splat_init(void)
{
	pr_info("km_splat: what=%s\n", what);
	if (!strcmp(what, "warn")) {
		WARN(1, "km_splat: WARN on request\n");
		return 0;
	}
	if (!strcmp(what, "bug"))
		BUG();
	if (!strcmp(what, "oops")) {
		int *volatile p = NULL;
		*p = 42;
		return 0;
	}
	pr_err("km_splat: unknown what=%s (warn, bug, oops)\n", what);
	return -EINVAL;
}

static void __exit km_splat_exit(void)
{
}

module_init(km_splat_init);
module_exit(km_splat_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-matrix test module: a WARN, BUG or oops on request");
