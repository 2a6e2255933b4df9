/**
 * `homelink send <peer> <file>` and `homelink receive`: a file over the encrypted link, with a
 * progress bar, an end-to-end SHA-256 check, and resume after an interruption.
 *
 * On the wire, one reliable ordered channel labelled `file`, opened by the sender: offer,
 * accept(offset) or reject, binary chunks, end(sha256), result(ok) (protocol/channels.ts,
 * shared with the demo page).
 *
 * The receiver writes `<name>.part` and renames it only once the hash matches, so a complete file
 * under its real name has always been verified. An interrupted transfer leaves the `.part`; the
 * same `send` again resumes from its end (the hash still covers the whole file).
 * Node only.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { CHUNK_BYTES, FILE_LABEL, parseControl, type Control } from '../protocol/channels.js';
import { resolveCredentials, UsageError, type CredentialFlags } from './credentials.js';
import { acceptPeer, closeAfterPeer, connectEndpoint, openChannel, type Channel, type Link } from './endpoint.js';
import { reportPath, timeoutMs } from './link-commands.js';
import { ENDPOINT_HELP, ENDPOINT_OPTIONS, describeError, type Command } from './main.js';
import { formatBytes, Progress } from './progress.js';
import { devDir } from './stack.js';
import { DEFAULT_IDS } from './defaults.js';

/** Longest file name accepted from a peer (ext4's limit). */
const MAX_NAME_BYTES = 255;
/** How long each side waits for the other's next control message (a person may be slow to start receive). */
const CONTROL_TIMEOUT_MS = 30_000;
/**
 * Silence tolerated in the middle of a transfer: one ICE restart (client SESSION_DEFAULTS: 1.5 s
 * grace + 8 s per attempt) fits; past that the receiver keeps what arrived and the next send
 * resumes, which beats waiting out every restart.
 */
const DATA_SILENCE_TIMEOUT_MS = 15_000;

const log = (line: string): void => {
  process.stderr.write(`homelink: ${line}\n`);
};

/** A transfer failed; the message says what happened and what to do. */
class TransferError extends Error {
  override readonly name = 'TransferError';
}

/**
 * A file name from a peer, reduced to a safe base name: no directories, no `..`, no control
 * characters, no leading dot. Null when nothing usable is left.
 */
export function safeFileName(name: string): string | null {
  // eslint-disable-next-line no-control-regex
  const base = basename(name.replace(/\\/g, '/')).replace(/[\u0000-\u001f\u007f]/g, '').trim();
  if (!base || base === '.' || base === '..' || base.startsWith('.') || Buffer.byteLength(base) > MAX_NAME_BYTES) return null;
  return base;
}

/** Receives control messages and binary chunks from a channel in order. */
class Inbox {
  private readonly queue: Array<Control | Uint8Array | Error> = [];
  private waiter: (() => void) | null = null;

  constructor(ch: Channel, link: Link) {
    ch.on('message', (m) => {
      if (typeof m === 'string') this.push(parseControl(m) ?? new TransferError('the peer sent a malformed control message'));
      else this.push(m);
    });
    ch.on('close', () => this.push(new TransferError('the peer closed the channel')));
    link.on('close', (reason) => this.push(new TransferError(`the link closed (${reason})`)));
  }

  private push(x: Control | Uint8Array | Error): void {
    this.queue.push(x);
    this.waiter?.();
  }

  async next(timeout = CONTROL_TIMEOUT_MS): Promise<Control | Uint8Array> {
    if (this.queue.length === 0) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new TransferError(`the peer said nothing for ${timeout / 1000} s`)), timeout);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = null;
          resolve();
        };
      });
    }
    const x = this.queue.shift()!;
    if (x instanceof Error) {
      this.queue.unshift(x); // sticky: every later read fails the same way
      throw x;
    }
    return x;
  }

  async control(): Promise<Control> {
    const x = await this.next();
    if (x instanceof Uint8Array) throw new TransferError('the peer sent data out of turn');
    return x;
  }
}

async function hashPrefix(file: string, bytes: number, hash: ReturnType<typeof createHash>): Promise<void> {
  if (bytes === 0) return;
  for await (const chunk of createReadStream(file, { start: 0, end: bytes - 1 })) hash.update(chunk as Buffer);
}

export const sendCommand: Command = {
  summary: 'Send a file to a peer running `homelink receive`: progress bar, SHA-256 verified end to end, resumes an interrupted transfer.',
  usage: `homelink send <peer> <file> [--as ID] [options]

  --as ID              this endpoint's id (default ${DEFAULT_IDS.send})
${ENDPOINT_HELP}`,
  options: { ...ENDPOINT_OPTIONS },
  async run(v, positionals) {
    const [peer, file, ...extra] = positionals;
    if (!peer || !file || extra.length > 0) throw new UsageError('usage: homelink send <peer> <file>');
    let size: number;
    try {
      const st = await stat(file);
      if (!st.isFile()) throw new UsageError(`${file} is not a regular file`);
      size = st.size;
    } catch (e) {
      if (e instanceof UsageError) throw e;
      throw new UsageError(`cannot read ${file}: check the path`);
    }
    const name = safeFileName(file);
    if (!name) throw new UsageError(`${file}: the file name cannot be sent (hidden or empty name); rename it`);
    const ms = timeoutMs(v['timeout']);
    const creds = await resolveCredentials(v as CredentialFlags, devDir(v['dir'] as string | undefined), DEFAULT_IDS.send);
    const ep = await connectEndpoint(creds, { relay: v['relay'] === true });
    try {
      log(`dialing ${peer} ...`);
      const link = await ep.dial(peer, { timeoutMs: ms });
      reportPath(link, peer);
      const ch = await openChannel(link, FILE_LABEL);
      const inbox = new Inbox(ch, link);
      await ch.send(JSON.stringify({ t: 'offer', name, size }));
      const answer = await inbox.control();
      if (answer.t === 'reject') throw new TransferError(`${peer} refused the file: ${answer.reason}`);
      if (answer.t !== 'accept' || answer.offset > size) throw new TransferError('the peer answered out of turn');
      const hash = createHash('sha256');
      await hashPrefix(file, answer.offset, hash);
      if (answer.offset > 0) log(`resuming at ${formatBytes(answer.offset)} (the receiver kept a partial file)`);
      const progress = new Progress(`send ${name}`, size, process.stderr, answer.offset);
      try {
        if (answer.offset < size) {
          for await (const chunk of createReadStream(file, { start: answer.offset, highWaterMark: CHUNK_BYTES }) as AsyncIterable<Buffer>) {
            hash.update(chunk);
            // Backpressure: send() resolves once the buffer is under its mark, so memory stays bounded.
            await ch.send(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
            progress.add(chunk.length);
          }
        }
        const digest = hash.digest('hex');
        await ch.send(JSON.stringify({ t: 'end', sha256: digest }));
        const result = await inbox.control();
        progress.finish();
        if (result.t !== 'result') throw new TransferError('the peer answered out of turn');
        if (!result.ok) throw new TransferError(`${peer} computed a different SHA-256: the file was corrupted on the way; send it again`);
        log(`sent ${name} (${formatBytes(size)}), SHA-256 ${digest} verified by ${peer}`);
      } catch (e) {
        progress.abort();
        if (e instanceof TransferError) throw e;
        throw new TransferError(`transfer interrupted (${describeError(e)}): run the same send again; the receiver keeps what arrived and it resumes from there`);
      }
      await link.close();
      return 0;
    } finally {
      await ep.close();
    }
  },
};

export const receiveCommand: Command = {
  summary: 'Wait for one peer to send a file (`homelink send`), with a progress bar and a SHA-256 check; keeps a partial file to resume.',
  usage: `homelink receive [--as ID] [--out DIR] [--force] [options]

  --out DIR            where to write the file (default: the current directory)
  --force              overwrite a file of the same name
  --as ID              this endpoint's id (default ${DEFAULT_IDS.receive}; the demo page sends to it)
${ENDPOINT_HELP}`,
  options: { ...ENDPOINT_OPTIONS, out: { type: 'string' }, force: { type: 'boolean' } },
  async run(v) {
    const outDir = resolve((v['out'] as string | undefined) ?? '.');
    await mkdir(outDir, { recursive: true });
    const creds = await resolveCredentials(v as CredentialFlags, devDir(v['dir'] as string | undefined), DEFAULT_IDS.receive);
    const ep = await connectEndpoint(creds, { relay: v['relay'] === true });
    try {
      log(`receiving as ${creds.endpointId} into ${outDir}; waiting for a sender (Ctrl-C to stop)`);
      const { link, channel: ch } = await acceptPeer(ep, FILE_LABEL, log);
      reportPath(link, link.peer);
      const inbox = new Inbox(ch, link);
      const offer = await inbox.control();
      if (offer.t !== 'offer') throw new TransferError('the sender did not start with an offer');
      const name = safeFileName(offer.name);
      if (!name) {
        await ch.send(JSON.stringify({ t: 'reject', reason: 'unusable file name' }));
        await closeAfterPeer(link, ch);
        throw new TransferError('the sender offered an unusable file name');
      }
      const target = join(outDir, name);
      const part = `${target}.part`;
      const exists = await stat(target).then(() => true, () => false);
      if (exists && !v['force']) {
        await ch.send(JSON.stringify({ t: 'reject', reason: `${name} already exists there` }));
        await closeAfterPeer(link, ch);
        throw new TransferError(`${target} already exists: move it away or pass --force`);
      }
      const have = await stat(part).then((s) => s.size, () => 0);
      const offset = have <= offer.size ? have : 0;
      const hash = createHash('sha256');
      await hashPrefix(part, offset, hash);
      let fh: FileHandle | null = await open(part, offset > 0 ? 'r+' : 'w');
      let pos = offset;
      const progress = new Progress(`receive ${name}`, offer.size, process.stderr, offset);
      try {
        if (offset > 0) log(`resuming ${name} at ${formatBytes(offset)}`);
        await ch.send(JSON.stringify({ t: 'accept', offset }));
        for (;;) {
          const x = await inbox.next(DATA_SILENCE_TIMEOUT_MS);
          if (x instanceof Uint8Array) {
            if (pos + x.length > offer.size) throw new TransferError('the sender sent more bytes than it announced');
            await fh.write(x, 0, x.length, pos);
            hash.update(x);
            pos += x.length;
            progress.add(x.length);
            continue;
          }
          if (x.t !== 'end') throw new TransferError('the sender broke the protocol');
          await fh.truncate(pos);
          await fh.close();
          fh = null;
          const digest = hash.digest('hex');
          const ok = pos === offer.size && digest === x.sha256;
          await ch.send(JSON.stringify({ t: 'result', ok }));
          progress.finish();
          // The sender closes once it read the result; closing first could lose it.
          await closeAfterPeer(link, ch);
          if (!ok) {
            await rm(part, { force: true });
            throw new TransferError(`SHA-256 mismatch (${pos === offer.size ? 'content differs' : 'size differs'}): the partial file was removed; ask the sender to send again`);
          }
          await rename(part, target);
          log(`received ${target} (${formatBytes(pos)}), SHA-256 ${digest} verified`);
          break;
        }
      } catch (e) {
        progress.abort();
        if (e instanceof TransferError && pos < offer.size && fh) {
          throw new TransferError(`${e.message}; kept ${formatBytes(pos)} of ${formatBytes(offer.size)} in ${part}: run receive again and the same send resumes`);
        }
        throw e;
      } finally {
        await fh?.close();
      }
      await link.close();
      return 0;
    } finally {
      await ep.close();
    }
  },
};
