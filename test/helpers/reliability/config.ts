/** Listener files for the reliability suite: loopback, every 127.0.0.0/8 and ::1 and fd00::/8 client allowed. */
export const ALLOW_LOOPBACK = 'allowlist: ["127.0.0.0/8", "::1", "fd00::/8"]\n';

export function tcpListener(target: string, extra = '', listen = '127.0.0.1:0'): string {
  return `protocol: tcp\nlisten_address: "${listen}"\ntarget_address: "${target}"\n${ALLOW_LOOPBACK}${extra}`;
}

export function udpListener(target: string, extra = '', listen = '127.0.0.1:0'): string {
  return `protocol: udp\nlisten_address: "${listen}"\ntarget_address: "${target}"\n${ALLOW_LOOPBACK}${extra}`;
}

/** The main file with stdout logging and, optionally, metrics on a free loopback port and a JSON log. */
export function mainFile(options: { metrics?: boolean; jsonlog?: string; extraLogging?: string; shutdownTimeout?: string } = {}): string {
  let text = 'logging:\n  stdout:\n    enabled: true\n';
  if (options.jsonlog !== undefined) text += `  jsonlog:\n    enabled: true\n    path: "${options.jsonlog}"\n`;
  if (options.extraLogging !== undefined) text += options.extraLogging.replace(/^/gm, '  ') + '\n';
  if (options.metrics === true) text += 'metrics:\n  prometheus:\n    enabled: true\n    listen_address: "127.0.0.1:0"\n';
  if (options.shutdownTimeout !== undefined) text += `server:\n  shutdown_timeout: "${options.shutdownTimeout}"\n`;
  return text;
}
