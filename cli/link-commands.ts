/**
 * `homelink listen` and `homelink dial <peer>`: a netcat over an encrypted, identity-verified
 * link. stdin goes to the peer, the peer's bytes to stdout; the path (direct or relayed, and
 * how) and every change of it go to stderr.
 *
 * On the wire: one reliable, ordered channel labelled `stdio`, opened by the dialer. Binary
 * messages are data; the text message `{"t":"eof"}` ends one direction (stdin reached its end),
 * like a TCP half-close (protocol/channels.ts, shared with the demo page). When both
 * directions ended, the link closes and both exit 0.
 * Node only.
 */
import type { Readable } from 'node:stream';
import { CHUNK_BYTES, EOF_FRAME, STDIO_LABEL } from '../protocol/channels.js';
import { resolveCredentials, UsageError, type CredentialFlags } from './credentials.js';
import { acceptPeer, connectEndpoint, describePath, DEFAULT_DIAL_TIMEOUT_MS, openChannel, type Channel, type Endpoint, type Link } from './endpoint.js';
import { ENDPOINT_HELP, ENDPOINT_OPTIONS, describeError, type Command } from './main.js';
import { devDir } from './stack.js';
import { DEFAULT_IDS } from './defaults.js';

/** How long a closing side waits for its last bytes to leave before closing the link. */
const CLOSE_DRAIN_MS = 5_000;

const log = (line: string): void => {
  process.stderr.write(`homelink: ${line}\n`);
};

/** Parses `--timeout` (seconds) into ms. */
export function timeoutMs(v: unknown): number {
  if (v === undefined) return DEFAULT_DIAL_TIMEOUT_MS;
  const n = Number(v);
  if (!(n > 0 && n <= 3600)) throw new UsageError('--timeout must be a number of seconds between 0 and 3600');
  return Math.round(n * 1000);
}

/** Prints the path now and whenever it changes. */
export function reportPath(link: Link, peer: string): void {
  log(`link to ${peer} open: ${describePath(link.path)}`);
  link.on('path', (p) => log(`path changed: ${describePath(p)}`));
  link.on('interrupted', () => log('connectivity lost; restarting ICE (the link stays open)'));
  link.on('resumed', () => log(`connectivity back: ${describePath(link.path)}`));
}

/** Runs the netcat loop on an open `stdio` channel; resolves with the exit code. */
async function pipe(link: Link, channel: Channel, input: Readable): Promise<number> {
  let sentEof = false;
  let gotEof = false;
  let closedByUs = false;
  return new Promise<number>((resolve) => {
    let finished = false;
    const finish = (code: number, why?: string): void => {
      if (finished) return;
      finished = true;
      if (why) log(why);
      input.destroy();
      resolve(code);
    };
    const maybeDone = async (): Promise<void> => {
      if (!(sentEof && gotEof)) return;
      closedByUs = true;
      await Promise.race([channel.drained(), new Promise((r) => setTimeout(r, CLOSE_DRAIN_MS))]);
      finish(0);
    };
    channel.on('message', (m) => {
      if (typeof m === 'string') {
        if (m === EOF_FRAME) {
          gotEof = true;
          void maybeDone();
        }
        return;
      }
      process.stdout.write(m);
    });
    channel.on('close', () => {
      if (!closedByUs) finish(sentEof && gotEof ? 0 : 1, gotEof ? undefined : 'the peer closed the link before it finished');
    });
    link.on('close', (reason) => {
      if (!closedByUs) finish(sentEof && gotEof ? 0 : 1, `link closed (${reason})`);
    });
    void (async () => {
      try {
        for await (const chunk of input as AsyncIterable<Buffer>) {
          for (let i = 0; i < chunk.length; i += CHUNK_BYTES) {
            // send() waits while the channel's buffer is full: stdin is read only as fast as the link drains.
            await channel.send(new Uint8Array(chunk.buffer, chunk.byteOffset + i, Math.min(CHUNK_BYTES, chunk.length - i)));
          }
        }
        await channel.send(EOF_FRAME);
        sentEof = true;
        void maybeDone();
      } catch (e) {
        if (!finished) finish(1, `sending failed: ${describeError(e)}`);
      }
    })();
  });
}

async function endpointFor(v: Record<string, unknown>, defaultId: string): Promise<Endpoint> {
  const creds = await resolveCredentials(v as CredentialFlags, devDir(v['dir'] as string | undefined), defaultId);
  const ep = await connectEndpoint(creds, { relay: v['relay'] === true });
  return ep;
}

export const listenCommand: Command = {
  summary: 'Wait for one peer to dial this endpoint; then stdin goes to the peer and the peer to stdout (like netcat). The path is printed to stderr.',
  usage: `homelink listen [--as ID] [options]

  Accepts the first connection request, refuses later ones while busy, and exits when both sides
  reached the end of their input (or the link closes).
  Peers that only ping it (homelink ping) are answered and do not use it up.
  --as ID              this endpoint's id (default ${DEFAULT_IDS.listen})
${ENDPOINT_HELP}`,
  options: { ...ENDPOINT_OPTIONS },
  async run(v) {
    const id = (v['as'] as string | undefined) ?? DEFAULT_IDS.listen;
    const ep = await endpointFor(v, DEFAULT_IDS.listen);
    try {
      log(`listening as ${id}; waiting for a peer (Ctrl-C to stop)`);
      const { link, channel } = await acceptPeer(ep, STDIO_LABEL, log);
      reportPath(link, link.peer);
      const code = await pipe(link, channel, process.stdin);
      await link.close();
      return code;
    } finally {
      await ep.close();
    }
  },
};

export const dialCommand: Command = {
  summary: 'Dial a peer by id; then stdin goes to the peer and the peer to stdout (like netcat). The path is printed to stderr.',
  usage: `homelink dial <peer> [--as ID] [options]

  --as ID              this endpoint's id (default ${DEFAULT_IDS.dial})
${ENDPOINT_HELP}`,
  options: { ...ENDPOINT_OPTIONS },
  async run(v, positionals) {
    const peer = positionals[0];
    if (!peer || positionals.length > 1) throw new UsageError('give exactly one peer id: homelink dial <peer>');
    const ms = timeoutMs(v['timeout']);
    const ep = await endpointFor(v, DEFAULT_IDS.dial);
    try {
      log(`dialing ${peer} ...`);
      const link = await ep.dial(peer, { timeoutMs: ms });
      reportPath(link, peer);
      const channel = await openChannel(link, STDIO_LABEL);
      const code = await pipe(link, channel, process.stdin);
      await link.close();
      return code;
    } finally {
      await ep.close();
    }
  },
};
