/**
 * The CLI's parsers of peer- and file-controlled input: the file transfer's control messages,
 * file names offered by a peer, and the stack description. Hostile input gives a refusal value
 * (or a StackError), never an exception and never a path outside the receive folder.
 */
import fc from 'fast-check';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseControl } from '../../protocol/channels.js';
import { safeFileName } from '../../cli/file-commands.js';
import { formatBytes, formatDuration, renderProgress } from '../../cli/progress.js';
import { readStack, StackError } from '../../cli/stack.js';

describe('file transfer control messages', () => {
  it('accepts exactly the documented shapes', () => {
    expect(parseControl('{"t":"offer","name":"a.txt","size":3}')).toEqual({ t: 'offer', name: 'a.txt', size: 3 });
    expect(parseControl('{"t":"accept","offset":0}')).toEqual({ t: 'accept', offset: 0 });
    expect(parseControl('{"t":"reject","reason":"busy"}')).toEqual({ t: 'reject', reason: 'busy' });
    expect(parseControl(`{"t":"end","sha256":"${'a'.repeat(64)}"}`)).toEqual({ t: 'end', sha256: 'a'.repeat(64) });
    expect(parseControl('{"t":"result","ok":false}')).toEqual({ t: 'result', ok: false });
  });

  it.each([
    ['not JSON', '{'],
    ['array', '[1]'],
    ['null', 'null'],
    ['unknown type', '{"t":"rm -rf"}'],
    ['negative size', '{"t":"offer","name":"a","size":-1}'],
    ['fractional size', '{"t":"offer","name":"a","size":1.5}'],
    ['size past 2^53', '{"t":"offer","name":"a","size":9007199254740993}'],
    ['string offset', '{"t":"accept","offset":"0"}'],
    ['short hash', '{"t":"end","sha256":"abc"}'],
    ['upper-case hash', `{"t":"end","sha256":"${'A'.repeat(64)}"}`],
    ['long reason', `{"t":"reject","reason":"${'x'.repeat(201)}"}`],
    ['oversized', `{"t":"offer","name":"${'x'.repeat(2000)}","size":1}`],
    ['prototype key', '{"__proto__":{"t":"result"},"t":"result"}'],
  ])('refuses %s', (_what, m) => {
    expect(parseControl(m)).toBeNull();
  });

  it('never throws, whatever the peer sends', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.string({ unit: 'binary', maxLength: 2000 })), (m) => {
        const r = parseControl(m);
        expect(r === null || typeof r === 'object').toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('file names offered by a peer', () => {
  it.each([
    ['photo.jpg', 'photo.jpg'],
    ['dir/sub/photo.jpg', 'photo.jpg'],
    ['C:\\Users\\me\\photo.jpg', 'photo.jpg'],
    ['../../etc/passwd', 'passwd'],
    ['a\u0000b\u001f.txt', 'ab.txt'],
  ])('%j becomes %j', (offered, safe) => {
    expect(safeFileName(offered)).toBe(safe);
  });

  it.each(['', '.', '..', '../..', '.bashrc', '/', 'é'.repeat(200)])('refuses %j', (offered) => {
    expect(safeFileName(offered)).toBeNull();
  });

  it('never yields a separator, a leading dot or a control character', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (name) => {
        const s = safeFileName(name);
        if (s === null) return;
        expect(s).not.toMatch(/[/\\\u0000-\u001f\u007f]/);
        expect(s.startsWith('.')).toBe(false);
        expect(Buffer.byteLength(s)).toBeLessThanOrEqual(255);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('progress line', () => {
  it('shows bytes, percentage, rate and time left', () => {
    expect(renderProgress({ done: 512, total: 1024, bytesPerSecond: 256 })).toBe(
      '[############............]  50%  512 B / 1.0 KiB  256 B/s  0:02 left',
    );
    expect(formatBytes(3 * 1024 * 1024 + 123)).toBe('3.0 MiB');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(Infinity)).toBe('--:--');
    expect(renderProgress({ done: 0, total: 0, bytesPerSecond: 0 })).toContain('100%');
  });
});

describe('stack description', () => {
  it('says to run npm start when missing, and refuses a foreign or broken file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'homelink-stackfile-'));
    try {
      await expect(readStack(dir)).rejects.toThrow(/run `npm start` in a homelink checkout first/);
      await writeFile(join(dir, 'stack.json'), '{nope');
      await expect(readStack(dir)).rejects.toBeInstanceOf(StackError);
      await writeFile(join(dir, 'stack.json'), JSON.stringify({ version: 2 }));
      await expect(readStack(dir)).rejects.toThrow(/not a stack description of this version/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
