/**
 * Syslog over udp or tcp with the `syslog-client` package: it writes the RFC 3164 header
 * (`<PRI>Mmm dd hh:mm:ss HOSTNAME `), we give it `TAG[PID]: BODY`. Over tcp each message ends with
 * a newline, the framing rsyslog and syslog-ng expect.
 *
 * Two quirks of the package are handled here. Its tcp socket has an inactivity timeout that reports
 * an error without closing anything, so it is set as long as timers allow and the sink's own stall
 * watchdog takes its place. And a client closed while still connecting cannot reach its socket;
 * should that socket connect later, its first callback closes it again.
 */
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { parseTargetAddress } from '../../config/address.js';
import { LogSinkError } from '../../errors.js';
import { severityCode, taggedBody, FACILITY_DAEMON } from './syslog-message.js';
import type { SyslogConnect, SyslogItem, SyslogTransport } from './syslog-sink.js';

/** The part of syslog-client 1.1.1 used here (the package ships no types). */
interface SyslogClient {
  log(message: string, options: { severity: number; timestamp: Date }, done: (error?: Error) => void): void;
  close(): void;
  on(event: 'error' | 'close', listener: (error?: Error) => void): void;
}

interface SyslogClientModule {
  createClient(
    target: string,
    options: { port: number; transport: number; facility: number; rfc3164: boolean; tcpTimeout: number; syslogHostname: string },
  ): SyslogClient;
  Transport: { Tcp: number; Udp: number };
}

const syslogClient = createRequire(import.meta.url)('syslog-client') as SyslogClientModule;

/** The largest timeout node's timers accept: in effect, never. */
const NO_TIMEOUT_MS = 2 ** 31 - 1;

export interface NetworkSyslogOptions {
  readonly protocol: 'udp' | 'tcp';
  /** `host:port`, as in logging.syslog.address. */
  readonly address: string;
  readonly tag: string;
}

class NetworkTransport implements SyslogTransport {
  readonly #client: SyslogClient;
  readonly #tag: string;
  #closed = false;

  constructor(client: SyslogClient, tag: string, broken: (error: Error) => void) {
    this.#client = client;
    this.#tag = tag;
    // Without a listener an 'error' event would throw; 'close' means the server hung up.
    client.on('error', (error) => broken(error ?? new Error('connection failed')));
    client.on('close', () => {
      if (!this.#closed) broken(new Error('the server closed the connection'));
    });
  }

  send(item: SyslogItem, done: (error: Error | null) => void): void {
    try {
      this.#client.log(taggedBody(this.#tag, process.pid, item.event), { severity: severityCode(item.severity), timestamp: new Date(item.event.timestamp) }, (error) => {
        if (this.#closed) {
          this.#client.close(); // a connection that came up after we gave up on it
          return;
        }
        done(error ?? null);
      });
    } catch (error) {
      done(error as Error);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }
}

/** Checks the address now (a start-up error if malformed) and returns how to connect. */
export function networkSyslog(options: NetworkSyslogOptions): SyslogConnect {
  const parsed = parseTargetAddress(options.address);
  if (!parsed.ok) throw new LogSinkError(`logging.syslog.address: ${parsed.message}`);
  const { host, port } = parsed.endpoint;
  const transport = options.protocol === 'tcp' ? syslogClient.Transport.Tcp : syslogClient.Transport.Udp;
  const syslogHostname = hostname();
  return (broken) => {
    const client = syslogClient.createClient(host, {
      port,
      transport,
      facility: FACILITY_DAEMON,
      rfc3164: true,
      tcpTimeout: NO_TIMEOUT_MS,
      syslogHostname,
    });
    return new NetworkTransport(client, options.tag, broken);
  };
}
