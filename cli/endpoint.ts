/**
 * The CLI's one place that talks to the client library: connects an endpoint with the resolved
 * credentials and describes a link's path for humans. Node only.
 */
import { readFile } from 'node:fs/promises';
import { Endpoint, type Channel, type Link, type LinkPath } from '../client/index.js';
import type { EndpointCredentials } from './credentials.js';

export type { Channel, Link, LinkPath };
export { Endpoint };

/** Default dial deadline: the signaling service waits up to 30 s for a person to accept. */
export const DEFAULT_DIAL_TIMEOUT_MS = 30_000;

/** Options the endpoint commands share. */
export interface ConnectFlags {
  readonly relay?: boolean;
}

/**
 * Connects to the signaling service as `creds.endpointId`.
 *
 * On the local stack the relay's TLS certificate is self-signed: it is trusted by pinning that
 * certificate as the CA, not by turning verification off.
 */
export async function connectEndpoint(creds: EndpointCredentials, flags: ConnectFlags): Promise<Endpoint> {
  const ca = creds.stack?.relay.caFile ? await readFile(creds.stack.relay.caFile, 'utf8').catch(() => undefined) : undefined;
  const ep = await Endpoint.connect({
    signalingUrl: creds.signalingUrl,
    token: creds.token,
    identity: creds.identity,
    trust: creds.trust,
    ...(flags.relay ? { iceTransportPolicy: 'relay' as const } : {}),
    // The local stack runs on loopback only: gather there, and skip probing the machine's other interfaces.
    ...(creds.stack ? { hostAddresses: ['127.0.0.1'] } : {}),
    ...(ca ? { turnTlsOptions: { ca, servername: 'localhost' } } : {}),
  });
  // Ctrl-C: leave presence and close links (the peer sees a bye, not a timeout), then exit 130.
  const onSignal = (): void => {
    process.stderr.write('\nhomelink: interrupted\n');
    ep.close();
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return ep;
}

/** `direct udp 127.0.0.1:5000 <-> 127.0.0.1:6000, rtt 0.4 ms` or `relay (tcp) ...`. */
export function describePath(p: LinkPath | null): string {
  if (!p) return 'path unknown';
  const rtt = p.rttMs !== undefined ? `, rtt ${p.rttMs.toFixed(1)} ms` : '';
  return `${p.kind === 'direct' ? 'direct' : `via relay (${p.protocol} to the relay)`} ${p.local} <-> ${p.remote}${p.kind === 'direct' ? ` over ${p.protocol}` : ''}${rtt}`;
}

/** Per attempt: how long the opener waits for the peer's hello on a new channel. */
export const CHANNEL_HELLO_TIMEOUT_MS = 2_000;
/**
 * Attempts before giving up on opening a channel the peer acknowledges (about 16 s in all). The
 * peer's side of the link may finish verifying seconds after ours (a browser opens first), and
 * client/link.ts hands channels that arrived before that to `channel` listeners synchronously at
 * open, before the code that accepted the link can attach one: those are lost, so we open again.
 */
const CHANNEL_ATTEMPTS = 8;
const HELLO = '{"t":"hello"}';

/**
 * Opens `label` and waits until the peer acknowledges it with a hello, opening it again when no
 * hello comes (see CHANNEL_ATTEMPTS): the CLI does not depend on which side's link opened first.
 */
export async function openChannel(link: Link, label: string): Promise<Channel> {
  for (let attempt = 0; attempt < CHANNEL_ATTEMPTS; attempt++) {
    const ch = await link.channel(label);
    const ok = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        off();
        resolve(false);
      }, CHANNEL_HELLO_TIMEOUT_MS);
      const off = ch.on('message', (m) => {
        if (m === HELLO) {
          clearTimeout(t);
          off();
          resolve(true);
        }
      });
    });
    if (ok) return ch;
    ch.close();
  }
  throw new Error(`the peer did not take the ${label} channel: is it running the matching command (listen/receive)?`);
}

/** Waits for the peer to open `label`, acknowledges it, and returns it. */
export function acceptChannel(link: Link, label: string): Promise<Channel> {
  return new Promise((resolve) => {
    const off = link.on('channel', (c) => {
      if (c.label !== label) return;
      off();
      void c.send(HELLO).then(() => resolve(c), () => undefined);
    });
  });
}

/** How long the side that spoke last waits for the peer to close the link before closing it itself. */
export const PEER_CLOSE_WAIT_MS = 3_000;

/**
 * Ends a link politely: waits until our last messages left the channel, then gives the peer a
 * moment to close first (it closes once it read them), then closes. Closing at once could drop
 * the last message still in flight.
 */
export async function closeAfterPeer(link: Link, ch: Channel | null): Promise<void> {
  if (ch) await Promise.race([ch.drained().catch(() => undefined), new Promise((r) => setTimeout(r, PEER_CLOSE_WAIT_MS))]);
  await new Promise<void>((resolve) => {
    const t = setTimeout(resolve, PEER_CLOSE_WAIT_MS);
    link.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
  link.close();
}
