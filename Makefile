# Rkt.Kvm: the two commands of the README.
#   make run    install what is missing, build everything, boot a real VM with the busybox guest
#   make test   build everything and run every test (unit + real VMs on /dev/kvm)
#   make bench  the benchmarks (bench/*), each printing RESULT lines beside a reference
#   make fuzz   coverage-guided fuzzing (fuzz/), not part of `make test` (which replays the corpora)
# Outputs go to out/ (ignored by git); the guest kernel is cached outside the repo
# (kernel-config/build-kernel.sh, keyed by config + patches + source version).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
OUT := $(CURDIR)/out
RID := linux-x64
DOTNET ?= dotnet
DOTNET_FLAGS := --nologo -v quiet
# Debian packages the build and the tests need (the kernel script installs its own); the
# benchmarks also need QEMU, as the reference they measure against. The image tests build their
# fixtures with appc-spec (actool), umoci, skopeo, the compressors and attr (setfattr). Pod
# networking runs CNI plugins (containernetworking-plugins) and iproute2's ip and tc; the default
# network's masquerade and --port's DNAT go through iptables.
APT_PACKAGES := busybox-static cpio gcc libc6-dev zlib1g-dev appc-spec umoci skopeo zstd xz-utils bzip2 attr \
  containernetworking-plugins iproute2 iptables docker-registry apache2-utils
BENCH_APT_PACKAGES := qemu-system-x86

VMM := $(OUT)/vmm/rkt-kvm-vmm
MKINITRAMFS := $(OUT)/tools/rkt-kvm-mkinitramfs
TEST_INITRD := $(OUT)/busybox-initrd.cpio
HOSTILE := $(OUT)/guest/rkt-kvm-hostile
HOSTILE_INITRD := $(OUT)/hostile-initrd.cpio
AGENT := $(OUT)/agent/rkt-kvm-agent
AGENT_INITRD := $(OUT)/agent-initrd.cpio
AGENTCTL := $(OUT)/tools/rkt-kvm-agentctl
RKT_KVM := $(OUT)/cli/rkt-kvm
STAGE1_ACI := $(OUT)/stage1/stage1-kvm.aci
BUSYBOX_ACI := $(OUT)/images/busybox.aci
# Where `make run` keeps images and pods (rkt-kvm's own default is /var/lib/rkt-kvm).
RKT_KVM_DIR ?= $(OUT)/data
KERNEL_DIR_FILE := $(OUT)/kernel-dir

export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1


.PHONY: all run test fuzz deps soak apt-install kernel vmm agent stage2 tools cli initramfs agent-initramfs bench bench-boot bench-vsock bench-images bench-fetch bench-9p bench-net bench-pod bench-stage0 bench-terminal bench-seccomp stage1 busybox-image clean

all: deps kernel vmm initramfs agent-initramfs cli stage1 busybox-image

# Imports the busybox image and runs a pod of two apps from it in a VM through rkt-kvm (stage0) and
# stage1-kvm, printing what the apps print; then lists the pod.
run: all
	$(RKT_KVM) --dir=$(RKT_KVM_DIR) image import $(BUSYBOX_ACI)
	$(RKT_KVM) --dir=$(RKT_KVM_DIR) run \
	  rkt-kvm.local/busybox --name=hello --exec=/bin/sh -- -c 'echo "hello from $$(hostname), kernel $$(uname -r)"; cat /etc/os-release' --- \
	  rkt-kvm.local/busybox --name=counter --exec=/bin/sh -- -c 'for i in 1 2 3; do echo "count $$i"; done' ---
	$(RKT_KVM) --dir=$(RKT_KVM_DIR) list

# FILTER narrows the run to some tests (dotnet test --filter syntax), e.g. FILTER=FullyQualifiedName~NinePTests.
test: all
	@rm -rf $(OUT)/test-results
	status=0; RKT_KVM_VMM=$(VMM) RKT_KVM_KERNEL_DIR="$$(cat $(KERNEL_DIR_FILE))" RKT_KVM_TEST_INITRD=$(TEST_INITRD) \
	  RKT_KVM_HOSTILE_INITRD=$(HOSTILE_INITRD) \
	  RKT_KVM_AGENT=$(AGENT) RKT_KVM_AGENT_INITRD=$(AGENT_INITRD) RKT_KVM_CLI=$(RKT_KVM) RKT_KVM_STAGE1=$(STAGE1_ACI) \
	  RKT_KVM_BUSYBOX_ACI=$(BUSYBOX_ACI) \
	  $(DOTNET) test Rkt.Kvm.sln $(DOTNET_FLAGS) $(if $(FILTER),--filter "$(FILTER)") --logger "console;verbosity=normal" --logger trx \
	  --results-directory $(OUT)/test-results || status=$$?; \
	tests/summarize-trx.sh $(OUT)/test-results; exit $$status

bench: bench-boot bench-vsock bench-images bench-fetch bench-9p bench-net bench-pod bench-stage0 bench-terminal bench-seccomp

bench-boot: all
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(BENCH_APT_PACKAGES)"
	bench/boot/run.sh

# Image import + render against GNU tar, and the cached render (bench/images/).
bench-images: deps cli
	bench/images/run.sh

# rkt-kvm fetch from a local docker-registry against skopeo copy of the same image, and the cached pull (bench/fetch/).
bench-fetch: deps cli
	bench/fetch/run.sh

bench-vsock: all
	@$(MAKE) --no-print-directory apt-install PACKAGES="linux-perf"
	bench/vsock/run.sh

# Laying a pod out as rkt does (overlay) against --no-overlay hardlinks, no VM (bench/stage0/).
bench-stage0: cli busybox-image
	bench/stage0/run.sh

# A pod's wall time by phase, app add/start, pods per minute, idle pod memory (bench/pod/).
bench-pod: all
	bench/pod/run.sh

# A keystroke's round trip through a pod's terminal beside plain Exec, terminal output beside pipes (bench/terminal/).
bench-terminal: all
	bench/terminal/run.sh

# 64 MiB write/read and 2,000 stats through our 9p server against QEMU's (bench/9p/).
bench-9p: all
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(BENCH_APT_PACKAGES)"
	bench/9p/run.sh

# TCP both ways and a 1-byte round trip through our virtio-net against QEMU's on the same tap, the
# same over our vsock, and pod start-up with the default network against --net=none (bench/net/).
bench-net: all
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(BENCH_APT_PACKAGES)"
	bench/net/run.sh

# What the VMM's seccomp filters cost per system call, stacked as its threads have them, against no filter (bench/seccomp/).
bench-seccomp: deps
	bench/seccomp/run.sh

# Not part of `make test`: 50 pods, 5 at a time, with stage1 and rkt-kvm kills sprinkled in; the
# host must end where it started (tests/soak/pods.sh prints RESULT lines).
soak: all
	tests/soak/pods.sh $(SOAK_PODS) $(SOAK_BATCH)

SOAK_PODS ?= 50
SOAK_BATCH ?= 5

# Not part of `make test` (which replays the corpora, tests/Rkt.Kvm.Fuzz.Tests): each fuzz target
# under afl-fuzz for FUZZ_SECONDS (90 s: about 12 minutes for the eight), FUZZ_TARGETS picks some.
# Prints a RESULT line per target (edges, execs/s); fails, naming the inputs, on any crash or
# hang (fuzz/README.md). Outputs in out/fuzz/.
FUZZ_SECONDS ?= 90
FUZZ_TARGETS ?=
fuzz:
	@command -v $(DOTNET) >/dev/null || { echo "The .NET 10 SDK (dotnet) is required: https://dot.net"; exit 1; }
	@$(MAKE) --no-print-directory apt-install PACKAGES="afl++"
	$(DOTNET) tool restore
	FUZZ_SECONDS=$(FUZZ_SECONDS) DOTNET=$(DOTNET) fuzz/run.sh $(FUZZ_TARGETS)

# Installs only what is missing, so a prepared machine pays nothing.
deps:
	@command -v $(DOTNET) >/dev/null || { echo "The .NET 10 SDK (dotnet) is required: https://dot.net"; exit 1; }
	@$(MAKE) --no-print-directory apt-install PACKAGES="$(APT_PACKAGES)"
	$(DOTNET) restore Rkt.Kvm.sln $(DOTNET_FLAGS)
	$(DOTNET) restore vmm/Rkt.Kvm.Vmm.Cli -r $(RID) $(DOTNET_FLAGS)
	$(DOTNET) restore guest-agent/Rkt.Kvm.GuestAgent -r $(RID) $(DOTNET_FLAGS)

apt-install:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

kernel:
	@mkdir -p $(OUT)
	kernel-config/build-kernel.sh > $(KERNEL_DIR_FILE).tmp
	@mv $(KERNEL_DIR_FILE).tmp $(KERNEL_DIR_FILE)

# The VMM is published NativeAOT: it starts in milliseconds and needs no runtime on the host.
vmm:
	$(DOTNET) publish vmm/Rkt.Kvm.Vmm.Cli -c Release -r $(RID) -o $(OUT)/vmm $(DOTNET_FLAGS)

# The guest agent is PID 1 in the VM: a fully static NativeAOT binary (no libc in the guest).
agent: stage2
	$(DOTNET) publish guest-agent/Rkt.Kvm.GuestAgent -c Release -r $(RID) -o $(OUT)/agent $(DOTNET_FLAGS)

# The agent's single-threaded namespace helper (/sbin/rkt-kvm-stage2 in the agent initramfs).
STAGE2 := $(OUT)/agent/rkt-kvm-stage2
stage2: $(STAGE2)
$(STAGE2): guest-agent/stage2/rkt-kvm-stage2.c
	@mkdir -p $(OUT)/agent
	gcc -static -O2 -Wall -Wextra -o $@ $<

tools:
	$(DOTNET) build guest-agent/Rkt.Kvm.Initramfs -c Release -o $(OUT)/tools $(DOTNET_FLAGS)
	$(DOTNET) build guest-agent/Rkt.Kvm.AgentCtl -c Release -o $(OUT)/tools $(DOTNET_FLAGS)

# rkt-kvm (stage0 and the image verbs), framework-dependent: out/cli/rkt-kvm.
cli:
	$(DOTNET) build stage1-kvm/Rkt.Kvm.Stage0 -c Release -o $(OUT)/cli $(DOTNET_FLAGS)

# The stage1 image: the entrypoints binary (NativeAOT), the VMM, the kernel and the agent initramfs.
# The kernel ships stripped: the VMM loads it by its program headers and needs no symbols.
stage1: vmm agent-initramfs cli kernel
	$(DOTNET) publish stage1-kvm/Rkt.Kvm.Stage1.Entrypoints -c Release -r $(RID) -o $(OUT)/stage1/kvm $(DOTNET_FLAGS)
	strip --strip-all -o $(OUT)/stage1/vmlinux "$$(cat $(KERNEL_DIR_FILE))/vmlinux"
	$(RKT_KVM) image build-stage1 --entrypoint=$(OUT)/stage1/kvm/rkt-kvm-stage1 --vmm=$(VMM) \
	  --kernel=$(OUT)/stage1/vmlinux --initrd=$(AGENT_INITRD) --output=$(STAGE1_ACI)

# The default image: Debian's static busybox laid out by our own code (rkt-kvm image build-busybox).
busybox-image: cli
	@mkdir -p $(OUT)/images
	$(RKT_KVM) image build-busybox --output=$(BUSYBOX_ACI)

initramfs: tools $(HOSTILE)
	$(MKINITRAMFS) --spec tests/guest/initramfs.spec -o $(TEST_INITRD)
	$(MKINITRAMFS) --spec tests/guest/hostile-initramfs.spec -o $(HOSTILE_INITRD)

# The hostile guest's own code (tests/guest/hostile*.c: 9p and main, its raw virtio driver, the
# vsock and net attacks), stripped: its initramfs is unpacked at every boot.
HOSTILE_SOURCES := tests/guest/hostile.c tests/guest/hostile-virtio.c tests/guest/hostile-vsock.c tests/guest/hostile-net.c
$(HOSTILE): $(HOSTILE_SOURCES) tests/guest/hostile.h
	@mkdir -p $(OUT)/guest
	gcc -static -O2 -s -Wall -Wextra -o $@ $(HOSTILE_SOURCES)

agent-initramfs: tools agent
	$(MKINITRAMFS) --spec guest-agent/agent-initramfs.spec -o $(AGENT_INITRD)

# Pods keep their overlay mounts until gc: unmount whatever is mounted under out/ first, so that
# rm never reaches through a mount.
clean:
	@awk '{print $$5}' /proc/self/mountinfo | { grep "^$(OUT)/" || true; } | sort -r | xargs -r -n1 umount -l
	rm -rf $(OUT)
	find . -type d \( -name bin -o -name obj \) -prune -exec rm -rf {} +
