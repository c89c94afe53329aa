#!/bin/busybox sh
# PID 1 of the busybox test guest (make run, the VM tests, bench/boot). It reports what the
# machine looks like, then does what `rkt.init=` on the kernel command line asks:
#   (default)   reboot            -> the VMM exits 0
#   panic       exit, so the kernel panics ("Attempted to kill init") -> VMM exit status 2
#   count:N     print N numbered lines (console ordering test), then reboot
#   hang        sleep forever (tests that kill the VMM)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Tell the VMM's boot timer that userspace init is running.
devmem 0xc0000000 8 123
echo "rkt-kvm-guest: kernel $(uname -r)"
echo "rkt-kvm-guest: cpus online $(grep -c ^processor /proc/cpuinfo)"
echo "rkt-kvm-guest: $(grep MemTotal /proc/meminfo)"
# The UART is interrupt driven: its line in /proc/interrupts counts the interrupts taken so far.
echo "rkt-kvm-guest: serial irq $(grep ttyS0 /proc/interrupts)"
# Entropy from the VMM's virtio-rng device.
echo "rkt-kvm-guest: hwrng $(cat /sys/class/misc/hw_random/rng_current) $(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
mode=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in rkt.init=*) mode="${arg#rkt.init=}" ;; esac
done
case "$mode" in
    panic)
        echo "rkt-kvm-guest: exiting init to force a kernel panic"
        exit 1 ;;
    count:*)
        n="${mode#count:}"
        i=1
        while [ "$i" -le "$n" ]; do echo "rkt-kvm-guest: line $i"; i=$((i + 1)); done ;;
    hang)
        echo "rkt-kvm-guest: hanging"
        while true; do sleep 3600; done ;;
esac
echo "rkt-kvm-guest: done, rebooting"
reboot -f
