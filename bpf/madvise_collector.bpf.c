// SPDX-License-Identifier: GPL-2.0
/* Sequential-fault collector: a kprobe on handle_mm_fault counts, per
 * process, its faults and those whose page is the previous fault page of
 * that process + 1. A call for the same page as the previous one (the retry
 * of a fault that dropped the mmap lock) is not a new fault. */
#include "fault_common.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader: the collector's own pid, whose faults are not counted. */
volatile const __u32 self_pid = 0;

struct proc {
	__u64 last_page;
	__u64 last_address;
	__u64 faults;
	__u64 sequential;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct proc);
} procs SEC(".maps");

SEC("kprobe/handle_mm_fault")
int BPF_KPROBE(collect_fault, void *vma, unsigned long address)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 page = address >> PAGE_SHIFT;

	if (pid == self_pid)
		return 0;
	struct proc *p = bpf_map_lookup_elem(&procs, &pid);
	if (!p) {
		struct proc n = { .last_page = page, .last_address = address, .faults = 1 };
		bpf_get_current_comm(&n.comm, sizeof(n.comm));
		bpf_map_update_elem(&procs, &pid, &n, BPF_NOEXIST);
		return 0;
	}
	if (page == p->last_page)
		return 0;
	/* Threads of one process share the entry: counters are atomic, the
	 * last page is whichever thread wrote last (the per-process order). */
	if (page == p->last_page + 1)
		__sync_fetch_and_add(&p->sequential, 1);
	__sync_fetch_and_add(&p->faults, 1);
	p->last_page = page;
	p->last_address = address;
	return 0;
}
