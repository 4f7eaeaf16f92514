/*
 * UDP request/response load client for the benchmark. SESSIONS sockets, each its own source port
 * (so a proxy sees SESSIONS sessions), each with one request in flight: a reply (matched by its
 * sequence number) sends the next request; a request unanswered for TIMEOUT_MS counts as lost and
 * is replaced. Bounded: it stops after WARMUP_MS + DURATION_MS. Loopback only.
 * usage: udp-client HOST PORT SESSIONS DURATION_MS WARMUP_MS PAYLOAD TIMEOUT_MS
 * prints one JSON line: {"replies":..,"lost":..,"rate":..,"loss":..}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct session { int fd; uint32_t seq; uint64_t sent_at; };

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char payload[2048];
static int payload_len;

static void send_request(struct session *s, uint32_t index, uint64_t now) {
  memcpy(payload, &index, 4);
  memcpy(payload + 4, &s->seq, 4);
  s->sent_at = now;
  /* A full socket buffer loses this request; the timeout replaces it. */
  (void)send(s->fd, payload, (size_t)payload_len, MSG_DONTWAIT);
}

int main(int argc, char **argv) {
  if (argc < 8) { fprintf(stderr, "usage: udp-client HOST PORT SESSIONS DURATION_MS WARMUP_MS PAYLOAD TIMEOUT_MS\n"); return 2; }
  const char *host = argv[1];
  int port = atoi(argv[2]), sessions = atoi(argv[3]);
  uint64_t duration = (uint64_t)atoll(argv[4]) * 1000000ull, warmup = (uint64_t)atoll(argv[5]) * 1000000ull;
  payload_len = atoi(argv[6]);
  uint64_t timeout = (uint64_t)atoll(argv[7]) * 1000000ull;
  if (payload_len < 8) payload_len = 8;
  if (payload_len > (int)sizeof payload) payload_len = sizeof payload;
  memset(payload, 'x', sizeof payload);

  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
  inet_pton(AF_INET, host, &to.sin_addr);
  int ep = epoll_create1(0);
  struct session *ss = calloc((size_t)sessions, sizeof *ss);
  uint64_t start = now_ns();
  for (int i = 0; i < sessions; i++) {
    ss[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (ss[i].fd < 0 || connect(ss[i].fd, (struct sockaddr *)&to, sizeof to) < 0) { perror("socket/connect"); return 1; }
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
    epoll_ctl(ep, EPOLL_CTL_ADD, ss[i].fd, &ev);
    send_request(&ss[i], (uint32_t)i, start);
  }
  uint64_t measure_from = start + warmup, end = measure_from + duration;
  uint64_t replies = 0, lost = 0, last_scan = start;
  struct epoll_event events[256];
  char buf[2048];
  for (;;) {
    uint64_t now = now_ns();
    if (now >= end) break;
    int n = epoll_wait(ep, events, 256, 5);
    now = now_ns();
    int counting = now >= measure_from;
    for (int e = 0; e < n; e++) {
      uint32_t i = events[e].data.u32;
      struct session *s = &ss[i];
      for (;;) {
        ssize_t got = recv(s->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (got < 0) break; /* EAGAIN, or ECONNREFUSED from an ICMP: the timeout deals with it */
        uint32_t seq;
        if (got < 8) continue;
        memcpy(&seq, buf + 4, 4);
        if (seq != s->seq) continue; /* a late reply to a request already counted as lost */
        if (counting) replies++;
        s->seq++;
        send_request(s, i, now);
        break; /* one request in flight: nothing more to read until its reply */
      }
    }
    if (now - last_scan >= 10000000ull) {
      last_scan = now;
      for (int i = 0; i < sessions; i++) {
        if (now - ss[i].sent_at >= timeout) {
          if (counting) lost++;
          ss[i].seq++;
          send_request(&ss[i], (uint32_t)i, now);
        }
      }
    }
  }
  double secs = (double)duration / 1e9;
  double loss = replies + lost > 0 ? (double)lost / (double)(replies + lost) : 0;
  printf("{\"replies\":%llu,\"lost\":%llu,\"rate\":%.1f,\"loss\":%.6f}\n",
         (unsigned long long)replies, (unsigned long long)lost, (double)replies / secs, loss);
  return 0;
}
