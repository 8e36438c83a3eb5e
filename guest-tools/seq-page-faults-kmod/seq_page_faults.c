// SPDX-License-Identifier: GPL-2.0
/*
 * seq_page_faults: per process, the page faults whose page is the process's
 * previous fault page + 1, counted by a kprobe on handle_mm_fault and shown
 * in /proc/seq_page_faults as `PID COUNT` lines (smart-madvise's collector
 * interface).
 *
 * The rule is the one of the lab's eBPF collector (bpf/madvise_collector.bpf.c,
 * mirrored in guest-tools/fault-monitor/src/seq.rs), so the two agree: the
 * first fault of a process has no predecessor; a call for the same page as
 * the previous one (the retry of a fault that dropped the mmap lock) is not
 * a new fault; threads of a process share one entry.
 *
 * /proc/seq_page_faults_detail shows the same table with every field
 * (`PID FAULTS SEQUENTIAL LAST_ADDRESS BORN_NS EXITED COMM`, after a `#`
 * line of totals); `madvise-collector --proc` reads it.
 *
 * Entries come from a pool allocated at load time (max_entries), so the
 * probe never allocates. When a process's last thread exits (the
 * sched_process_exit tracepoint) its entry is marked exited and kept, so
 * its final count can still be read after it ended; when the pool is
 * exhausted the entry of the longest-exited process is reused. A fault of
 * a pid whose entry is marked exited is a new process that reuses the pid.
 */
#include <linux/hashtable.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/tracepoint.h>
#include <linux/version.h>
#include <linux/vmalloc.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Sequential page faults per process in /proc/seq_page_faults");

static unsigned int max_entries = 16384;
module_param(max_entries, uint, 0444);
MODULE_PARM_DESC(max_entries,
		 "Processes tracked at once, exited ones included (default 16384)");

struct proc_entry {
	struct hlist_node hash;
	/* In `exited_lru` while the process is marked exited, else unlinked. */
	struct list_head exited_link;
	pid_t tgid;
	bool in_use;
	bool exited;
	u64 last_page;
	u64 last_address;
	u64 faults;
	u64 sequential;
	/* ktime_get_ns() of the first fault: tells a reused pid apart. */
	u64 born_ns;
	char comm[TASK_COMM_LEN];
};

#define HASH_BITS_PROCS 12
static DEFINE_HASHTABLE(procs, HASH_BITS_PROCS);
static DEFINE_SPINLOCK(procs_lock);
static struct proc_entry *pool;
static unsigned int pool_used;
static LIST_HEAD(exited_lru);
/* Faults of new processes that found neither a free nor an exited entry. */
static u64 dropped;
static u64 exits;

static struct proc_entry *find(pid_t tgid)
{
	struct proc_entry *e;

	hash_for_each_possible(procs, e, hash, tgid)
		if (e->tgid == tgid)
			return e;
	return NULL;
}

/* A fresh entry for `tgid`, or NULL when every entry holds a running process. */
static struct proc_entry *take_entry(pid_t tgid)
{
	struct proc_entry *e;

	if (pool_used < max_entries) {
		e = &pool[pool_used++];
	} else {
		e = list_first_entry_or_null(&exited_lru, struct proc_entry,
					     exited_link);
		if (!e)
			return NULL;
		list_del_init(&e->exited_link);
		hash_del(&e->hash);
	}
	memset(e, 0, sizeof(*e));
	INIT_LIST_HEAD(&e->exited_link);
	e->tgid = tgid;
	e->in_use = true;
	hash_add(procs, &e->hash, tgid);
	return e;
}

static void start(struct proc_entry *e, u64 page, unsigned long address)
{
	e->last_page = page;
	e->last_address = address;
	e->faults = 1;
	e->sequential = 0;
	e->exited = false;
	e->born_ns = ktime_get_ns();
	/* Without task_lock, as bpf_get_current_comm does: no lock nests in
	 * procs_lock, and a racing rename only makes the copy a mix of names. */
	memcpy(e->comm, current->comm, TASK_COMM_LEN - 1);
	e->comm[TASK_COMM_LEN - 1] = '\0';
}

static int on_fault(struct kprobe *kp, struct pt_regs *regs)
{
	/* handle_mm_fault(vma, address, flags, regs) */
	unsigned long address = regs_get_kernel_argument(regs, 1);
	u64 page = address >> PAGE_SHIFT;
	pid_t tgid = current->tgid;
	struct proc_entry *e;
	unsigned long flags;

	spin_lock_irqsave(&procs_lock, flags);
	e = find(tgid);
	if (e && e->exited) {
		/* A new process with a reused pid. */
		list_del_init(&e->exited_link);
		start(e, page, address);
	} else if (!e) {
		e = take_entry(tgid);
		if (e)
			start(e, page, address);
		else
			dropped++;
	} else if (page != e->last_page) {
		if (page == e->last_page + 1)
			e->sequential++;
		e->faults++;
		e->last_page = page;
		e->last_address = address;
	}
	spin_unlock_irqrestore(&procs_lock, flags);
	return 0;
}

static struct kprobe fault_probe = {
	.symbol_name = "handle_mm_fault",
	.pre_handler = on_fault,
};

static void mark_exited(struct task_struct *p)
{
	struct proc_entry *e;
	unsigned long flags;

	/* do_exit decrements signal->live before this tracepoint: 0 means the
	 * last thread of the process is exiting. */
	if (atomic_read(&p->signal->live) != 0)
		return;
	spin_lock_irqsave(&procs_lock, flags);
	e = find(p->tgid);
	if (e && !e->exited) {
		e->exited = true;
		list_add_tail(&e->exited_link, &exited_lru);
		exits++;
	}
	spin_unlock_irqrestore(&procs_lock, flags);
}

/* sched_process_exit is not exported to modules: its tracepoint is found by
 * name and a probe registered on it directly. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
static void on_exit_tp(void *data, struct task_struct *p, bool group_dead)
{
	mark_exited(p);
}
#else
static void on_exit_tp(void *data, struct task_struct *p)
{
	mark_exited(p);
}
#endif

static struct tracepoint *exit_tp;

static void find_exit_tp(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "sched_process_exit"))
		exit_tp = tp;
}

/* Copies of the entries in use, taken under the lock one at a time. */
static bool entry_at(unsigned int i, struct proc_entry *out)
{
	unsigned long flags;
	bool ok;

	spin_lock_irqsave(&procs_lock, flags);
	ok = i < pool_used && pool[i].in_use;
	if (ok)
		*out = pool[i];
	spin_unlock_irqrestore(&procs_lock, flags);
	return ok;
}

static unsigned int entries_used(void)
{
	unsigned long flags;
	unsigned int n;

	spin_lock_irqsave(&procs_lock, flags);
	n = pool_used;
	spin_unlock_irqrestore(&procs_lock, flags);
	return n;
}

static int counts_show(struct seq_file *m, void *v)
{
	unsigned int i, n = entries_used();
	struct proc_entry e;

	for (i = 0; i < n; i++)
		if (entry_at(i, &e))
			seq_printf(m, "%d %llu\n", e.tgid, e.sequential);
	return 0;
}

static int detail_show(struct seq_file *m, void *v)
{
	unsigned int i, n = entries_used();
	struct proc_entry e;
	unsigned long flags;
	u64 d, x;

	spin_lock_irqsave(&procs_lock, flags);
	d = dropped;
	x = exits;
	spin_unlock_irqrestore(&procs_lock, flags);
	seq_printf(m, "# entries %u max_entries %u exits %llu dropped %llu\n",
		   n, max_entries, x, d);
	for (i = 0; i < n; i++)
		if (entry_at(i, &e))
			seq_printf(m, "%d %llu %llu 0x%llx %llu %d %s\n", e.tgid,
				   e.faults, e.sequential, e.last_address,
				   e.born_ns, e.exited ? 1 : 0, e.comm);
	return 0;
}

static int counts_open(struct inode *inode, struct file *file)
{
	return single_open(file, counts_show, NULL);
}

static int detail_open(struct inode *inode, struct file *file)
{
	return single_open(file, detail_show, NULL);
}

static const struct proc_ops counts_ops = {
	.proc_open = counts_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

static const struct proc_ops detail_ops = {
	.proc_open = detail_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
};

static int __init seq_page_faults_init(void)
{
	int err;

	if (max_entries == 0) {
		pr_err("seq_page_faults: max_entries must be at least 1\n");
		return -EINVAL;
	}
	pool = vzalloc(array_size(max_entries, sizeof(*pool)));
	if (!pool)
		return -ENOMEM;
	for_each_kernel_tracepoint(find_exit_tp, NULL);
	if (!exit_tp) {
		pr_err("seq_page_faults: no sched_process_exit tracepoint\n");
		err = -ENOENT;
		goto free_pool;
	}
	err = tracepoint_probe_register(exit_tp, on_exit_tp, NULL);
	if (err) {
		pr_err("seq_page_faults: cannot hook sched_process_exit: %d\n", err);
		goto free_pool;
	}
	if (!proc_create("seq_page_faults", 0444, NULL, &counts_ops) ||
	    !proc_create("seq_page_faults_detail", 0444, NULL, &detail_ops)) {
		pr_err("seq_page_faults: cannot create the /proc files\n");
		err = -ENOMEM;
		goto remove_proc;
	}
	err = register_kprobe(&fault_probe);
	if (err) {
		pr_err("seq_page_faults: cannot probe handle_mm_fault: %d\n", err);
		goto remove_proc;
	}
	pr_info("seq_page_faults: counting sequential faults on handle_mm_fault (%u entries)\n",
		max_entries);
	return 0;

remove_proc:
	remove_proc_entry("seq_page_faults_detail", NULL);
	remove_proc_entry("seq_page_faults", NULL);
	tracepoint_probe_unregister(exit_tp, on_exit_tp, NULL);
	tracepoint_synchronize_unregister();
free_pool:
	vfree(pool);
	return err;
}

static void __exit seq_page_faults_exit(void)
{
	unregister_kprobe(&fault_probe);
	remove_proc_entry("seq_page_faults_detail", NULL);
	remove_proc_entry("seq_page_faults", NULL);
	tracepoint_probe_unregister(exit_tp, on_exit_tp, NULL);
	tracepoint_synchronize_unregister();
	vfree(pool);
}

module_init(seq_page_faults_init);
module_exit(seq_page_faults_exit);
