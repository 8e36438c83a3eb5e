/* Shared by the page-fault programs: headers and the constants the loader
 * fills in from the running kernel's BTF (enum vm_fault_reason, enum
 * fault_flag), so no kernel version's numbering is baked in. */
#ifndef CXL_FAULT_COMMON_H
#define CXL_FAULT_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define PAGE_SHIFT 12

#endif
