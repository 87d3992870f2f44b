// The XDP ceiling of the live benchmark: drop every frame as early as the
// driver allows. Built by `modbus-bench live` with
//   clang -O2 -g -target bpf -c xdp_drop.c -o xdp_drop.o
// and attached with `ip link set dev IF xdpdrv obj xdp_drop.o sec xdp`.
#include <linux/bpf.h>

__attribute__((section("xdp"), used))
int xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

__attribute__((section("license"), used))
char _license[] = "GPL";
