#!/bin/busybox sh
# PID 1 of the busybox test guest (make run, the VM tests, bench/boot). It reports what the
# machine looks like, then does what `rkt.init=` on the kernel command line asks:
#   (default)   reboot            -> the VMM exits 0
#   panic       exit, so the kernel panics ("Attempted to kill init") -> VMM exit status 2
#   count:N     print N numbered lines (console ordering test), then reboot
#   hang        sleep forever (tests that kill the VMM)
#   9p          mount the VMM's virtio-9p exports (rw, ro, and "late", which the host adds through
#               the control socket while we wait), run file operations, print "9p ok|FAIL <name>",
#               then wait for the host to stop the VM
#   hostile     root attacks the VMM's 9p server, then its vsock and net devices, with its own code
#               (/bin/rkt-kvm-hostile, tests/guest/hostile*.c, only in out/hostile-initrd.cpio) over exports
#               a, b (read-write) and ro: it prints
#               "hostile ok|FAIL <name>", and "hostile holding" while it holds every fid the server
#               gives (until the host writes "go" into b/signal.txt); then "hostile done", and we wait
#               for the host to stop the VM
#   net         configure eth0 (virtio-net) as 10.123.0.2/24, ping 10.123.0.1, receive a TCP stream on
#               port 8080 (print its size and md5), send `seq 1 40000` to 10.123.0.1:8081, print
#               "net ok|FAIL <step>" for each step and the negotiated virtio features, then reboot
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
    9p)
        /bin/busybox --install -s /bin
        opts=trans=virtio,version=9p2000.L,msize=524288
        t() { if eval "$2" >/dev/null 2>&1; then echo "rkt-kvm-guest: 9p ok $1"; else echo "rkt-kvm-guest: 9p FAIL $1"; fi; }
        mkdir -p /mnt/rw /mnt/ro /mnt/late
        t mount "mount -t 9p -o $opts,aname=rw rkt /mnt/rw"
        echo "rkt-kvm-guest: 9p mounts $(grep 9p /proc/mounts | tr '\n' ' ')"
        cd /mnt/rw
        t write 'echo hello > a.txt'
        t read '[ "$(cat a.txt)" = hello ]'
        t append 'echo world >> a.txt && [ "$(wc -l < a.txt)" = 2 ]'
        t rename 'mv a.txt b.txt && [ ! -e a.txt ] && [ -f b.txt ]'
        t link 'ln b.txt c.txt && [ "$(stat -c %h b.txt)" = 2 ]'
        t symlink 'ln -s b.txt s.txt && [ "$(readlink s.txt)" = b.txt ] && [ "$(head -n 1 s.txt)" = hello ]'
        t unlink 'rm c.txt && [ ! -e c.txt ] && [ "$(stat -c %h b.txt)" = 1 ]'
        t mkdir 'mkdir -p d1/d2 && [ -d d1/d2 ]'
        t readdir '[ "$(ls | tr "\n" " ")" = "abs b.txt d1 s.txt up " ]'
        t stat '[ "$(stat -c %s b.txt)" = 12 ]'
        t chmod 'chmod 640 b.txt && [ "$(stat -c %a b.txt)" = 640 ]'
        t truncate 'truncate -s 3 b.txt && [ "$(cat b.txt)" = hel ]'
        t rmdir 'rmdir d1/d2 && [ ! -e d1/d2 ]'
        t setuid-stripped 'echo x > su && chmod 4755 su && [ "$(stat -c %a su)" = 755 ]'
        t fifo-refused '! mkfifo ff'
        t seek-write 'printf abc | dd of=sparse bs=1 seek=100000 2>/dev/null && [ "$(stat -c %s sparse)" = 100003 ]'
        # Escapes: every path below is resolved by the guest in its own namespace; none may show the host's secret.
        ln -s ../secret.txt esc 2>/dev/null
        for p in /mnt/rw/../secret.txt /mnt/rw/../../secret.txt /mnt/rw/up/secret.txt /mnt/rw/abs /mnt/rw/esc /mnt/rw/up/up/secret.txt; do
            echo "rkt-kvm-guest: 9p escape $p: $(cat $p 2>&1 | head -c 80)"
        done
        up() { cut -d' ' -f1 /proc/uptime; }
        s=$(up); dd if=/dev/zero of=big bs=512k count=128 2>/dev/null; e=$(up)
        echo "rkt-kvm-guest: 9p dd write 64 MiB in $(awk "BEGIN{print $e-$s}") s"
        s=$(up); dd if=big of=/dev/null bs=512k 2>/dev/null; e=$(up)
        echo "rkt-kvm-guest: 9p dd read 64 MiB in $(awk "BEGIN{print $e-$s}") s"
        t big-size '[ "$(stat -c %s big)" = 67108864 ]'
        rm -f big sparse
        # Linux binds one mount to a virtio-9p device at a time (the channel is "in use"): unmount first.
        cd /
        umount /mnt/rw
        t ro-mount "mount -t 9p -o $opts,aname=ro rkt /mnt/ro"
        t ro-read '[ "$(cat /mnt/ro/b.txt)" = hel ]'
        t ro-create '! touch /mnt/ro/new'
        t ro-unlink '! rm /mnt/ro/b.txt'
        t ro-write '! sh -c "echo x >> /mnt/ro/b.txt"'
        umount /mnt/ro
        echo "rkt-kvm-guest: 9p waiting for late"
        i=0
        while [ "$i" -lt 240 ] && ! mount -t 9p -o $opts,aname=late rkt /mnt/late 2>/dev/null; do usleep 500000; i=$((i + 1)); done
        t late-read '[ "$(cat /mnt/late/hello.txt)" = late ]'
        echo "rkt-kvm-guest: 9p done"
        while true; do sleep 3600; done ;;
    hostile)
        if [ -x /bin/rkt-kvm-hostile ]; then
            /bin/rkt-kvm-hostile
        else
            echo "rkt-kvm-guest: hostile FAIL helper: /bin/rkt-kvm-hostile is missing (boot out/hostile-initrd.cpio)"
        fi
        echo "rkt-kvm-guest: hostile done"
        while true; do sleep 3600; done ;;
    net)
        /bin/busybox --install -s /bin
        t() { if eval "$2" >/dev/null 2>&1; then echo "rkt-kvm-guest: net ok $1"; else echo "rkt-kvm-guest: net FAIL $1"; fi; }
        echo "rkt-kvm-guest: net eth0 $(cat /sys/class/net/eth0/address 2>&1)"
        echo "rkt-kvm-guest: net features $(cat /sys/class/net/eth0/device/features 2>&1)"
        t link-up 'ip link set eth0 up'
        t addr 'ip addr add 10.123.0.2/24 dev eth0'
        if ping -c 3 -W 20 10.123.0.1 >/tmp/ping 2>&1; then echo "rkt-kvm-guest: net ok ping"; else echo "rkt-kvm-guest: net FAIL ping"; fi
        sed 's/^/rkt-kvm-guest: ping: /' /tmp/ping
        # The host connects until we listen, sends its stream and closes.
        echo "rkt-kvm-guest: net listening 8080"
        t receive 'nc -l -p 8080 >/tmp/in </dev/null'
        echo "rkt-kvm-guest: net received $(wc -c </tmp/in) bytes md5 $(md5sum </tmp/in | cut -d' ' -f1)"
        seq 1 40000 >/tmp/out
        t send 'nc 10.123.0.1 8081 </tmp/out'
        echo "rkt-kvm-guest: net eth0 rx $(cat /sys/class/net/eth0/statistics/rx_packets) tx $(cat /sys/class/net/eth0/statistics/tx_packets) packets"
        echo "rkt-kvm-guest: net irq $(grep virtio /proc/interrupts | tr -s ' ' | tr '\n' ';')"
        echo "rkt-kvm-guest: net done" ;;
esac
echo "rkt-kvm-guest: done, rebooting"
reboot -f
