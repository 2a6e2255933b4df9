// Two endpoints of one home: hub-1 accepts, app-1 dials it, they say hello over an encrypted,
// identity-checked link. Plain Node (22.12 or later) with the `homelink` package installed.
//
//   npm start                                     # in a homelink checkout: the local stack; it prints the signaling URL
//   npx homelink token --sub hub-1 --json > hub-1.json
//   npx homelink token --sub app-1 --json > app-1.json
//   node hello.mjs ws://127.0.0.1:8787/v1/presence hub-1.json app-1.json
//
// Outside the checkout, point `homelink token` at the stack's folder: `--dir <checkout>/.dev`
// (or HOMELINK_DEV_DIR). Against a real deployment the token, certificate and issuer keys come
// from your own issuer instead; only `credentials()` below changes.
import { readFile } from 'node:fs/promises';
import { Endpoint, LinkError } from 'homelink/client';

/** `homelink token --json` output -> the token, identity and trust `Endpoint.connect` takes. */
async function credentials(file) {
  const t = JSON.parse(await readFile(file, 'utf8'));
  // The device key the certificate names (`cnf.jwk`) is a private JWK file; WebCrypto imports it
  // for signing only, not extractable: it proves this device holds the key, and never leaves it.
  const jwk = JSON.parse(await readFile(t.deviceKeyFile, 'utf8'));
  const privateKey = await crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  return {
    token: t.token, // access token for the signaling service
    identity: { certificate: t.certificate, privateKey }, // shown to peers, bound to the DTLS handshake
    trust: t.trust, // { issuer, audience, jwks }: whose certificates we accept from peers
  };
}

const [signalingUrl, hubFile, appFile] = process.argv.slice(2);
if (!signalingUrl || !hubFile || !appFile) {
  console.error('usage: node hello.mjs <signaling URL> <hub token.json> <app token.json>');
  process.exit(2);
}

const hub = await Endpoint.connect({ signalingUrl, ...(await credentials(hubFile)) });
hub.on('request', (req) => (req.peer.startsWith('app-') ? req.accept() : req.reject('not allowed')));
hub.on('link', (link) =>
  link.on('channel', (ch) =>
    ch.on('message', (m) => {
      console.log(`hub-1 got: ${m}`);
      void ch.send(`hello back, ${link.peer}`);
    }),
  ),
);

const app = await Endpoint.connect({ signalingUrl, ...(await credentials(appFile)) });
try {
  const link = await app.dial('hub-1', { timeoutMs: 20_000 });
  console.log(`app-1 linked to hub-1: ${link.path?.kind} path`);
  const ch = await link.channel('hello');
  const reply = new Promise((resolve) => ch.once('message', resolve));
  await ch.send('hello from app-1');
  console.log(`app-1 got: ${await reply}`);
  link.close();
} catch (e) {
  if (!(e instanceof LinkError)) throw e;
  console.error(`dial failed: ${e.code} (${e.message})`);
  process.exitCode = 1;
} finally {
  app.close();
  hub.close();
}
// The WebRTC stack may keep timers for a few seconds after the last link closed; we are done.
process.exit();
