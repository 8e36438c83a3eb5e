// SPDX-License-Identifier: GPL-2.0
// ioriot capture: raw_syscalls sys_enter/sys_exit for the system calls
// userspace marks in `nrs`, from the processes in `targets` (or every
// process but ioriot itself). sys_enter keeps the arguments per thread;
// sys_exit reads up to two user strings and sends the completed call
// through the ring buffer. Strings are read at exit because at entry their
// page may not be resident yet (bpf_probe_read_user cannot fault it in;
// the call itself has faulted it in by exit). A full ring buffer is
// counted in `counters`, never silent; an unreadable string is flagged.
// sched_process_fork adds children of followed processes; sched_process_exit
// removes an exiting thread's entries (targets, pending) and tells userspace,
// so the maps hold running tasks only and a long capture never fills them.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PATH_LEN 256
#define NR_MAX 512

#define KIND_SYSCALL 1
#define KIND_FORK 2
#define KIND_EXIT 3

#define FLAG_TRUNC1 1
#define FLAG_TRUNC2 2
#define FLAG_FAULT1 4
#define FLAG_FAULT2 8

// Layouts of the tracepoint records (include/trace/events/syscalls.h and
// sched.h): 8 bytes of common fields first.
struct sys_enter_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

struct sys_exit_args {
	__u64 common;
	long id;
	long ret;
};

struct fork_args {
	__u64 common;
	char parent_comm[16];
	__s32 parent_pid;
	char child_comm[16];
	__s32 child_pid;
};

// Shared with userspace (src/capture/event.rs), 608 bytes.
struct event {
	__u64 t_enter;
	__u64 t_exit;
	__u32 tgid;
	__u32 tid;
	__u32 kind;
	__u32 nr;
	__s64 ret;
	__u64 args[6];
	__u32 flags;
	__u32 pad;
	char path1[PATH_LEN];
	char path2[PATH_LEN];
};

/* The offsets src/capture/raw.rs decodes: a change here must change both. */
_Static_assert(sizeof(struct event) == 608, "struct event is 608 bytes");
_Static_assert(__builtin_offsetof(struct event, kind) == 24, "event.kind at 24");
_Static_assert(__builtin_offsetof(struct event, ret) == 32, "event.ret at 32");
_Static_assert(__builtin_offsetof(struct event, args) == 40, "event.args at 40");
_Static_assert(__builtin_offsetof(struct event, flags) == 88, "event.flags at 88");
_Static_assert(__builtin_offsetof(struct event, path1) == 96, "event.path1 at 96");
_Static_assert(__builtin_offsetof(struct event, path2) == 352, "event.path2 at 352");

// What sys_enter keeps until sys_exit.
struct pending {
	__u64 t_enter;
	__u64 nr;
	__u64 args[6];
};

struct config {
	__u32 follow_all;
	__u32 self_tgid;
};

// Per syscall number: bit 0 traced; bits 8..11 and 16..19 hold
// (argument index + 1) of the first and second string argument.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_MAX);
	__type(key, __u32);
	__type(value, __u32);
} nrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

// 0: events lost to a full ring buffer; 1: calls lost to a full pending map;
// 2: children not followed because `targets` was full.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &which);
	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline int cfg_follow_all(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	return cfg && cfg->follow_all;
}

static __always_inline int followed(__u32 tgid)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 0;
	if (cfg->follow_all)
		return tgid != cfg->self_tgid;
	return bpf_map_lookup_elem(&targets, &tgid) != 0;
}

// A fork or exit record: no system call, no arguments, no paths. Without
// room in the ring buffer it is counted as lost.
static __always_inline void task_event(__u32 kind, __u32 tgid, __u32 tid, __s64 ret)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(struct event), 0);
	if (!e) {
		count(0);
		return;
	}
	__u64 now = bpf_ktime_get_ns();
	e->t_enter = now;
	e->t_exit = now;
	e->tgid = tgid;
	e->tid = tid;
	e->kind = kind;
	e->nr = 0;
	e->ret = ret;
	__builtin_memset(e->args, 0, sizeof(e->args));
	e->flags = 0;
	e->pad = 0;
	e->path1[0] = 0;
	e->path2[0] = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void read_str(struct event *e, char *dst, __u32 slot, __u32 trunc, __u32 fault)
{
	dst[0] = 0;
	if (slot == 0 || slot > 6)
		return;
	__u32 idx = (slot - 1) & 7;
	if (idx >= 6)
		return;
	long n = bpf_probe_read_user_str(dst, PATH_LEN, (const void *)e->args[idx]);
	if (n < 0) {
		dst[0] = 0;
		e->flags |= fault;
	} else if (n == PATH_LEN) {
		e->flags |= trunc;
	}
}

// The spec of system call `id` when it is traced (bit 0 set), else 0.
static __always_inline __u32 traced(long id)
{
	if (id < 0 || id >= NR_MAX)
		return 0;
	__u32 nr = id;
	__u32 *spec = bpf_map_lookup_elem(&nrs, &nr);
	return spec && (*spec & 1) ? *spec : 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int ioriot_sys_enter(struct sys_enter_args *ctx)
{
	__u32 nr = ctx->id;
	if (!traced(ctx->id))
		return 0;
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	if (!followed(tgid))
		return 0;
	struct pending p = {};
	p.t_enter = bpf_ktime_get_ns();
	p.nr = nr;
	p.args[0] = ctx->args[0];
	p.args[1] = ctx->args[1];
	p.args[2] = ctx->args[2];
	p.args[3] = ctx->args[3];
	p.args[4] = ctx->args[4];
	p.args[5] = ctx->args[5];
	if (bpf_map_update_elem(&pending, &tid, &p, BPF_ANY))
		count(1);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int ioriot_sys_exit(struct sys_exit_args *ctx)
{
	/* Runs at every system call's exit on the machine: the array lookup
	 * that says whether the call is traced comes before the hash lookup. */
	__u32 nr = ctx->id;
	__u32 s = traced(ctx->id);
	if (!s)
		return 0;
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pt;
	struct pending *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	if (p->nr != nr) {
		/* Left by a call that never returned (execve, exit). */
		bpf_map_delete_elem(&pending, &tid);
		return 0;
	}
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(struct event), 0);
	if (!e) {
		count(0);
		bpf_map_delete_elem(&pending, &tid);
		return 0;
	}
	e->t_enter = p->t_enter;
	e->t_exit = bpf_ktime_get_ns();
	e->tgid = pt >> 32;
	e->tid = tid;
	e->kind = KIND_SYSCALL;
	e->nr = nr;
	e->ret = ctx->ret;
	e->args[0] = p->args[0];
	e->args[1] = p->args[1];
	e->args[2] = p->args[2];
	e->args[3] = p->args[3];
	e->args[4] = p->args[4];
	e->args[5] = p->args[5];
	e->flags = 0;
	e->pad = 0;
	bpf_map_delete_elem(&pending, &tid);
	read_str(e, e->path1, (s >> 8) & 0xf, FLAG_TRUNC1, FLAG_FAULT1);
	read_str(e, e->path2, (s >> 16) & 0xf, FLAG_TRUNC2, FLAG_FAULT2);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int ioriot_fork(struct fork_args *ctx)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32;
	if (!followed(tgid))
		return 0;
	__u32 child = ctx->child_pid;
	__u8 one = 1;
	if (!cfg_follow_all() && bpf_map_update_elem(&targets, &child, &one, BPF_ANY))
		count(2);
	task_event(KIND_FORK, tgid, (__u32)pt, child);
	return 0;
}

// Every exiting thread passes here. Its `targets` entry goes (the process's
// own when the thread-group leader exits, or the one sched_process_fork made
// for a thread), and so does a `pending` entry left by a call it never
// returned from. A followed task's exit is sent on (KIND_EXIT, tgid and tid)
// so userspace forgets its state; without room it is counted as lost, and
// the entries are deleted all the same.
SEC("tracepoint/sched/sched_process_exit")
int ioriot_exit(void *ctx)
{
	__u64 pt = bpf_get_current_pid_tgid();
	__u32 tgid = pt >> 32, tid = (__u32)pt;
	int was_followed = followed(tgid);
	bpf_map_delete_elem(&pending, &tid);
	int was_target = bpf_map_delete_elem(&targets, &tid) == 0;
	if (!was_followed && !was_target)
		return 0;
	task_event(KIND_EXIT, tgid, tid, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
