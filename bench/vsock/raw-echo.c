/* bench/vsock: a minimal static init for the guest that echoes every byte on vsock port 1024.
 * It isolates the cost of the VMM's virtio-vsock plus the guest kernel's vsock stack from the
 * agent's (.NET, Kestrel, HTTP/2): same READY announcement on host port 1025, no runtime.
 * A read starting with 'Q' powers the VM off (sync + reboot, which our VMM treats as exit 0). */
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  mount("devtmpfs", "/dev", "devtmpfs", 0, 0);
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  struct sockaddr_vm a; memset(&a, 0, sizeof a); a.svm_family = AF_VSOCK; a.svm_port = 1024; a.svm_cid = VMADDR_CID_ANY;
  if (bind(s, (void*)&a, sizeof a) || listen(s, 4)) { perror("bind"); return 1; }
  int r = socket(AF_VSOCK, SOCK_STREAM, 0);
  struct sockaddr_vm h; memset(&h, 0, sizeof h); h.svm_family = AF_VSOCK; h.svm_port = 1025; h.svm_cid = 2;
  if (connect(r, (void*)&h, sizeof h) == 0) { write(r, "READY raw 0\n", 12); close(r); }
  static char buf[65536];
  for (;;) {
    int c = accept(s, 0, 0); if (c < 0) continue;
    long n; while ((n = read(c, buf, sizeof buf)) > 0) { if (buf[0] == 'Q') { sync(); reboot(RB_AUTOBOOT); } write(c, buf, n); }
    close(c);
  }
}
