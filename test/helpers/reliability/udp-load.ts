/**
 * Many UDP clients at once: each its own socket (its own session in the proxy), each sending
 * numbered datagrams with a payload no other client sends, one outstanding at a time, resent if no
 * reply came within `retryMs` (loopback drops datagrams when a receive buffer overflows). At most
 * `inFlight` datagrams are outstanding over all clients. Every reply is checked against the
 * payloads its client sent.
 */
import dgram from 'node:dgram';
import type { ExecutionContext } from 'ava';

export interface UdpLoadOptions {
  readonly port: number;
  readonly host?: string;
  readonly clients: number;
  readonly datagrams: number;
  readonly inFlight?: number;
  readonly retryMs?: number;
  /** Source address of client i (default: host's loopback). */
  readonly localAddress?: (i: number) => string;
  /** Gives up after this long overall. */
  readonly deadlineMs: number;
}

export interface UdpLoadResult {
  /** Replies that matched a datagram their client sent (first time). */
  readonly matched: number;
  /** Replies carrying another client's payload (must be 0). */
  readonly foreign: number;
  /** Replies seen again (a resend's second answer). */
  readonly duplicates: number;
  readonly resent: number;
  /** Clients that got every one of their replies. */
  readonly complete: number;
  readonly elapsedMs: number;
  /** Date.now() of each client's last reply. */
  readonly lastReplyAt: number[];
  /**
   * Date.now() when each client first sent the datagram its last reply answered. The proxy relayed
   * that reply after this moment and before lastReplyAt: the two bound its last activity.
   */
  readonly lastRequestAt: number[];
  /** The source port of each client. */
  readonly ports: number[];
  /** Closes every client socket. */
  close(): Promise<void>;
}

function payload(client: number, seq: number): Buffer {
  // Unique per client and sequence; the random tail makes a reply to someone else unmistakable.
  return Buffer.from(`c${client}:s${seq}:${(client * 7919 + seq * 104729).toString(36)}`);
}

export interface UdpClients {
  readonly ports: number[];
  /** Another round on the same sockets (the same sessions): `datagrams` more each. */
  run(datagrams: number, deadlineMs: number): Promise<UdpLoadResult>;
  close(): Promise<void>;
}

/** Opens `options.clients` sockets, then runs the first round of `options.datagrams` each. */
export async function udpLoad(t: ExecutionContext, options: UdpLoadOptions): Promise<UdpLoadResult & { again: UdpClients['run'] }> {
  const clients = await udpClients(t, options);
  const result = await clients.run(options.datagrams, options.deadlineMs);
  return { ...result, again: (datagrams, deadlineMs) => clients.run(datagrams, deadlineMs) };
}

export async function udpClients(t: ExecutionContext, options: Omit<UdpLoadOptions, 'datagrams' | 'deadlineMs'>): Promise<UdpClients> {
  const host = options.host ?? '127.0.0.1';
  const type = host.includes(':') ? 'udp6' : 'udp4';
  const inFlightMax = options.inFlight ?? 256;
  const retryMs = options.retryMs ?? 300;
  const sockets: dgram.Socket[] = [];
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await Promise.all(sockets.map((s) => new Promise<void>((resolve) => {
      try {
        s.close(() => resolve());
      } catch {
        resolve();
      }
    })));
  };
  t.teardown(close);
  const ports = new Array<number>(options.clients).fill(0);
  /** The current round's reply handler. */
  let onReply: (i: number, msg: Buffer) => void = () => {};
  for (let i = 0; i < options.clients; i++) {
    const socket = dgram.createSocket(type);
    sockets.push(socket);
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.bind(0, options.localAddress?.(i) ?? (type === 'udp6' ? '::1' : '127.0.0.1'), resolve));
    await new Promise<void>((resolve) => socket.connect(options.port, host, resolve));
    ports[i] = socket.address().port;
    socket.on('message', (msg: Buffer) => onReply(i, msg));
  }
  /** Sequence numbers go on across rounds, so every payload stays unique. */
  const next = new Int32Array(options.clients);

  const run = (datagrams: number, deadlineMs: number): Promise<UdpLoadResult> => {
    const end = Int32Array.from(next, (n) => n + datagrams);
    const sentAt = new Float64Array(options.clients);
    const lastReplyAt = new Array<number>(options.clients).fill(0);
    const lastRequestAt = new Array<number>(options.clients).fill(0);
    const requestedAt = new Float64Array(options.clients);
    let matched = 0;
    let foreign = 0;
    let duplicates = 0;
    let resent = 0;
    let complete = 0;
    let outstanding = 0;
    const waiting: number[] = Array.from({ length: options.clients }, (_, i) => i);
    const started = performance.now();
    const send = (i: number, again = false): void => {
      sentAt[i] = performance.now();
      if (!again) requestedAt[i] = Date.now();
      try {
        sockets[i]!.send(payload(i, next[i]!));
      } catch {
        // closed by the test already
      }
    };
    const pump = (): void => {
      while (outstanding < inFlightMax && waiting.length > 0) {
        outstanding++;
        send(waiting.shift()!);
      }
    };
    onReply = (i, msg) => {
      const match = /^c(\d+):s(\d+):/.exec(msg.toString());
      if (match === null || Number(match[1]) !== i || !payload(i, Number(match[2])).equals(msg)) {
        foreign++;
        return;
      }
      if (Number(match[2]) !== next[i] || sentAt[i] === 0) {
        duplicates++;
        return;
      }
      matched++;
      lastReplyAt[i] = Date.now();
      lastRequestAt[i] = requestedAt[i]!;
      sentAt[i] = 0;
      outstanding--;
      next[i]++;
      if (next[i] === end[i]) complete++;
      else waiting.push(i);
      pump();
    };
    return new Promise<UdpLoadResult>((resolve, reject) => {
      const result = (): UdpLoadResult => ({ matched, foreign, duplicates, resent, complete, elapsedMs: performance.now() - started, lastReplyAt, lastRequestAt, ports, close });
      const timer = setInterval(() => {
        if (complete === options.clients) {
          clearInterval(timer);
          resolve(result());
          return;
        }
        if (closed || performance.now() - started > deadlineMs) {
          clearInterval(timer);
          for (let i = 0; i < options.clients; i++) sentAt[i] = 0;
          reject(Object.assign(new Error(`UDP load: ${complete} of ${options.clients} clients complete after ${deadlineMs} ms (matched ${matched}, resent ${resent}, foreign ${foreign})`), { result: result() }));
          return;
        }
        const now = performance.now();
        for (let i = 0; i < options.clients; i++) {
          if (sentAt[i]! > 0 && now - sentAt[i]! > retryMs) {
            resent++;
            send(i, true);
          }
        }
      }, Math.max(20, retryMs / 4));
      pump();
    });
  };
  return { ports, run, close };
}
