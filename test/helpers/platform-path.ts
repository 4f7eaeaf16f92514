/**
 * Which path the daemons of this test run take: PACKETPONY_PUBLIC_PATH=1 in the test run's
 * environment (inherited by every daemon) puts them on public APIs only (src/platform/). Tests
 * whose assertions differ there by design (README, "What the public TCP path cannot see") ask this.
 */
export const PUBLIC_PATH = process.env['PACKETPONY_PUBLIC_PATH'] === '1';

/** The close event's note after a bandwidth cut where the kernel's send queue cannot be seen. */
export const UNCONFIRMED_NOTE = '; delivery of the last bytes unconfirmed (the send queue cannot be seen without the addon or on the public path)';
