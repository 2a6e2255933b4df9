/**
 * bench/connect/hub-child.ts: the accepting endpoint of bench/connect/dial-loop.ts `--procs`, in a
 * process of its own as a hub is. It makes its device key, sends the public half to the parent
 * over IPC, gets back its token, identity certificate and trust, connects, accepts every request,
 * and closes each link when the peer does. Not run by hand.
 */
import type { JSONWebKeySet, JWK } from 'jose';
import { Endpoint } from '../../client/index.js';
import type { BackendName } from '../../client/index.js';
import { generateDeviceKey } from '../../client/identity.js';

interface Setup {
  signalingUrl: string;
  token: string;
  certificate: string;
  issuer: string;
  jwks: JSONWebKeySet;
  backend: BackendName;
}

async function main(): Promise<void> {
  const k = await generateDeviceKey();
  const setup = await new Promise<Setup>((resolve) => {
    process.once('message', (m) => resolve(m as Setup));
    process.send!({ publicJwk: k.publicJwk satisfies JWK });
  });
  const ep = await Endpoint.connect({
    signalingUrl: setup.signalingUrl,
    token: setup.token,
    identity: { certificate: setup.certificate, privateKey: k.privateKey },
    trust: { issuer: setup.issuer, jwks: setup.jwks },
    hostAddresses: ['127.0.0.1'],
    webrtcBackend: setup.backend,
  });
  ep.on('request', (r) => void r.accept().catch(() => undefined));
  process.send!({ ready: ep.id });
  process.once('disconnect', () => {
    ep.close();
    process.exit(0);
  });
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
