/**
 * The demo page: a browser endpoint (native RTCPeerConnection and WebSocket, `client/browser.ts`)
 * that talks to CLI endpoints with the CLI's own channel protocols, from their one definition
 * (protocol/channels.ts):
 *
 *  - chat on the `stdio` channel of `homelink listen` / `dial`: binary messages are bytes of text,
 *    `{"t":"eof"}` ends a direction;
 *  - files on the `file` channel of `homelink send` / `receive`: offer, accept(offset), binary
 *    chunks, end(sha256), result(ok);
 *  - a channel is used as soon as it is open: the peer's library holds it, and what was sent on
 *    it, until the peer's code listens (client/link.ts), so no side waits for an acknowledgement.
 *
 * Development credentials come from the local stack's `/dev/credentials` (web/server.ts); the
 * device key is generated here and never leaves the page. Browser only.
 */
import { CHUNK_BYTES, EOF_FRAME, FILE_LABEL, formatBytes, parseControl, STDIO_LABEL, type Control } from '../protocol/channels.js';
import { Endpoint, generateDeviceKey, isLinkError, type Channel, type Link, type LinkPath } from '../client/browser.js';

interface WebConfig {
  readonly signalingUrl: string;
  readonly trust: { readonly issuer: string; readonly audience: string; readonly jwks: { keys: object[] } };
  readonly defaultHome: string;
  readonly loopbackOnly: boolean;
}

/** The page hashes files in memory with WebCrypto (no streaming SHA-256 there): keep them small. */
const MAX_FILE_BYTES = 256 * 1024 * 1024;
/** How often the RTT on the path display refreshes. */
const STATS_EVERY_MS = 1_000;

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing from the page`);
  return el as T;
};

const ui = {
  me: $<HTMLInputElement>('me'),
  home: $<HTMLInputElement>('home'),
  relayOnly: $<HTMLInputElement>('relay-only'),
  online: $<HTMLButtonElement>('online'),
  status: $('status'),
  peer: $<HTMLInputElement>('peer'),
  connect: $<HTMLButtonElement>('connect'),
  disconnect: $<HTMLButtonElement>('disconnect'),
  pathKind: $('path-kind'),
  path: $('path'),
  rtt: $('rtt'),
  log: $('log'),
  msg: $<HTMLInputElement>('msg'),
  sendMsg: $<HTMLButtonElement>('send-msg'),
  filePeer: $<HTMLInputElement>('file-peer'),
  file: $<HTMLInputElement>('file'),
  sendFile: $<HTMLButtonElement>('send-file'),
  fileProgress: $<HTMLProgressElement>('file-progress'),
  fileStatus: $('file-status'),
};

let ep: Endpoint | null = null;
let chat: { link: Link; channel: Channel } | null = null;
let statsTimer: ReturnType<typeof setInterval> | null = null;

const errText = (e: unknown): string =>
  isLinkError(e) ? `${e.code}: ${e.message}${e.reason ? ` (${e.reason})` : ''}` : e instanceof Error ? e.message : String(e);

function say(cls: 'me' | 'peer' | 'sys', text: string): void {
  const line = document.createElement('div');
  line.className = cls;
  line.textContent = cls === 'me' ? `> ${text}` : cls === 'sys' ? `* ${text}` : text;
  ui.log.append(line);
  ui.log.scrollTop = ui.log.scrollHeight;
}

function showPath(p: LinkPath | null): void {
  ui.pathKind.textContent = p ? p.kind : 'none';
  ui.pathKind.className = `badge ${p ? p.kind : 'none'}`;
  ui.path.textContent = p ? `${p.local} ⇄ ${p.remote} (${p.protocol})` : '-';
  if (p?.rttMs !== undefined) ui.rtt.textContent = `rtt ${p.rttMs.toFixed(1)} ms`;
}

function watchPath(link: Link): void {
  showPath(link.path);
  link.on('path', (p) => {
    showPath(p);
    say('sys', `path: ${p.kind} via ${p.protocol}`);
  });
  link.on('interrupted', () => say('sys', 'connectivity lost, restarting ICE'));
  link.on('resumed', () => say('sys', 'connectivity back'));
  if (statsTimer) clearInterval(statsTimer);
  statsTimer = setInterval(() => {
    link.stats().then(
      (s) => {
        const rtt = s.rttMs ?? s.path?.rttMs;
        if (rtt !== undefined) ui.rtt.textContent = `rtt ${rtt.toFixed(1)} ms`;
      },
      () => undefined,
    );
  }, STATS_EVERY_MS);
}

function setConnected(on: boolean): void {
  ui.connect.disabled = on || !ep;
  ui.disconnect.disabled = !on;
  ui.msg.disabled = !on;
  ui.sendMsg.disabled = !on;
}

function attachChat(link: Link, channel: Channel): void {
  chat = { link, channel };
  const decoder = new TextDecoder();
  channel.on('message', (m) => {
    if (typeof m === 'string') {
      if (m === EOF_FRAME) say('sys', `${link.peer} finished sending`);
      return;
    }
    for (const line of decoder.decode(m, { stream: true }).split('\n')) if (line) say('peer', `${link.peer}: ${line}`);
  });
  const end = (why: string): void => {
    if (chat?.link !== link) return;
    chat = null;
    say('sys', why);
    setConnected(false);
    showPath(null);
  };
  channel.on('close', () => end('chat closed'));
  link.on('close', (reason) => end(`link closed (${reason})`));
  setConnected(true);
  ui.msg.focus();
}

/** Sends a file with the CLI's protocol; resolves with the verified SHA-256. */
async function sendFile(link: Link, file: File): Promise<string> {
  if (file.size > MAX_FILE_BYTES) throw new Error('the demo page sends files up to 256 MiB; use homelink send for larger ones');
  const ch = await link.channel(FILE_LABEL);
  const inbox: Array<string | Uint8Array> = [];
  let wake: (() => void) | null = null;
  let closed = false;
  ch.on('message', (m) => {
    inbox.push(m);
    wake?.();
  });
  ch.on('close', () => {
    closed = true;
    wake?.();
  });
  const next = async (): Promise<Control> => {
    const deadline = Date.now() + 30_000;
    while (inbox.length === 0) {
      if (closed) throw new Error('the receiver closed the channel');
      if (Date.now() > deadline) throw new Error('the receiver did not answer');
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 500);
      });
      wake = null;
    }
    const m = inbox.shift()!;
    const c = typeof m === 'string' ? parseControl(m) : null;
    if (!c) throw new Error('the receiver broke the protocol');
    return c;
  };
  const digestP = crypto.subtle.digest('SHA-256', await file.arrayBuffer());
  await ch.send(JSON.stringify({ t: 'offer', name: file.name, size: file.size }));
  const answer = await next();
  if (answer.t === 'reject') throw new Error(`refused: ${answer.reason}`);
  if (answer.t !== 'accept' || answer.offset > file.size) throw new Error('the receiver broke the protocol');
  const offset = answer.offset;
  const started = performance.now();
  for (let pos = offset; pos < file.size; pos += CHUNK_BYTES) {
    const chunk = new Uint8Array(await file.slice(pos, Math.min(file.size, pos + CHUNK_BYTES)).arrayBuffer());
    await ch.send(chunk); // resolves once the send buffer is below its mark: bounded memory
    const done = pos + chunk.length;
    const rate = ((done - offset) * 1000) / Math.max(1, performance.now() - started);
    ui.fileProgress.value = done / file.size;
    ui.fileStatus.textContent = `sending ${file.name}: ${formatBytes(done)} / ${formatBytes(file.size)}, ${formatBytes(rate)}/s, ${Math.ceil((file.size - done) / Math.max(rate, 1))} s left`;
  }
  const hex = Array.from(new Uint8Array(await digestP), (b) => b.toString(16).padStart(2, '0')).join('');
  await ch.send(JSON.stringify({ t: 'end', sha256: hex }));
  const result = await next();
  ch.close();
  if (result.t !== 'result' || !result.ok) throw new Error('the receiver computed a different SHA-256: send again');
  return hex;
}

/** Receives a file a CLI `homelink send` offers to this page; offers it as a download. */
function receiveFile(link: Link, ch: Channel): void {
  let offer: { name: string; size: number } | null = null;
  const parts: Uint8Array[] = [];
  let got = 0;
  ch.on('message', (m) => {
    void (async () => {
      if (typeof m !== 'string') {
        if (!offer || got + m.length > offer.size) return ch.close();
        parts.push(m);
        got += m.length;
        ui.fileProgress.value = offer.size ? got / offer.size : 1;
        ui.fileStatus.textContent = `receiving ${offer.name} from ${link.peer}: ${formatBytes(got)} / ${formatBytes(offer.size)}`;
        return;
      }
      const c = parseControl(m);
      if (!c) return ch.close();
      if (c.t === 'offer' && !offer) {
        if (c.size > MAX_FILE_BYTES) return void ch.send(JSON.stringify({ t: 'reject', reason: 'too large for the demo page' }));
        offer = { name: c.name.replace(/[\\/]/g, '_').slice(0, 255), size: c.size };
        await ch.send(JSON.stringify({ t: 'accept', offset: 0 }));
      } else if (c.t === 'end' && offer) {
        const blob = new Blob(parts as BlobPart[]);
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
        const hex = Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
        const ok = got === offer.size && hex === c.sha256;
        await ch.send(JSON.stringify({ t: 'result', ok }));
        if (!ok) {
          ui.fileStatus.textContent = `received ${offer.name}: SHA-256 MISMATCH, discarded`;
          return;
        }
        const a = document.createElement('a');
        a.href = URL.createObjectURL(blob);
        a.download = offer.name;
        a.textContent = `download ${offer.name}`;
        ui.fileStatus.textContent = `received ${offer.name} (${formatBytes(got)}), SHA-256 ${hex} verified `;
        ui.fileStatus.append(a);
        say('sys', `received file ${offer.name} from ${link.peer}`);
      }
    })().catch((e: unknown) => {
      ui.fileStatus.textContent = `receive failed: ${errText(e)}`;
    });
  });
}

/** Channels a peer opens on a link: chat or file. */
function serveLink(link: Link): void {
  link.on('channel', (c) => {
    if (c.label === STDIO_LABEL) {
      watchPath(link);
      attachChat(link, c);
      say('sys', `${link.peer} connected`);
    } else if (c.label === FILE_LABEL) {
      receiveFile(link, c);
    } else {
      c.close();
    }
  });
}

async function goOnline(config: WebConfig): Promise<void> {
  const sub = ui.me.value.trim();
  const home = ui.home.value.trim();
  ui.online.disabled = true;
  ui.status.textContent = 'getting development credentials ...';
  try {
    const key = await generateDeviceKey();
    const res = await fetch('/dev/credentials', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sub, homes: [home], publicJwk: key.publicJwk }),
    });
    const body = (await res.json()) as { token?: string; certificate?: string; error?: string };
    if (!res.ok || !body.token || !body.certificate) throw new Error(body.error ?? `credentials: HTTP ${res.status}`);
    ui.status.textContent = 'connecting to signaling ...';
    ep = await Endpoint.connect({
      signalingUrl: config.signalingUrl,
      token: body.token,
      identity: { certificate: body.certificate, privateKey: key.privateKey },
      trust: config.trust as never,
      iceTransportPolicy: ui.relayOnly.checked ? 'relay' : 'all',
      // The local stack lives on 127.0.0.1: announce only loopback host candidates, so no peer
      // sends to this machine's other interfaces.
      ...(config.loopbackOnly ? { hostAddresses: ['127.0.0.1'] } : {}),
    });
    ep.on('request', (req) => {
      say('sys', `${req.peer} asks to connect; accepting`);
      req.accept().then(
        (link) => serveLink(link),
        (e: unknown) => say('sys', `incoming link failed: ${errText(e)}`),
      );
    });
    ep.on('offline', () => (ui.status.textContent = `reconnecting to signaling as ${sub} ...`));
    ep.on('online', () => (ui.status.textContent = `online as ${sub} (home ${home})`));
    ep.on('replaced', () => (ui.status.textContent = `offline: another endpoint took the id ${sub}`));
    ui.status.textContent = `online as ${sub} (home ${home})${ui.relayOnly.checked ? ', relay only' : ''}`;
    ui.me.disabled = ui.home.disabled = ui.relayOnly.disabled = true;
    ui.sendFile.disabled = false;
    setConnected(false);
  } catch (e) {
    ui.status.innerHTML = '';
    const span = document.createElement('span');
    span.className = 'error';
    span.textContent = `could not go online: ${errText(e)}`;
    ui.status.append(span);
    ui.online.disabled = false;
  }
}

async function main(): Promise<void> {
  const config = (await (await fetch('/config.json')).json()) as WebConfig;
  const params = new URLSearchParams(location.search);
  ui.me.value = params.get('me') ?? `browser-${Math.random().toString(36).slice(2, 6)}`;
  ui.home.value = params.get('home') ?? config.defaultHome;
  if (params.get('relay') === '1') ui.relayOnly.checked = true;
  if (params.get('peer')) ui.peer.value = params.get('peer')!;

  ui.online.onclick = () => void goOnline(config);
  ui.connect.onclick = async () => {
    if (!ep) return;
    const peer = ui.peer.value.trim();
    ui.connect.disabled = true;
    say('sys', `dialing ${peer} ...`);
    try {
      const link = await ep.dial(peer, { timeoutMs: 20_000 });
      watchPath(link);
      serveLink(link);
      const ch = await link.channel(STDIO_LABEL);
      attachChat(link, ch);
      say('sys', `connected to ${peer}: ${link.path?.kind ?? 'path unknown'}`);
    } catch (e) {
      say('sys', `dial failed: ${errText(e)}`);
      ui.connect.disabled = false;
    }
  };
  ui.disconnect.onclick = async () => {
    const c = chat;
    if (!c) return;
    await c.channel.send(EOF_FRAME).catch(() => undefined);
    await c.channel.drained().catch(() => undefined);
    c.link.close('bye');
  };
  const sendMsg = async (): Promise<void> => {
    const text = ui.msg.value;
    if (!chat || !text) return;
    ui.msg.value = '';
    try {
      await chat.channel.send(new TextEncoder().encode(`${text}\n`));
      say('me', text);
    } catch (e) {
      say('sys', `not sent: ${errText(e)}`);
    }
  };
  ui.sendMsg.onclick = () => void sendMsg();
  ui.msg.onkeydown = (ev) => {
    if (ev.key === 'Enter') void sendMsg();
  };
  ui.sendFile.onclick = async () => {
    const file = ui.file.files?.[0];
    if (!ep || !file) return void (ui.fileStatus.textContent = 'choose a file first');
    const peer = ui.filePeer.value.trim();
    ui.sendFile.disabled = true;
    ui.fileProgress.value = 0;
    try {
      const reuse = chat?.link.peer === peer ? chat.link : null;
      const link = reuse ?? (await ep.dial(peer, { timeoutMs: 20_000 }));
      if (!reuse) ui.fileStatus.textContent = `connected to ${peer}: ${link.path?.kind ?? 'path unknown'}`;
      const hex = await sendFile(link, file);
      ui.fileProgress.value = 1;
      ui.fileStatus.textContent = `sent ${file.name} (${formatBytes(file.size)}), SHA-256 ${hex} verified by ${peer}`;
      if (!reuse) link.close('done');
    } catch (e) {
      ui.fileStatus.textContent = `send failed: ${errText(e)}`;
    } finally {
      ui.sendFile.disabled = false;
    }
  };
}

main().catch((e: unknown) => {
  ui.status.textContent = `the page failed to start: ${errText(e)}`;
});
