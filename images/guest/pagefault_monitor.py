#!/usr/bin/python3
"""tools/pagefault_monitor.py of the eBPF page-fault monitor's document (001).

The document gives the monitor two front ends with the same options
(-p/--pid, -i/--interval, -v/--verbose): the C++ fault_monitor and this
Python one, which in the original loads the same kprobes through bcc. The
lab guest has Python but not bcc, so this front end runs the lab's
fault_monitor (the same kprobe and kretprobe on handle_mm_fault, the same
table), passing the options through unchanged.
"""
import os
import sys

MONITOR = "/usr/bin/fault-monitor"

if not os.path.exists(MONITOR):
    sys.exit(f"pagefault_monitor.py: {MONITOR} is not in this image; build the workspace and the image again (cargo build --workspace; lab image build)")
os.execv(MONITOR, [sys.argv[0]] + sys.argv[1:])
