// SPDX-License-Identifier: GPL-2.0
/* Sequential-fault collector: a kprobe on handle_mm_fault counts, per
 * process, its faults and those whose page is the previous fault page of
 * that process + 1. A call for the same page as the previous one (the retry
 * of a fault that dropped the mmap lock) is not a new fault.
 *
 * A process's entry lives as long as the process: when its thread-group
 * leader exits, sched_process_exit hands the final counts to user space
 * through the `exits` ring buffer and deletes the entry, so the map holds
 * the running processes only and never fills up with dead ones. */
#include "fault_common.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader: the collector's own pid, whose faults are not counted. */
volatile const __u32 self_pid = 0;

struct proc {
	__u64 last_page;
	__u64 last_address;
	__u64 faults;
	__u64 sequential;
	/* bpf_ktime_get_ns() of the first fault: tells a reused pid apart. */
	__u64 born_ns;
	char comm[TASK_COMM_LEN];
};

/* The final counts of an exited process. */
struct exit_record {
	__u32 pid;
	__u32 pad;
	struct proc proc;
};

/* The layouts the Rust side reads (collector.rs golden tests: RawProc,
 * RawExit): a change here must change both. */
_Static_assert(sizeof(struct proc) == 56, "struct proc is 56 bytes");
_Static_assert(__builtin_offsetof(struct proc, faults) == 16, "proc.faults at 16");
_Static_assert(__builtin_offsetof(struct proc, sequential) == 24, "proc.sequential at 24");
_Static_assert(__builtin_offsetof(struct proc, born_ns) == 32, "proc.born_ns at 32");
_Static_assert(__builtin_offsetof(struct proc, comm) == 40, "proc.comm at 40");
_Static_assert(sizeof(struct exit_record) == 64, "struct exit_record is 64 bytes");
_Static_assert(__builtin_offsetof(struct exit_record, proc) == 8, "exit_record.proc at 8");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct proc);
} procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} exits SEC(".maps");

/* [0]: exit records the ring buffer had no room for (the entry is still
 * deleted: a full ring must not make the map fill up). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("kprobe/handle_mm_fault")
int BPF_KPROBE(collect_fault, void *vma, unsigned long address)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 page = address >> PAGE_SHIFT;

	if (pid == self_pid)
		return 0;
	struct proc *p = bpf_map_lookup_elem(&procs, &pid);
	if (!p) {
		struct proc n = {
			.last_page = page,
			.last_address = address,
			.faults = 1,
			.born_ns = bpf_ktime_get_ns(),
		};
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

SEC("tracepoint/sched/sched_process_exit")
int collect_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;

	/* Every exiting thread passes here; the process ends with its leader. */
	if ((__u32)id != pid)
		return 0;
	struct proc *p = bpf_map_lookup_elem(&procs, &pid);
	if (!p)
		return 0;
	struct exit_record *e = bpf_ringbuf_reserve(&exits, sizeof(*e), 0);
	if (e) {
		e->pid = pid;
		e->pad = 0;
		__builtin_memcpy(&e->proc, p, sizeof(e->proc));
		bpf_ringbuf_submit(e, 0);
	} else {
		__u32 k = 0;
		__u64 *lost = bpf_map_lookup_elem(&counters, &k);
		if (lost)
			__sync_fetch_and_add(lost, 1);
	}
	bpf_map_delete_elem(&procs, &pid);
	return 0;
}
