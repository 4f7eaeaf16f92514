/**
 * The only HTTP server of the daemon: Prometheus metrics at `metrics.prometheus.path`, liveness at
 * /health and /healthz, readiness at /ready. GET and HEAD only; anything else is 405, unknown paths
 * 404.
 *
 * It faces whoever can reach the address, so it is kept cheap to abuse: small header limit, short
 * header and request deadlines checked every second, a bounded number of connections, bodies never
 * read, and no request ever logged. A failed bind is an error the caller turns into exit status 1
 * (the original printed it and carried on without metrics). On a reload the server can move to a
 * new address: the new socket is bound before the old one is closed, and the counters live in the
 * registry, not here.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { formatEndpoint } from '../config/address.js';
import type { Endpoint, ListenerConfig, PrometheusSettings } from '../config/types.js';
import { MetricsListenError } from '../errors.js';
import type { Logger } from '../telemetry/logger.js';

const HEALTHY = JSON.stringify({ status: 'healthy', service: 'packetpony' });
const JSON_TYPE = 'application/json';

/** Limits against slow, oversized and garbage requests. */
const LIMITS = {
  maxHeaderSize: 8 * 1024,
  headersTimeout: 5_000,
  requestTimeout: 10_000,
  keepAliveTimeout: 5_000,
  /** How often the two deadlines above are checked (node's default is 30 s). */
  connectionsCheckingInterval: 1_000,
  /** A connection with nothing moving (e.g. a client that stopped reading) is closed. */
  socketTimeout: 30_000,
  maxHeadersCount: 64,
  maxRequestsPerSocket: 1_000,
  /** Connections at once; at the limit the oldest one without a request in progress makes room. */
  maxConnections: 64,
} as const;

/** How long requests in progress may finish when the server closes or moves. */
const CLOSE_GRACE_MS = 1_000;

/** A listener that is not ready, and why. */
export interface NotReady {
  readonly listener: string;
  readonly state: string;
  readonly reason: string;
}

/** What readiness needs of a running listener (the supervisor's ListenerGroup fits). */
export interface ListenerStatus {
  readonly name: string;
  readonly state: string;
  readonly config: Pick<ListenerConfig, 'listen_address'>;
}

const REASONS: Readonly<Record<string, (listen: string) => string>> = {
  binding: (listen) => `cannot bind ${listen} yet; retrying`,
  starting: () => 'its child process is starting',
  backoff: () => 'its child process died; restarting',
  draining: () => 'stopping: finishing open connections',
  stopped: () => 'stopped',
};

/** The configured listeners that are not serving: none means ready. */
export function notReady(configured: readonly Pick<ListenerConfig, 'name' | 'listen_address'>[], running: readonly ListenerStatus[]): NotReady[] {
  const out: NotReady[] = [];
  for (const config of configured) {
    const listener = running.find((l) => l.name === config.name);
    if (!listener) out.push({ listener: config.name, state: 'stopped', reason: 'not started yet' });
    else if (listener.state !== 'ready') {
      const reason = REASONS[listener.state]?.(listener.config.listen_address) ?? listener.state;
      out.push({ listener: config.name, state: listener.state, reason });
    }
  }
  return out;
}

export interface MetricsServerOptions {
  readonly metrics: { render(): Promise<string>; readonly contentType: string };
  /** Listeners not ready, for /ready. */
  readonly notReady: () => readonly NotReady[];
  readonly logger: Logger;
}

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/**
 * At most `max` connections at once. Not server.maxConnections: at its limit node refuses the
 * newcomer, so 64 clients dribbling their headers (each dropped only after headersTimeout, and
 * reopened at once) kept every scrape out — 626 of 628 failed in the hostile-HTTP test. Here a
 * connection with no request in progress (still sending its headers, or an idle keep-alive) makes
 * room: the oldest one of the address that holds the most connections, so a flood from a few
 * addresses evicts its own connections and never a scraper's; only when every connection is being
 * answered is the newcomer refused.
 */
function limitConnections(server: Server, max: number): void {
  const bySource = new Map<string, Set<Socket>>();
  let open = 0;
  const inRequest = new Map<Socket, number>();
  const victim = (): Socket | undefined => {
    const sources = [...bySource.values()].sort((a, b) => b.size - a.size);
    for (const sockets of sources) {
      for (const socket of sockets) if (!inRequest.has(socket)) return socket;
    }
    return undefined;
  };
  const forget = (socket: Socket, source: string): boolean => {
    const sockets = bySource.get(source);
    if (sockets === undefined || !sockets.delete(socket)) return false;
    if (sockets.size === 0) bySource.delete(source);
    open--;
    return true;
  };
  server.on('connection', (socket: Socket) => {
    const source = socket.remoteAddress ?? '';
    if (open >= max) {
      const evicted = victim();
      if (evicted === undefined) {
        socket.destroy();
        return;
      }
      forget(evicted, evicted.remoteAddress ?? '');
      evicted.destroy();
    }
    let sockets = bySource.get(source);
    if (sockets === undefined) bySource.set(source, (sockets = new Set()));
    sockets.add(socket);
    open++;
    socket.once('close', () => {
      forget(socket, source);
      inRequest.delete(socket);
    });
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    inRequest.set(socket, (inRequest.get(socket) ?? 0) + 1);
    res.once('close', () => {
      const left = (inRequest.get(socket) ?? 1) - 1;
      if (left > 0) inRequest.set(socket, left);
      else inRequest.delete(socket);
    });
  });
}

export class MetricsServer {
  readonly #options: MetricsServerOptions;
  #server: Server | undefined;
  #endpoint: Endpoint | undefined;
  #path = '/metrics';

  constructor(options: MetricsServerOptions) {
    this.#options = options;
  }

  /** The bound address, while running. */
  get address(): AddressInfo | undefined {
    const address = this.#server?.address();
    return address && typeof address === 'object' ? address : undefined;
  }

  /**
   * Brings the server in line with `settings`: starts, stops, moves it or changes the metrics
   * path. Throws MetricsListenError (the server, if any, left as it was) when it cannot bind.
   */
  async apply(settings: PrometheusSettings): Promise<void> {
    if (!settings.enabled) {
      if (this.#server) {
        await this.close();
        this.#options.logger.info('metrics server stopped');
      }
      return;
    }
    const pathChanged = this.#server !== undefined && settings.path !== this.#path;
    this.#path = settings.path;
    if (!this.#server) {
      this.#server = await this.#listen(settings.listen, settings.listen_address);
      this.#endpoint = settings.listen;
      this.#announce('metrics server started');
    } else if (settings.listen.host !== this.#endpoint?.host || settings.listen.port !== this.#endpoint.port) {
      await this.moveTo(settings.listen, settings.listen_address);
    } else if (pathChanged) {
      this.#announce('metrics path changed');
    }
  }

  /** Binds `endpoint`, then closes the old socket; on failure the old one keeps serving. */
  async moveTo(endpoint: Endpoint, text = formatEndpoint(endpoint.host, endpoint.port)): Promise<void> {
    const next = await this.#listen(endpoint, text);
    const old = this.#server;
    this.#server = next;
    this.#endpoint = endpoint;
    if (old) await this.#closeServer(old);
    this.#announce('metrics server moved');
  }

  #announce(message: string): void {
    const address = this.address;
    this.#options.logger.info(message, {
      address: address ? formatEndpoint(address.address, address.port) : '',
      path: this.#path,
    });
  }

  #listen(endpoint: Endpoint, text: string): Promise<Server> {
    const server = createServer(
      {
        maxHeaderSize: LIMITS.maxHeaderSize,
        headersTimeout: LIMITS.headersTimeout,
        requestTimeout: LIMITS.requestTimeout,
        keepAliveTimeout: LIMITS.keepAliveTimeout,
        connectionsCheckingInterval: LIMITS.connectionsCheckingInterval,
      },
      (req, res) => this.#handle(req, res),
    );
    server.maxHeadersCount = LIMITS.maxHeadersCount;
    server.maxRequestsPerSocket = LIMITS.maxRequestsPerSocket;
    limitConnections(server, LIMITS.maxConnections);
    server.setTimeout(LIMITS.socketTimeout);
    // No 'clientError' listener: node's own answer to a malformed, oversized or too slow request
    // (400, 431 or 408, then close; a reset connection just destroyed) is the right one.
    return new Promise((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        const hint = error.code === 'EADDRINUSE' ? ': another program uses it' : error.code === 'EACCES' ? ': a port below 1024 needs CAP_NET_BIND_SERVICE' : error.code === 'EADDRNOTAVAIL' ? ': no interface has that address' : '';
        reject(new MetricsListenError(`cannot listen on ${text} (metrics.prometheus.listen_address): ${error.code ?? error.message}${hint}`, { cause: error }));
      });
      // An empty host means every interface: node listens on [::] dual-stack, or 0.0.0.0 without IPv6.
      server.listen({ host: endpoint.host === '' ? undefined : endpoint.host, port: endpoint.port, exclusive: true }, () => {
        server.removeAllListeners('error');
        server.on('error', () => {});
        resolve(server);
      });
    });
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    // A body is never read; a client sending one gets its answer and the connection closed.
    const extra: Record<string, string> = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined ? { Connection: 'close' } : {};
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(req, res, 405, JSON_TYPE, JSON.stringify({ error: 'method not allowed' }), { ...extra, Allow: 'GET, HEAD', Connection: 'close' });
      return;
    }
    const url = req.url ?? '/';
    const query = url.indexOf('?');
    const path = query < 0 ? url : url.slice(0, query);
    switch (path) {
      case this.#path:
        this.#options.metrics.render().then(
          (text) => send(req, res, 200, this.#options.metrics.contentType, text, extra),
          (error: unknown) => send(req, res, 500, 'text/plain; charset=utf-8', `cannot collect metrics: ${error instanceof Error ? error.message : String(error)}\n`, extra),
        );
        return;
      case '/health':
      case '/healthz':
        send(req, res, 200, JSON_TYPE, HEALTHY, extra);
        return;
      case '/ready': {
        const waiting = this.#options.notReady();
        if (waiting.length === 0) send(req, res, 200, JSON_TYPE, HEALTHY, extra);
        else send(req, res, 503, JSON_TYPE, JSON.stringify({ status: 'not ready', service: 'packetpony', not_ready: waiting }), extra);
        return;
      }
      default:
        send(req, res, 404, JSON_TYPE, JSON.stringify({ error: 'not found', paths: [this.#path, '/health', '/healthz', '/ready'] }), extra);
    }
  }

  #closeServer(server: Server): Promise<void> {
    return new Promise((resolve) => {
      // Requests in progress get a moment to finish; idle keep-alive connections and clients that
      // stopped reading must not hold the close (or the daemon's exit) up.
      const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      server.close(() => {
        clearTimeout(force);
        resolve();
      });
      server.closeIdleConnections();
    });
  }

  async close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#endpoint = undefined;
    if (server) await this.#closeServer(server);
  }
}
