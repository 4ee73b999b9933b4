// kmmkit_a: a test module that needs kmmkit_b, takes a parameter and
// exports a symbol for kmmkit_c.
#include <linux/module.h>

extern int kmmkit_b_value(void);

static char *who = "world";
module_param(who, charp, 0444);
MODULE_PARM_DESC(who, "whom to greet");

const char *kmmkit_a_who(void)
{
	return who;
}
EXPORT_SYMBOL_GPL(kmmkit_a_who);

static int __init kmmkit_a_init(void)
{
	pr_info("kmmkit_a: hello %s, b says %d\n", who, kmmkit_b_value());
	return 0;
}

static void __exit kmmkit_a_exit(void)
{
	pr_info("kmmkit_a: goodbye %s\n", who);
}

module_init(kmmkit_a_init);
module_exit(kmmkit_a_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmmkit test module a");
MODULE_ALIAS("kmmkit-test-a");
