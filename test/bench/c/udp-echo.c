/*
 * UDP echo backend for the benchmark: answers every datagram with itself, in batches
 * (recvmmsg/sendmmsg) so that the backend is never what limits a UDP row. Loopback only.
 * usage: udp-echo PORT   (0 = any free port; prints "ready PORT" once bound)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SIZE 2048

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("socket"); return 1; }
  int size = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
  socklen_t len = sizeof addr;
  getsockname(fd, (struct sockaddr *)&addr, &len);
  printf("ready %d\n", ntohs(addr.sin_port));
  fflush(stdout);

  static char bufs[BATCH][SIZE];
  static struct sockaddr_in peers[BATCH];
  static struct iovec iov[BATCH];
  static struct mmsghdr msgs[BATCH];
  for (;;) {
    for (int i = 0; i < BATCH; i++) {
      iov[i].iov_base = bufs[i];
      iov[i].iov_len = SIZE;
      memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &peers[i];
      msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
    }
    int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;
    for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
    int off = 0;
    while (off < n) {
      int sent = sendmmsg(fd, msgs + off, n - off, 0);
      if (sent <= 0) break; /* a full send buffer loses the rest: the client counts it as loss */
      off += sent;
    }
  }
}
