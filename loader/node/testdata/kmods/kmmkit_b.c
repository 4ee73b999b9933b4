// kmmkit_b: a test module that exports a symbol and loads a firmware file.
#include <linux/module.h>
#include <linux/firmware.h>

static int fw_size = -1;
module_param(fw_size, int, 0444);
MODULE_PARM_DESC(fw_size, "size of kmmkit/test.bin, or -errno");

int kmmkit_b_value(void)
{
	return 42;
}
EXPORT_SYMBOL_GPL(kmmkit_b_value);

static int __init kmmkit_b_init(void)
{
	const struct firmware *fw;
	int err = request_firmware(&fw, "kmmkit/test.bin", NULL);

	if (err) {
		fw_size = err;
	} else {
		fw_size = fw->size;
		release_firmware(fw);
	}
	pr_info("kmmkit_b: loaded, firmware %d\n", fw_size);
	return 0;
}

static void __exit kmmkit_b_exit(void)
{
	pr_info("kmmkit_b: unloaded\n");
}

module_init(kmmkit_b_init);
module_exit(kmmkit_b_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmmkit test module b");
