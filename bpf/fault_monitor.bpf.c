// SPDX-License-Identifier: GPL-2.0
/* Page-fault monitor: kprobe + kretprobe on handle_mm_fault.
 *
 * Per (pid, tid) the faults are aggregated in the kernel (major, minor,
 * total/max/min handling time, a log2 histogram of it, comm); with events on, every completed fault
 * also goes to a ring buffer. Counting follows the kernel's own accounting
 * (mm_account_fault): a call that returns VM_FAULT_RETRY is not a fault yet,
 * the retried call completes it, and a fault is major if the completing call
 * returns VM_FAULT_MAJOR or was a retry (FAULT_FLAG_TRIED); errors are kept
 * apart. The handling time runs from the first attempt to the completion. */
#include "fault_common.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the loader; 0 means every process. */
volatile const __u32 target_pid = 0;
volatile const __u32 emit_events = 0;
/* From the running kernel's BTF. */
volatile const __u32 vm_fault_major = 0;
volatile const __u32 vm_fault_retry = 0;
volatile const __u32 vm_fault_error = 0;
volatile const __u32 fault_flag_tried = 0;

struct key {
	__u32 pid;
	__u32 tid;
};

/* Log2 buckets of the fault time in ns, as bcc's funclatency: slot k
 * counts faults of [2^k, 2^(k+1)) ns (slot 0 also 0 ns), the last slot
 * everything from 2^31 ns. */
#define HIST_SLOTS 32
_Static_assert(HIST_SLOTS == 32, "the index mask below is HIST_SLOTS - 1");

struct stats {
	__u64 major;
	__u64 minor;
	__u64 errors;
	__u64 total_ns;
	__u64 max_ns;
	__u64 min_ns;
	char comm[TASK_COMM_LEN];
	__u64 hist[HIST_SLOTS];
};

struct inflight {
	__u64 start_ns;
	__u64 address;
	__u32 flags;
	__u32 retried;
	__u32 major_seen;
	__u32 pad;
};

struct event {
	__u32 pid;
	__u32 tid;
	__u64 address;
	__u64 duration_ns;
	__u32 major;
	__u32 ret;
	char comm[TASK_COMM_LEN];
};

/* The layouts the Rust side reads (fault-monitor's monitor.rs golden tests:
 * Key, RawStats, Event::parse): a change here must change both. */
_Static_assert(sizeof(struct key) == 8, "struct key is 8 bytes");
_Static_assert(__builtin_offsetof(struct key, tid) == 4, "key.tid at 4");
_Static_assert(sizeof(struct stats) == 64 + 8 * HIST_SLOTS, "struct stats is 320 bytes");
_Static_assert(__builtin_offsetof(struct stats, hist) == 64, "stats.hist at 64");
_Static_assert(__builtin_offsetof(struct stats, errors) == 16, "stats.errors at 16");
_Static_assert(__builtin_offsetof(struct stats, min_ns) == 40, "stats.min_ns at 40");
_Static_assert(__builtin_offsetof(struct stats, comm) == 48, "stats.comm at 48");
_Static_assert(sizeof(struct event) == 48, "struct event is 48 bytes");
_Static_assert(__builtin_offsetof(struct event, duration_ns) == 16, "event.duration_ns at 16");
_Static_assert(__builtin_offsetof(struct event, major) == 24, "event.major at 24");
_Static_assert(__builtin_offsetof(struct event, ret) == 28, "event.ret at 28");
_Static_assert(__builtin_offsetof(struct event, comm) == 32, "event.comm at 32");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct key);
	__type(value, struct stats);
} stats SEC(".maps");

/* The fault a thread is in, keyed by tid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* floor(log2(v)) for v > 0, 0 for 0; branch-free as bcc's bpf_log2. */
static __always_inline __u32 log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4; v >>= r;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 hi = v >> 32;

	return hi ? log2_u32(hi) + 32 : log2_u32((__u32)v);
}

SEC("kprobe/handle_mm_fault")
int BPF_KPROBE(fault_enter, void *vma, unsigned long address, unsigned int flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = (__u32)id;

	if (target_pid && pid != target_pid)
		return 0;
	struct inflight *f = bpf_map_lookup_elem(&inflight, &tid);
	if (f && f->retried) {
		/* The retry of a fault already under way keeps its start. */
		f->address = address;
		f->flags = flags;
		return 0;
	}
	struct inflight n = {
		.start_ns = bpf_ktime_get_ns(),
		.address = address,
		.flags = flags,
	};
	bpf_map_update_elem(&inflight, &tid, &n, BPF_ANY);
	return 0;
}

SEC("kretprobe/handle_mm_fault")
int BPF_KRETPROBE(fault_exit, unsigned int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32, tid = (__u32)id;
	struct inflight *f = bpf_map_lookup_elem(&inflight, &tid);

	if (!f)
		return 0;
	if (ret & vm_fault_retry) {
		f->retried = 1;
		if (ret & vm_fault_major)
			f->major_seen = 1;
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	__u64 dur = now > f->start_ns ? now - f->start_ns : 0;
	__u64 address = f->address;
	int major = (ret & vm_fault_major) || (f->flags & fault_flag_tried) || f->major_seen;
	bpf_map_delete_elem(&inflight, &tid);

	struct key k = { .pid = pid, .tid = tid };
	struct stats *s = bpf_map_lookup_elem(&stats, &k);
	if (!s) {
		struct stats z = { .min_ns = ~0ULL };
		bpf_get_current_comm(&z.comm, sizeof(z.comm));
		bpf_map_update_elem(&stats, &k, &z, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&stats, &k);
		if (!s)
			return 0;
	}
	/* Only this thread writes its own entry: plain updates are enough.
	 * The comm is refreshed because a thread names itself (and a process
	 * execs) after its first faults. */
	bpf_get_current_comm(&s->comm, sizeof(s->comm));
	if (ret & vm_fault_error) {
		s->errors++;
	} else {
		if (major)
			s->major++;
		else
			s->minor++;
		s->total_ns += dur;
		if (dur > s->max_ns)
			s->max_ns = dur;
		if (dur < s->min_ns)
			s->min_ns = dur;
		__u64 slot = log2_u64(dur);
		if (slot >= HIST_SLOTS)
			slot = HIST_SLOTS - 1;
		/* The mask is the last thing done to the index, on its 64-bit
		 * register, behind a barrier: 6.1's verifier loses the bound of
		 * a masked 32-bit index through the zero-extension clang puts
		 * after it ("R7 unbounded memory access"). */
		asm volatile("%0 &= 31" : "+r"(slot));
		s->hist[slot]++;
	}

	if (emit_events) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (e) {
			e->pid = pid;
			e->tid = tid;
			e->address = address;
			e->duration_ns = dur;
			e->major = major;
			e->ret = ret;
			bpf_get_current_comm(&e->comm, sizeof(e->comm));
			bpf_ringbuf_submit(e, 0);
		}
	}
	return 0;
}
