{
  "targets": [
    {
      "target_name": "packetpony_native",
      "sources": ["addon.c", "udp_batch.c", "socket_calls.c", "tcp_reads.c", "process_calls.c", "unix_dgram.c", "socket_bind.c", "reuseport.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
