/**
 * Standard output, text or JSON lines. Under systemd, journald captures it. Writes go straight to
 * the stream: only the supervisor writes here, never a child, so a slow reader cannot hold up
 * proxying (children keep relaying and batch their events meanwhile).
 */
import type { LogEvent } from '../events.js';
import { formatJson, formatText } from '../format.js';
import type { LogSink, Severity } from '../logger.js';

export class StdoutSink implements LogSink {
  readonly name = 'stdout';
  readonly threshold: Severity;
  readonly #json: boolean;
  readonly #stream: NodeJS.WritableStream;

  constructor(options: { json: boolean; threshold?: Severity; stream?: NodeJS.WritableStream }) {
    this.#json = options.json;
    this.threshold = options.threshold ?? 'info';
    this.#stream = options.stream ?? process.stdout;
  }

  write(event: LogEvent): void {
    this.#stream.write(`${this.#json ? formatJson(event) : formatText(event)}\n`);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
