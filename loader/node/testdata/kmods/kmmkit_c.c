// kmmkit_c: a test module that needs kmmkit_a (and so kmmkit_b) and whose
// init fails, so that a load fails after its dependencies are loaded.
#include <linux/module.h>

extern const char *kmmkit_a_who(void);

static int __init kmmkit_c_init(void)
{
	pr_info("kmmkit_c: %s, failing on purpose\n", kmmkit_a_who());
	return -ENODEV;
}

static void __exit kmmkit_c_exit(void)
{
}

module_init(kmmkit_c_init);
module_exit(kmmkit_c_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmmkit test module c, whose init fails");
