/**
 * The CLI's one place that talks to the client library: connects an endpoint with the resolved
 * credentials and describes a link's path for humans. Node only.
 */
import { readFile } from 'node:fs/promises';
import type { Channel, Endpoint, Link, LinkPath } from '../client/index.js';
import { isPingProbe, PING_LABEL } from '../protocol/channels.js';
import type { EndpointCredentials } from './credentials.js';

export type { Channel, Endpoint, Link, LinkPath };

/** Default dial deadline: the signaling service waits up to 30 s for a person to accept. */
export const DEFAULT_DIAL_TIMEOUT_MS = 30_000;

/**
 * Longest wait for `Endpoint.close()` after Ctrl-C: it takes one round trip to the signaling
 * service and the relay, and at most about 2 s when one of them does not answer (the library's
 * own bounds: close handshake 1 s, TURN deallocation 1 s).
 */
export const SIGNAL_CLOSE_BOUND_MS = 3_000;

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
  // Loaded here, not at the top: the WebRTC stack takes seconds to load on a busy machine, and
  // `homelink <command> --help` or a usage error should not wait for it.
  const { Endpoint } = await import('../client/index.js');
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
  // Ctrl-C: leave presence and close links, and exit 130 only once that is done: the peer then
  // hears a bye at once instead of an ICE restart cycle, and the relay frees our allocations.
  // Bounded, and a second Ctrl-C exits at once.
  const onSignal = (): void => {
    process.stderr.write('\nhomelink: interrupted\n');
    const now = (): never => process.exit(130);
    process.once('SIGINT', now);
    process.once('SIGTERM', now);
    void Promise.race([ep.close(), new Promise((r) => setTimeout(r, SIGNAL_CLOSE_BOUND_MS))]).then(now);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // The service allows one presence per id: a second process with the same id takes over and this
  // one would sit there unreachable. Say so and stop, instead of waiting for nothing.
  ep.on('replaced', () => {
    process.stderr.write(
      `homelink: another endpoint connected as ${creds.endpointId} and replaced this one (an id can be online once): stop the other one or pick another --as\n`,
    );
    ep.close();
    process.exit(EXIT_REPLACED);
  });
  return ep;
}

/** Exit code when another process took over our id. */
export const EXIT_REPLACED = 1;

/** Echoes `homelink ping` probes on any ping channel the peer opens on `link` (protocol/channels.ts). */
export function servePings(link: Link): void {
  link.on('channel', (ch) => {
    if (ch.label !== PING_LABEL) return;
    ch.on('message', (m) => {
      if (isPingProbe(m)) void ch.send(m).catch(() => undefined);
    });
  });
}

/**
 * Accepts peers until one opens `label`, and returns that link and channel. Links that only
 * ping (`homelink ping`) are answered and, once they close, the next request is accepted:
 * pinging a listener does not use it up. Requests that arrive while a link is up are refused
 * with `busy`.
 */
export function acceptPeer(ep: Endpoint, label: string, log: (line: string) => void): Promise<{ link: Link; channel: Channel }> {
  return new Promise((resolve) => {
    let busy = false;
    ep.on('request', (req) => {
      if (busy) return void req.reject('busy');
      busy = true;
      log(`${req.peer} asks to connect; accepting`);
      req.accept().then(
        (link) => {
          servePings(link);
          let pinged = false;
          const offClose = link.on('close', () => {
            offChannel();
            busy = false;
            log(`${link.peer} ${pinged ? 'finished pinging' : 'left'}; still waiting`);
          });
          const offChannel = link.on('channel', (c) => {
            if (c.label === PING_LABEL) pinged = true;
            if (c.label !== label) return;
            offChannel();
            offClose();
            resolve({ link, channel: c });
          });
        },
        (e: unknown) => {
          busy = false;
          log(`link with ${req.peer} failed: ${(e as Error).message}; still waiting`);
        },
      );
    });
  });
}

/** `direct udp 127.0.0.1:5000 <-> 127.0.0.1:6000, rtt 0.4 ms` or `relay (tcp) ...`. */
export function describePath(p: LinkPath | null): string {
  if (!p) return 'path unknown';
  const rtt = p.rttMs !== undefined ? `, rtt ${p.rttMs.toFixed(1)} ms` : '';
  return `${p.kind === 'direct' ? 'direct' : `via relay (${p.protocol} to the relay)`} ${p.local} <-> ${p.remote}${p.kind === 'direct' ? ` over ${p.protocol}` : ''}${rtt}`;
}

/**
 * Opens `label` for a command's protocol. The peer's library holds a channel we open, and what we
 * send on it, until its application listens (client/link.ts), even when its side of the link
 * finishes verifying after ours: nothing needs acknowledging or re-opening here.
 */
export function openChannel(link: Link, label: string): Promise<Channel> {
  return link.channel(label);
}

/** Waits for the peer to open `label` and returns it (a channel the peer opened before we asked is held for us). */
export function acceptChannel(link: Link, label: string): Promise<Channel> {
  return new Promise((resolve) => {
    const off = link.on('channel', (c) => {
      if (c.label !== label) return;
      off();
      resolve(c);
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
  await link.close();
}
