/**
 * Peers for the tests of issue 11 (PROXY protocol, several targets, health checks, denylist), on
 * loopback, closed when the test ends.
 *
 * The backends parse PROXY protocol headers with their own small parser, written from the spec
 * (HAProxy's doc/proxy-protocol.txt) and independent of src/proxy/proxy-protocol.ts, so a mistake
 * in the daemon's encoder cannot hide behind the same mistake in the decoder.
 */
import http from 'node:http';
import net from 'node:net';
import type { ExecutionContext } from 'ava';
import ipaddr from 'ipaddr.js';
import { waitFor } from './wait-for.js';

export interface SeenHeader {
  readonly version: 1 | 2;
  /** v1: TCP4/TCP6; v2: 'tcp4', 'tcp6', 'udp4', 'udp6' or 'local'. */
  readonly kind: string;
  readonly source: string;
  readonly sourcePort: number;
  readonly destination: string;
  readonly destinationPort: number;
  /** Bytes of the header. */
  readonly length: number;
}

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

/** A header at the start of `data`, or undefined when there is none (yet). Throws on nonsense. */
export function readHeader(data: Buffer): SeenHeader | undefined {
  if (data.length >= 16 && data.subarray(0, 12).equals(SIGNATURE)) {
    const verCmd = data[12]!;
    const famProto = data[13]!;
    const length = 16 + data.readUInt16BE(14);
    if (data.length < length) return undefined;
    if (verCmd !== 0x21) return { version: 2, kind: 'local', source: '', sourcePort: 0, destination: '', destinationPort: 0, length };
    const family = famProto >> 4;
    const proto = famProto & 0x0f;
    const size = family === 1 ? 4 : 16;
    const ip = (at: number): string => ipaddr.fromByteArray([...data.subarray(at, at + size)]).toString();
    return {
      version: 2,
      kind: `${proto === 1 ? 'tcp' : 'udp'}${family === 1 ? 4 : 6}`,
      source: ip(16),
      destination: ip(16 + size),
      sourcePort: data.readUInt16BE(16 + 2 * size),
      destinationPort: data.readUInt16BE(18 + 2 * size),
      length,
    };
  }
  const text = data.toString('latin1');
  const end = text.indexOf('\r\n');
  if (end === -1) return undefined;
  const match = /^PROXY (TCP4|TCP6) (\S+) (\S+) (\d+) (\d+)$/.exec(text.slice(0, end));
  if (!match) throw new Error(`not a PROXY line: ${JSON.stringify(text.slice(0, end))}`);
  return {
    version: 1,
    kind: match[1]!,
    source: ipaddr.parse(match[2]!).toString(),
    destination: ipaddr.parse(match[3]!).toString(),
    sourcePort: Number(match[4]),
    destinationPort: Number(match[5]),
    length: end + 2,
  };
}

export interface HeaderConnection {
  readonly header: SeenHeader;
  /** What came after the header, so far. */
  readonly data: () => string;
}

/**
 * A TCP backend for `proxy_protocol`: reads each connection's header, then echoes what follows
 * (the header itself is not echoed). A connection without a valid header is destroyed.
 */
export async function proxyBackend(t: ExecutionContext, host = '127.0.0.1'): Promise<{ port: number; connections: HeaderConnection[] }> {
  const connections: HeaderConnection[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    let buffered = Buffer.alloc(0);
    let after = '';
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      let header: SeenHeader | undefined;
      try {
        header = readHeader(buffered);
      } catch {
        socket.destroy();
        return;
      }
      if (header === undefined) return;
      socket.off('data', onData);
      connections.push({ header, data: () => after });
      const rest = buffered.subarray(header.length);
      after += rest.toString('latin1');
      if (rest.length > 0) socket.write(rest);
      socket.on('data', (more: Buffer) => {
        after += more.toString('latin1');
        socket.write(more);
      });
    };
    socket.on('data', onData);
    socket.on('end', () => socket.end());
  });
  return { port: await serve(t, server, host), connections };
}

async function serve(t: ExecutionContext, server: net.Server, host: string, port = 0): Promise<number> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  t.teardown(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return (server.address() as net.AddressInfo).port;
}

/** Connects (optionally from `localAddress`), sends `payload`, resolves with the echo of it or null when reset. */
export function echoThrough(t: ExecutionContext, port: number, payload: string, options: { host?: string; localAddress?: string } = {}): Promise<{ reply: string | null; localPort: number }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: options.host ?? '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    t.teardown(() => void socket.destroy());
    let got = '';
    let localPort = 0;
    socket.on('connect', () => {
      localPort = socket.localPort ?? 0;
      socket.write(payload);
    });
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString('latin1');
      if (got.length >= payload.length) {
        socket.end();
        resolve({ reply: got, localPort });
      }
    });
    const refused = (): void => resolve({ reply: null, localPort });
    socket.on('error', refused);
    socket.on('close', refused);
  });
}

/** A backend that names itself: every connection gets `name\n` at once, then an echo. */
export interface NamedBackend {
  readonly name: string;
  readonly port: number;
  /** Connections accepted (health checks included). */
  accepted(): number;
  /** Connections open now. */
  open(): number;
  /** Stops listening and closes its connections: the port then refuses. */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
}

export async function namedBackend(t: ExecutionContext, name: string, host = '127.0.0.1'): Promise<NamedBackend> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const make = (): net.Server =>
    net.createServer({ allowHalfOpen: true }, (socket) => {
      accepted++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      socket.write(`${name}\n`);
      socket.pipe(socket);
    });
  let server = make();
  let listening = false;
  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        listening = true;
        resolve((server.address() as net.AddressInfo).port);
      });
    });
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      if (!listening) return resolve();
      listening = false;
      server.close(() => resolve());
    });
  t.teardown(close);
  const port = await listen(0);
  return {
    name,
    port,
    accepted: () => accepted,
    open: () => sockets.size,
    stop: close,
    async start() {
      server = make();
      await listen(port);
    },
  };
}

/**
 * Connects and reads the backend's name. Resolves with it and the open socket (closed when the test
 * ends, or by the caller), or null when the daemon refused (reset or closed before a name came).
 */
export function whoAnswers(t: ExecutionContext, port: number, options: { localAddress?: string } = {}): Promise<{ name: string; socket: net.Socket } | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
    t.teardown(() => void socket.destroy());
    let text = '';
    const refused = (): void => resolve(null);
    socket.on('error', refused);
    socket.on('close', refused);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const newline = text.indexOf('\n');
      if (newline === -1) return;
      socket.off('close', refused);
      socket.removeAllListeners('data');
      resolve({ name: text.slice(0, newline), socket });
    });
  });
}

/** Asks once and hangs up: the name of the backend that answered, or null. */
export async function nameOnce(t: ExecutionContext, port: number, options: { localAddress?: string } = {}): Promise<string | null> {
  const answer = await whoAnswers(t, port, options);
  if (answer === null) return null;
  await new Promise<void>((resolve) => {
    answer.socket.once('close', () => resolve());
    answer.socket.destroy();
  });
  return answer.name;
}

/** Waits until the sample `name{labels}` satisfies `ok` (absent samples read as undefined). */
export async function waitForMetric(
  daemon: { waitForLine(pattern: RegExp): Promise<string> },
  name: string,
  labels: Record<string, string>,
  ok: (value: number | undefined) => boolean,
  timeoutMs = 15_000,
): Promise<number | undefined> {
  const line = await daemon.waitForLine(/\[INFO\] metrics server started /);
  const port = Number(/address=\S*:(\d+)/.exec(line)![1]);
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let last: number | undefined;
  const read = async (): Promise<number | undefined> => {
    const text = await new Promise<string>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/metrics' }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve(body));
      }).on('error', reject);
    });
    for (const l of text.split('\n')) {
      if (!l.startsWith(`${name}{`)) continue;
      const close = l.indexOf('}');
      const have = l.slice(name.length + 1, close).split(',');
      if (wanted.every((label) => have.includes(label))) return Number(l.slice(close + 1).trim());
    }
    return undefined;
  };
  const found = await waitFor(async () => {
    last = await read();
    return ok(last) ? { value: last } : undefined;
  }, `${name}${JSON.stringify(labels)} (last seen: ${String(last)})`, timeoutMs);
  return found.value;
}
